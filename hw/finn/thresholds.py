"""Thresholds inside the range their input can reach: FINN's RoundAndClipThresholds, before FINN needs it.

A MultiThreshold on an integer input x counts the thresholds t with x >= t: a threshold at or below the
lowest reachable x always fires, one above the highest never does. So thresholds can be clipped to
[lowest, highest + 1] of what the input can reach without changing a single output (FINN's
RoundAndClipThresholds clips the same way to the input datatype's range, after rounding up).

Why it runs right after streamlining: finn-plus' step_minimize_bit_width_initial sizes the thresholds of a
Thresholding/MVAU layer *before* its RoundAndClipThresholds runs, and asserts that the thresholds of an
unsigned input are non-negative (thresholding.py get_hw_compatible_threshold_tensor). A model from
elsewhere breaks it two ways that onebit's own collapse never produces (export/collapse.py clamps):
a signed input quantizer (Brevitas' `QuantIdentity(bit_width=8)`, Int8ActPerTensorFloat) over UINT8 pixels
has negative thresholds, and a BatchNorm that makes a neuron constant puts its threshold outside the
popcount range [0, MW] of an XNOR layer (e.g. -20 or 67 for MW 64).

The reachable range of the input x of a MultiThreshold:
  XnorPopcountMatMul    [0, K] (K = the number of agreeing bits it can count, the weight rows)
  MatMul                per output channel, the sum over its constant integer weights w of
                        min/max(w * lo, w * hi) with [lo, hi] its integer input's datatype range
  anything else         the input's integer datatype range (e.g. UINT8 for the graph input)
A MultiThreshold on a float input is left as it is (FINN keeps float thresholds there); one whose
thresholds are not finite cannot be built and is refused naming the node.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from onebit.errors import OnebitError


class ThresholdsUnmappable(OnebitError):
    """A MultiThreshold whose thresholds FINN cannot turn into hardware."""


def reachable_range(model, node) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) per channel (or scalars) of the integer input of MultiThreshold `node`, or None (float input)."""
    tensor = node.input[0]
    dtype = model.get_tensor_datatype(tensor)
    producer = model.find_producer(tensor)
    if producer is not None and producer.op_type == "XnorPopcountMatMul":
        weights = model.get_initializer(producer.input[1])
        if weights is not None:
            return np.zeros(1), np.full(1, float(weights.shape[0]))
    if producer is not None and producer.op_type == "MatMul":
        weights = model.get_initializer(producer.input[1])
        in_dtype = model.get_tensor_datatype(producer.input[0])
        if weights is not None and in_dtype.is_integer() and np.array_equal(weights, np.round(weights)):
            w = np.asarray(weights, dtype=np.float64).reshape(weights.shape[0], -1)
            products = np.stack([w * in_dtype.min(), w * in_dtype.max()])
            return products.min(0).sum(0), products.max(0).sum(0)
    if dtype.is_integer():
        return np.full(1, float(dtype.min())), np.full(1, float(dtype.max()))
    return None


def clip_thresholds(model) -> tuple[Any, list[dict[str, Any]]]:
    """Every MultiThreshold's thresholds sorted and clipped to [low, high + 1] of its input's reachable range
    (exact: see the module docstring; the rounding up is left to FINN's RoundAndClipThresholds, so thresholds
    inside the range keep their values). Returns (model, one record per node changed)."""
    changed = []
    for node in model.graph.node:
        if node.op_type != "MultiThreshold":
            continue
        thresholds = model.get_initializer(node.input[1])
        if thresholds is None:
            continue
        if not np.all(np.isfinite(thresholds)):
            raise ThresholdsUnmappable(
                f"MultiThreshold {node.name} has non-finite thresholds (a BatchNorm with zero variance or scale?); "
                "FINN cannot build it: fix the layer's statistics before export")
        span = reachable_range(model, node)
        if span is None:
            continue
        low, high = span
        t = np.sort(np.asarray(thresholds, dtype=np.float64), axis=-1)  # MultiThreshold counts: order is free
        if low.size > 1 and t.shape[0] == 1:  # one row for every channel: the widest channel range bounds it
            low, high = np.full(1, low.min()), np.full(1, high.max())
        if low.size > 1 and low.size != t.shape[0]:
            continue  # not per-channel thresholds of this MatMul's outputs: leave them to FINN
        new = np.clip(t, low[:, None], high[:, None] + 1)
        if np.array_equal(new, thresholds):
            continue
        model.set_initializer(node.input[1], new.astype(np.float32))
        outside = int(np.sum((t < low[:, None]) | (t > high[:, None] + 1)))
        changed.append({"node": node.name, "thresholds_clipped": outside,
                        "reachable": [float(low.min()), float(high.max())]})
    return model, changed


def step_onebit_clip_thresholds(model, cfg):
    """Builder step (after streamlining): thresholds rounded and clipped to what their input can reach, so
    FINN's bit-width minimisation never meets a threshold of an unsigned input below 0 (clip_thresholds).
    A no-op for onebit's own exports, whose collapse already clamps."""
    import json

    model, changed = clip_thresholds(model)
    if changed:
        model.set_metadata_prop("onebit_clipped_thresholds", json.dumps(changed))
    return model
