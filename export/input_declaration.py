"""The declared input preprocessing of a QONNX model from elsewhere, and the command-line options for it.

A model.onnx does not say how its training data were scaled, so onebit asks (never guesses): the model's
input is `scale * pixel + offset` for the dataset's uint8 pixels, in the model's own layout. The declaration
comes from the command line (`--input-scale 1/255 --input-offset 0 --input-shape 1,28,28 --input-layout
NCHW`) over the sidecar file `model.onnx.onebit.json` next to the model (or `--sidecar FILE`):

    {"input": {"scale": "1/255", "offset": 0, "shape": [1, 28, 28], "layout": "NCHW"}, "dataset": "mnist"}

export/qonnx_import.py checks it against the graph's input quantizer and merges it in front of the graph.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from onebit.errors import OnebitError

SIDECAR_SUFFIX = ".onebit.json"
LAYOUTS = ("NCHW", "NHWC")


class ImportRefused(OnebitError):
    """The imported model or its declaration cannot be built exactly."""


@dataclass
class InputDeclaration:
    """How dataset pixels p (uint8) become the model's input: x = scale * p + offset, in `layout`."""

    scale: float = 1.0
    offset: float = 0.0
    shape: tuple[int, ...] | None = None  # the image as the dataset gives it: (C, H, W)
    layout: str = "NCHW"                  # layout of the model's own input tensor (when it is 4-D)
    scale_text: str = "1"
    source: str = "default: raw pixels 0..255 (scale 1)"

    def float_range(self) -> tuple[float, float]:
        ends = (self.offset, 255.0 * self.scale + self.offset)
        return min(ends), max(ends)


def parse_number(text: str | float | int, what: str) -> float:
    """'1/255', '0.00392', '2/255', 1 -> float; a one-line error otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        try:
            value = float(Fraction(str(text).strip()))
        except (ValueError, ZeroDivisionError):
            raise ImportRefused(f"{what} {text!r} is not a number or fraction; write e.g. 1/255 or 0.5") from None
    if not math.isfinite(value):
        raise ImportRefused(f"{what} {text!r} is not finite")
    return value


def parse_shape(text: str | list | tuple, what: str = "--input-shape") -> tuple[int, ...]:
    try:
        items = text.replace("x", ",").split(",") if isinstance(text, str) else list(text)
        # int("28") but never int(28.9) == 28 or int(True): a size is an integer as written (issue 23)
        if any(isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()) for v in items):
            raise ValueError
        shape = tuple(int(v) for v in items if str(v).strip())
    except (TypeError, ValueError):
        raise ImportRefused(f"{what} {text!r} is not a shape; write C,H,W, e.g. 1,28,28") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ImportRefused(f"{what} {text!r} must be C,H,W (three positive sizes), e.g. 1,28,28")
    return shape


def sidecar_path(model_path: str | Path) -> Path:
    path = Path(model_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_sidecar(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ImportRefused(f"{path}: unreadable sidecar ({error}); fix the JSON or remove the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("input", {}), dict):
        raise ImportRefused(f"{path}: the sidecar must be a JSON object with an 'input' object; see README "
                            "'Bring your own model'")
    unknown = sorted(set(data) - {"input", "dataset"}) + \
        sorted(set(data.get("input", {})) - {"scale", "offset", "shape", "layout"})
    if unknown:
        raise ImportRefused(f"{path}: unknown sidecar keys {unknown}; allowed: input.scale, input.offset, "
                            "input.shape, input.layout, dataset")
    if "dataset" in data and not (isinstance(data["dataset"], str) and data["dataset"].strip()):
        raise ImportRefused(f"{path}: \"dataset\" must be a dataset name such as \"fashion-mnist\" or "
                            f"\"npz:data.npz\", got {data['dataset']!r}")
    return data


def declare_input(model_path: str | Path, scale: str | None = None, offset: str | None = None,
                  shape: str | None = None, layout: str | None = None,
                  sidecar: str | Path | None = None) -> tuple[InputDeclaration, dict[str, Any]]:
    """The declaration from the command line over the sidecar (given, or next to the model); (decl, sidecar)."""
    side_path = Path(sidecar) if sidecar else sidecar_path(model_path)
    if sidecar and not side_path.is_file():
        raise ImportRefused(f"sidecar {side_path} does not exist")
    side = read_sidecar(side_path) if side_path.is_file() else {}
    dataset = side.get("dataset")
    if isinstance(dataset, str) and dataset.startswith(("folder:", "npz:")):
        kind, _, where = dataset.partition(":")
        if not Path(where).expanduser().is_absolute():  # relative to the sidecar, so model + data travel together
            side = {**side, "dataset": f"{kind}:{(side_path.parent / where).resolve()}"}
    fields = dict(side.get("input", {}))
    from_cli = {k: v for k, v in (("scale", scale), ("offset", offset), ("shape", shape), ("layout", layout))
                if v is not None}
    fields.update(from_cli)
    sources = []
    if from_cli:
        sources.append("command line (" + ", ".join(from_cli) + ")")
    if side_path.is_file() and side.get("input"):
        sources.append(f"sidecar {side_path.name}")
    decl = InputDeclaration()
    if "scale" in fields:
        decl.scale, decl.scale_text = parse_number(fields["scale"], "input scale"), str(fields["scale"])
        if decl.scale <= 0:
            raise ImportRefused(f"input scale {fields['scale']} must be positive (pixels p -> scale*p + offset)")
    if "offset" in fields:
        decl.offset = parse_number(fields["offset"], "input offset")
    if "shape" in fields:
        decl.shape = parse_shape(fields["shape"])
    if "layout" in fields:
        decl.layout = str(fields["layout"]).upper()
        if decl.layout not in LAYOUTS:
            raise ImportRefused(f"input layout {fields['layout']!r} must be NCHW or NHWC")
    if sources:
        decl.source = " over ".join(sources)
    return decl, side


# ---------------------------------------------------------------------------------------------------
# reading the graph


def add_import_arguments(parser) -> None:
    """Options of `onebit build` / `python export/to_finn.py` for a QONNX model (and --dataset for both)."""
    group = parser.add_argument_group("QONNX model from elsewhere (model.onnx; see README 'Bring your own model')")
    group.add_argument("--dataset", default=None,
                       help="test set for verification: mnist, fashion-mnist, cifar10, folder:PATH or npz:PATH "
                            "(default: the checkpoint's, or the sidecar's for a .onnx model)")
    group.add_argument("--input-scale", default=None, metavar="S",
                       help="the model's input is S * pixel + OFFSET, e.g. 1/255 for torchvision's ToTensor")
    group.add_argument("--input-offset", default=None, metavar="OFFSET", help="added after the scale (default 0)")
    group.add_argument("--input-shape", default=None, metavar="C,H,W", help="image shape, e.g. 1,28,28")
    group.add_argument("--input-layout", default=None, choices=LAYOUTS,
                       help="layout of the model's 4-D input (default NCHW, as Brevitas/PyTorch export)")
    group.add_argument("--sidecar", default=None, metavar="JSON",
                       help=f"declaration file (default: <model>{SIDECAR_SUFFIX} next to the model, if present)")


def is_qonnx_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".onnx"


def refuse_import_options(args) -> None:
    """A onebit checkpoint records its own preprocessing: import options given with one are an error."""
    given = [f"--{name.replace('_', '-')}" for name in ("input_scale", "input_offset", "input_shape",
                                                           "input_layout", "sidecar")
             if getattr(args, name, None) is not None]
    if given:
        raise OnebitError(f"{', '.join(given)} apply to a QONNX model (.onnx); the checkpoint {args.checkpoint} "
                          "records its own preprocessing: drop them")
