"""A folding file checked against the graph it folds, before FINN applies it.

FINN's step_apply_folding_config (qonnx ApplyConfig) ignores node names it does not find and sets any
PE/SIMD it is given; a PE that does not divide the layer then fails much later as a bare assertion or a
ZeroDivisionError naming no layer, and a misspelt name silently folds the build otherwise than asked.
Here every entry is checked first: the node exists, the attribute is one the node has, a value is one
of the attribute's allowed values, and PE/SIMD are positive integers dividing the dimension they fold.
Each error names the layer, the attribute and the legal values.

`check_values` (no graph needed) runs when the file is read; `check_folding_config` runs on the HW graph
right before FINN's step_apply_folding_config (hw/finn/build.py wraps that step).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from onebit.errors import OnebitError

# Which node attribute each parallelism attribute must divide, per FINN op (without _hls/_rtl).
DIVIDES: dict[str, dict[str, str]] = {
    "MVAU": {"PE": "MH", "SIMD": "MW"},
    "VVAU": {"PE": "Channels"},
    "Thresholding": {"PE": "NumChannels"},
    "ChannelwiseOp": {"PE": "NumChannels"},
    "ConvolutionInputGenerator": {"SIMD": "IFMChannels"},
    "FMPadding": {"SIMD": "NumChannels"},
    "FMPadding_Pixel": {"SIMD": "NumChannels"},
    "StreamingMaxPool": {"PE": "NumChannels"},
    "Pool": {"PE": "Channels"},
    "LabelSelect": {"PE": "Labels"},
    "GlobalAccPool": {"PE": "NumChannels"},
    "AddStreams": {"PE": "NumChannels"},
    "DuplicateStreams": {"PE": "NumChannels"},
}
PARALLELISM = ("PE", "SIMD")


class FoldingFileError(OnebitError):
    """A folding file entry that does not fit the graph (the message names layer, attribute, legal values)."""


def base_op(op_type: str) -> str:
    """`MVAU_hls` -> `MVAU`: the attribute semantics are the same for the HLS and RTL flavours."""
    for suffix in ("_hls", "_rtl"):
        if op_type.endswith(suffix):
            return op_type[: -len(suffix)]
    return op_type


def divisors(n: int) -> list[int]:
    return [d for d in range(1, int(n) + 1) if n % d == 0]


def _legal(values: list[int]) -> str:
    return ", ".join(map(str, values)) if len(values) <= 16 else ", ".join(map(str, values[:15])) + f", .. {values[-1]}"


def check_values(config: dict[str, Any], source: str) -> None:
    """Without the graph: every PE/SIMD a positive integer (zero, negative, 2.5, "4" are refused)."""
    for layer, attrs in config.items():
        if layer == "Defaults":
            continue
        for attr in PARALLELISM:
            if attr in attrs:
                value = attrs[attr]
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise FoldingFileError(f"folding file {source}: layer {layer} {attr} = {value!r}; {attr} must be a "
                                           "positive integer dividing the layer (see the build's folding.json)")


def check_folding_config(model, config: dict[str, Any], source: str) -> None:
    """FoldingFileError for the first entry of `config` that does not fit the HW graph `model`."""
    from qonnx.custom_op.registry import getCustomOp

    check_values(config, source)
    nodes = {node.name: node for node in model.graph.node}
    for layer, attrs in config.items():
        if layer == "Defaults":
            continue
        if layer not in nodes:
            known = ", ".join(sorted(nodes)[:12]) + (" .." if len(nodes) > 12 else "")
            raise FoldingFileError(f"folding file {source}: no layer named {layer!r} in this build's graph; its layers "
                                   f"are {known} (a build's folding.json lists them)")
        node = nodes[layer]
        try:
            inst = getCustomOp(node)
            types = inst.get_nodeattr_types()
        except Exception:  # a plain ONNX node: nothing to fold
            raise FoldingFileError(f"folding file {source}: layer {layer} ({node.op_type}) is not a FINN HW layer and "
                                   "has no folding attributes; remove its entry") from None
        for attr, value in attrs.items():
            if attr not in types:
                folding_attrs = [a for a in ("PE", "SIMD", "parallel_window", "ram_style", "resType", "mem_mode")
                                 if a in types]
                raise FoldingFileError(f"folding file {source}: layer {layer} ({node.op_type}) has no attribute {attr!r}; "
                                       f"its folding attributes are {', '.join(folding_attrs) or 'none'}")
            spec = types[attr]
            allowed = spec[3] if len(spec) > 3 else None
            if allowed and value not in allowed:
                raise FoldingFileError(f"folding file {source}: layer {layer} {attr} = {value!r}; legal values: "
                                       f"{', '.join(map(str, sorted(allowed, key=str)))}")
            dimension = DIVIDES.get(base_op(node.op_type), {}).get(attr)
            if dimension is not None and dimension in types:
                size = int(inst.get_nodeattr(dimension))
                if size % value:
                    raise FoldingFileError(f"folding file {source}: layer {layer} ({node.op_type}) {attr} = {value} does "
                                           f"not divide {dimension} = {size}; legal values: {_legal(divisors(size))}")


def checked_apply_folding(apply_step: Callable, path: str | Path) -> Callable:
    """FINN's step_apply_folding_config, preceded by `check_folding_config` on the model it gets."""
    def step(model, cfg):
        config = json.loads(Path(path).read_text())
        check_folding_config(model, config, str(path))
        return apply_step(model, cfg)

    return step
