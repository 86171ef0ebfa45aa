"""The I/O description `io.json` that a build writes next to this driver: reading and checking it.

Schema (format "onebit-io", version 1); hw/io_description.py writes it from the final FINN model:

    platform          "zynq-iodma" (the FINN shell the bitfile was built for)
    batch_size        default number of images per DMA transfer
    fclk_mhz          the PS clock into the fabric (FCLK0 / pl_clk0) the shell expects: 100 in finn-plus'
                      Zynq shell, whose clocking wizard makes the accelerator clock from it; the driver sets
                      fclk0 to this
    accel_clk_mhz     the accelerator's own clock (the build's synthesis clock); absent/null in io.json
                      written before onebit recorded it
    bitfile           bitstream file name next to io.json (null where Vivado did not run)
    dma               {"input": "idma0", "output": "odma0"}: the IODMA instance names in the overlay
    hw_model          path of the final FINN model, relative to the build folder (the model backend)
    input             pixels         "uint8": raw dataset pixels 0..255, no normalisation (design.md 1)
                      image_shape    [C, H, W]: what `execute` takes per image (the dataset's layout)
                      transpose      axes applied to (N, C, H, W) before the stream (e.g. to NHWC) or null
                      finn_datatype  "UINT8"
                      shape_normal / shape_folded / shape_packed   FINN's ishape_* with batch 1
                      onebit_input_packing   only for bit-packed binary input (finn_datatype "BINARY"):
                                     {"thresholds", "pixels", "bits", ...}, see input_packing.py
    output            finn_datatype  e.g. "INT9"
                      shape_normal / shape_folded / shape_packed   FINN's oshape_* with batch 1
                      num_classes    K
                      values         "class_scores" (z = sum w*a of the score layer) or "popcount"
                      score_scale, score_offset   z = score_scale * raw + score_offset (identity when
                                     the stream already carries z)
    io_shape_dict     the same shapes in FINN's own driver keys (idt, odt, ishape_normal, ...), so a
                      finn-plus-driver overlay can be configured from this file too

Imports numpy only (it is copied onto the board with the driver).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .input_packing import PACKING_KEY
from .packing import PackingError, datatype_info

FORMAT = "onebit-io"
VERSION = 1


class DriverError(Exception):
    """Bad input to the driver or an unusable I/O description: a one-line message saying what to do."""


class BoardRequiredError(RuntimeError):
    """An operation that only the FPGA / processing system of a PYNQ board can do (raised by simdevice.py's
    simulated pynq device; defined here so the driver can catch it without importing pynq)."""


def _require(mapping: dict, key: str, where: str) -> Any:
    if key not in mapping:
        raise DriverError(f"{where}: missing key '{key}'; rebuild to regenerate io.json")
    return mapping[key]


class IOSpec:
    """Checked view of io.json: shapes as tuples, datatypes validated, batch dimension stripped."""

    def __init__(self, data: dict, source: str = "io.json") -> None:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DriverError(f"{source} is not an onebit I/O description (format != '{FORMAT}')")
        if data.get("version") != VERSION:
            raise DriverError(f"{source} has schema version {data.get('version')}, this driver reads "
                              f"version {VERSION}; copy the driver from the same onebit version as the build")
        self.data = data
        self.source = source
        inp = _require(data, "input", source)
        out = _require(data, "output", source)
        self.platform: str = data.get("platform", "zynq-iodma")
        self.batch_size: int = int(data.get("batch_size", 1))
        self.fclk_mhz: float = float(data.get("fclk_mhz", 100.0))  # PS clock (fclk0)
        accel = data.get("accel_clk_mhz")
        self.accel_clk_mhz: float | None = None if accel is None else float(accel)
        self.bitfile: str | None = data.get("bitfile")
        dma = data.get("dma", {})
        self.idma_name: str = dma.get("input", "idma0")
        self.odma_name: str = dma.get("output", "odma0")
        self.hw_model: str | None = data.get("hw_model")
        for key, value in (("hw_model", self.hw_model), ("bitfile", self.bitfile)):
            if value is not None and (not isinstance(value, str) or value.startswith(("/", "\\"))
                                      or (key == "hw_model" and ".." in value.replace("\\", "/").split("/"))):
                raise DriverError(f"{source}: {key} {value!r} must be a path relative to the build folder that "
                                  "stays inside it; rebuild to regenerate io.json")

        self.image_shape = tuple(int(v) for v in _require(inp, "image_shape", f"{source}: input"))
        transpose = inp.get("transpose")
        self.transpose = tuple(int(v) for v in transpose) if transpose else None
        self.idt: str = _require(inp, "finn_datatype", f"{source}: input")
        self.ishape_normal = tuple(int(v) for v in _require(inp, "shape_normal", f"{source}: input"))
        self.ishape_folded = tuple(int(v) for v in _require(inp, "shape_folded", f"{source}: input"))
        self.ishape_packed = tuple(int(v) for v in _require(inp, "shape_packed", f"{source}: input"))
        self.input_packing: dict | None = inp.get(PACKING_KEY)

        self.odt: str = _require(out, "finn_datatype", f"{source}: output")
        self.oshape_normal = tuple(int(v) for v in _require(out, "shape_normal", f"{source}: output"))
        self.oshape_folded = tuple(int(v) for v in _require(out, "shape_folded", f"{source}: output"))
        self.oshape_packed = tuple(int(v) for v in _require(out, "shape_packed", f"{source}: output"))
        self.num_classes = int(out.get("num_classes", int(np.prod(self.oshape_normal[1:]))))
        self.output_values: str = out.get("values", "class_scores")
        self.score_scale = int(out.get("score_scale", 1))
        self.score_offset = int(out.get("score_offset", 0))
        self._check()

    def _check(self) -> None:
        for name in (self.idt, self.odt):
            try:
                datatype_info(name)
            except PackingError as error:
                raise DriverError(f"{self.source}: {error}") from None
        for label, normal, folded in (("input", self.ishape_normal, self.ishape_folded),
                                      ("output", self.oshape_normal, self.oshape_folded)):
            if int(np.prod(normal)) != int(np.prod(folded)):
                raise DriverError(f"{self.source}: {label} shape_normal {list(normal)} and shape_folded "
                                  f"{list(folded)} hold different numbers of values")
        if self.input_packing is not None:
            packing = self.input_packing
            if (self.idt != "BINARY" or int(packing.get("pixels", -1)) != int(np.prod(self.image_shape))
                    or int(packing.get("bits", -1)) != int(np.prod(self.ishape_normal[1:]))
                    or not isinstance(packing.get("thresholds"), list)
                    or len(packing["thresholds"]) not in (1, self.image_shape[0])):
                raise DriverError(f"{self.source}: input packing {packing} does not match the BINARY input "
                                  f"{list(self.ishape_normal)} of image shape {list(self.image_shape)}; rebuild")
        elif int(np.prod(self.image_shape)) != int(np.prod(self.ishape_normal[1:])):
            raise DriverError(f"{self.source}: input image_shape {list(self.image_shape)} does not fill the "
                              f"accelerator input {list(self.ishape_normal)}")

    @classmethod
    def load(cls, path: str | Path) -> "IOSpec":
        path = Path(path)
        if path.is_dir():
            path = path / "io.json"
        if not path.is_file():
            raise DriverError(f"no I/O description at {path}; a build writes driver/io.json "
                              "(run `onebit build` or pass the build's driver folder)")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise DriverError(f"cannot read {path}: {error}; rebuild to regenerate it") from None
        return cls(data, str(path))
