"""onebit's RTL nodes as Python objects: configure from FINN node attributes, simulate with numpy
arrays in and out (Verilator), count resources (yosys). A FINN custom op wraps these (its
execute_node in rtlsim mode calls `simulate`, its resource estimate calls `resources`)."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hw.driver.packing import datatype_info, datatype_range
from hw.rtl.layout import MVAUConfig, MVAUImage, mvau_image
from hw.rtl.stream import values_to_words, words_per_beat, words_to_values
from hw.rtl.timing import Timing, estimate_timing
from hw.rtl.verilator import StreamResult, build_simulator, run_stream
from hw.rtl.yosys import Resources, synthesize
from onebit.errors import OnebitError


@dataclass
class Simulation:
    """Output values of a simulated node and the stream statistics behind them."""

    outputs: np.ndarray
    stream: StreamResult

    @property
    def cycles_per_image(self) -> float:
        return self.stream.cycles_per_image

    @property
    def first_output_latency(self) -> int:
        return self.stream.first_output_latency


def _check_values(x: np.ndarray, dtype: str, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind == "f":
        if not np.all(x == np.round(x)):
            raise OnebitError(f"{where}: input values must be integers of {dtype}")
        x = x.astype(np.int64)
    lo, hi = datatype_range(dtype)
    if x.size and (x.min() < lo or x.max() > hi or (dtype == "BIPOLAR" and np.any(x == 0))):
        raise OnebitError(f"{where}: input values outside {dtype}: min {x.min()}, max {x.max()}")
    return x


class _Node:
    top = ""
    name = "node"

    def parameters(self) -> dict[str, int]:
        raise NotImplementedError

    def init_files(self) -> dict[str, str]:
        return {}

    def simulator(self):
        return build_simulator(self.top, self.parameters(), name=self.name)

    def resources(self, family: str = "xc7") -> Resources:
        """yosys synth_xilinx counts of this node for the board family ('xc7' or 'xcup')."""
        return synthesize(self.top, self.parameters(), self.init_files(), family, name=self.name)

    def timing(self) -> Timing:
        """Estimated Fmax of this node (hw/rtl/timing.py: yosys cell delays + routing allowance, 7-series)."""
        return estimate_timing(self.top, self.parameters(), self.init_files(), name=self.name)

    def write_init_files(self, folder: str | Path) -> list[Path]:
        from onebit.atomic import write_text_atomic

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return [write_text_atomic(folder / n, text) for n, text in self.init_files().items()]

    def _run(self, in_values: np.ndarray, in_dtype: str, out_values_per_beat: int, out_dtype: str,
             n_out: int, out_per_image: int, exp_cycles: int, init_dir: str | Path | None,
             stream_options: dict[str, Any]) -> tuple[np.ndarray, StreamResult]:
        sim = self.simulator()
        words = values_to_words(in_values, in_dtype, self.name)
        n_words = words_per_beat(out_values_per_beat, out_dtype)
        options = dict(stream_options)
        stalls = (1 - options.get("in_stall", 0.0)) * (1 - options.get("out_stall", 0.0))
        options.setdefault("max_cycles", int(10_000 + 4 * exp_cycles / max(stalls, 1e-3)))
        with tempfile.TemporaryDirectory(prefix="onebit-rtlsim-") as tmp:
            folder = Path(init_dir) if init_dir is not None else Path(tmp)
            if init_dir is None:
                self.write_init_files(folder)
            missing = [n for n in self.init_files() if not (folder / n).is_file()]
            if missing:
                raise OnebitError(f"{self.name}: init file {folder / missing[0]} is missing; write it with "
                                  "write_init_files()")
            result = run_stream(sim, words, n_out, n_words, folder if init_dir is not None else tmp,
                                name=self.name, out_per_image=out_per_image, **options)
        return words_to_values(result.words, out_dtype, out_values_per_beat), result


def _lane_zero(lines: str, bits: int) -> str:
    """PE 0's part of an init file (the low `bits` of every word), in the same hex format."""
    digits = max(1, -(-bits // 4))
    mask = (1 << bits) - 1
    return "".join(f"{int(line, 16) & mask:0{digits}x}\n" for line in lines.split())


class RTLMvau(_Node):
    """onebit_mvau configured like one FINN MVAU node (weights (MW, MH), thresholds (MH, T) or None)."""

    top = "onebit_mvau"

    def __init__(self, cfg: MVAUConfig, weights: np.ndarray, thresholds: np.ndarray | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.image: MVAUImage = mvau_image(cfg, weights, thresholds)

    @classmethod
    def from_finn_node(cls, model: Any, node: Any) -> "RTLMvau":
        """From an MVAU node of a qonnx ModelWrapper (weights and thresholds from its initializers)."""
        from qonnx.custom_op.registry import getCustomOp

        cfg = MVAUConfig.from_finn(getCustomOp(node), node.name)
        weights = model.get_initializer(node.input[1])
        thresholds = None if cfg.no_activation else model.get_initializer(node.input[2])
        if weights is None:
            raise OnebitError(f"{node.name}: weights are not an initializer; onebit's RTL MVAU embeds them")
        return cls(cfg, weights, thresholds)

    def parameters(self) -> dict[str, int]:
        return dict(self.image.parameters)

    def init_files(self) -> dict[str, str]:
        return self.image.files()

    def unpipelined(self) -> "RTLMvau":
        """The same node without the pipelining (no memory output register, combinational dot products):
        onebit's MVAU before it was pipelined, for the cost and the timing the pipelining buys."""
        node = RTLMvau.__new__(RTLMvau)
        node.cfg, node.name = replace(self.cfg, mem_reg=0, tree_stages=0), self.name
        node.image = replace(self.image, parameters={**self.image.parameters, "MEM_REG": 0, "TREE_STAGES": 0,
                                                                 "LUT_ROM_DEPTH": 0})
        return node

    def one_pe(self) -> tuple[dict[str, int | str], dict[str, str]]:
        """Parameters and init files of this node cut to one PE (MH = NF): one copy of the datapath with the
        node's memories' depth and style (block / LUT as the whole node gets them), what `timing` times."""
        cfg, params = self.cfg, dict(self.image.parameters)
        if cfg.pe == 1:
            return params, self.init_files()
        nthr, acc_bits = int(params["NTHR"]), int(params["ACC_BITS"])
        if params["RAM_STYLE"] == "auto" and cfg.pe * cfg.simd * cfg.wmem >= 16384:   # onebit_rom's rule
            params["RAM_STYLE"] = "block"
        if nthr and params["RAM_STYLE_THRESHOLDS"] == "auto" and cfg.pe * nthr * acc_bits * cfg.nf >= 16384:
            params["RAM_STYLE_THRESHOLDS"] = "block"
        params.update(MH=cfg.nf, PE=1)
        files = {"weights.dat": _lane_zero(self.image.weight_lines, cfg.simd)}
        if self.image.threshold_lines is not None:
            files["thresholds.dat"] = _lane_zero(self.image.threshold_lines, max(1, nthr) * acc_bits)
        return params, files

    def timing(self) -> Timing:
        """Estimated Fmax (hw/rtl/timing.py) of one PE of this node: the PEs are copies of one datapath
        sharing the input slice and the pipeline enable, and the model has no fanout, so one PE has the
        node's critical path, and the synthesis stays seconds where a wide layer's flat one does not
        finish. The weight memory keeps the style (block / LUT) of the whole node."""
        params, files = self.one_pe()
        return estimate_timing(self.top, params, files, name=self.name)

    def simulate(self, x: np.ndarray, *, init_dir: str | Path | None = None, **stream_options: Any) -> Simulation:
        """x: (..., MW) input values (FINN's view: BINARY 0/1 in XNOR mode, UINT8, ...) -> outputs
        (..., MH) in the output datatype's values (BIPOLAR as -1/+1, raw accumulators for noActivation).
        init_dir: run on the init files in that folder instead of freshly written ones.
        stream_options: in_stall, out_stall, seed, max_cycles, idle_limit, sink_capacity (run_stream)."""
        cfg = self.cfg
        x = _check_values(x, cfg.idt, self.name)
        if x.shape[-1:] != (cfg.mw,):
            raise OnebitError(f"{self.name}: input has shape {x.shape}, the last dimension must be MW = {cfg.mw}")
        lead = x.shape[:-1]
        n = int(np.prod(lead)) if lead else 1
        flat = x.reshape(n * cfg.sf, cfg.simd)
        in_dtype = cfg.idt
        if cfg.xnor:
            flat, in_dtype = (flat > 0).astype(np.int64), "BINARY"
        values, result = self._run(flat, in_dtype, cfg.pe, cfg.odt, n * cfg.nf, cfg.nf, cfg.exp_cycles(n),
                                   init_dir, stream_options)
        return Simulation(values.reshape(*lead, cfg.mh), result)


@dataclass(frozen=True)
class MaxPoolConfig:
    """A FINN Pool node with Function = MaxPool (fed by a depthwise ConvolutionInputGenerator)."""

    channels: int
    pe: int
    kernel: tuple[int, int]
    dtype: str
    name: str = "Pool"

    def __post_init__(self) -> None:
        if self.channels < 1 or self.pe < 1 or min(self.kernel) < 1:
            raise OnebitError(f"{self.name}: Channels, PE and KernelSize must be at least 1")
        if self.channels % self.pe:
            raise OnebitError(f"{self.name}: PE ({self.pe}) must divide Channels ({self.channels})")
        datatype_info(self.dtype)

    @property
    def k2(self) -> int:
        return int(self.kernel[0] * self.kernel[1])

    @classmethod
    def from_finn(cls, inst: Any, name: str | None = None) -> "MaxPoolConfig":
        if inst.get_nodeattr("Function") != "MaxPool":
            raise OnebitError(f"{name or inst.onnx_node.name}: only MaxPool is implemented in onebit's RTL")
        k = inst.get_nodeattr("KernelSize")
        return cls(int(inst.get_nodeattr("Channels")), int(inst.get_nodeattr("PE")), (int(k[0]), int(k[-1])),
                   inst.get_nodeattr("InputDataType"), name or inst.onnx_node.name)


class RTLMaxPool(_Node):
    """onebit_maxpool configured like one FINN Pool (MaxPool) node."""

    top = "onebit_maxpool"

    def __init__(self, cfg: MaxPoolConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name

    def parameters(self) -> dict[str, int]:
        bits, signed, _ = datatype_info(self.cfg.dtype)
        return {"CHANNELS": self.cfg.channels, "PE": self.cfg.pe, "K2": self.cfg.k2, "BITS": bits,
                "SIGNED": int(signed)}

    def stream_order(self, windows: np.ndarray) -> np.ndarray:
        """(..., K2*Channels) in FINN's im2col order (window element major, channel minor) -> the same
        values, same shape, in the order the depthwise window generator streams them and onebit_maxpool
        reads them: (channel fold, window element, PE lane) (FINN's Pool docstring: the hlslib layout)."""
        cfg = self.cfg
        x = np.asarray(windows)
        if x.shape[-1:] != (cfg.k2 * cfg.channels,):
            raise OnebitError(f"{self.name}: input last dimension must be K2*Channels = {cfg.k2 * cfg.channels}")
        lead = x.shape[:-1]
        cf = cfg.channels // cfg.pe
        return x.reshape(*lead, cfg.k2, cf, cfg.pe).swapaxes(-3, -2).reshape(x.shape)

    def simulate(self, windows: np.ndarray, **stream_options: Any) -> Simulation:
        """windows: (..., K2*Channels) in FINN's im2col order (window element major, channel minor),
        as Pool's execute_node takes them -> (..., Channels) maxima. Reordered here into the stream
        order of the depthwise window generator: (channel fold, window element, PE lane)."""
        cfg = self.cfg
        x = _check_values(windows, cfg.dtype, self.name)
        lead = x.shape[:-1]
        n = int(np.prod(lead)) if lead else 1
        cf = cfg.channels // cfg.pe
        stream = self.stream_order(x).reshape(n * cf * cfg.k2, cfg.pe)
        values, result = self._run(stream, cfg.dtype, cfg.pe, cfg.dtype, n * cf, cf, n * cf * cfg.k2, None,
                                   stream_options)
        return Simulation(values.reshape(*lead, cfg.channels), result)


class OutputMismatch(OnebitError):
    """RTL simulation output differs from the reference."""


def compare_outputs(name: str, expected: np.ndarray, got: np.ndarray) -> None:
    """Raise OutputMismatch naming the node, the number of differing values and the first one."""
    expected, got = np.asarray(expected), np.asarray(got)
    if expected.shape != got.shape:
        raise OutputMismatch(f"{name}: RTL output has shape {got.shape}, the reference {expected.shape}")
    bad = np.argwhere(expected != got)
    if len(bad):
        first = tuple(int(i) for i in bad[0])
        raise OutputMismatch(f"{name}: {len(bad)} of {expected.size} RTL outputs differ from the reference; "
                             f"first at index {first}: expected {expected[first]}, got {got[first]}")
