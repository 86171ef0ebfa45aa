"""Reference near-ties of an imported model: which mismatches with the float reference the integer design's
own tie decisions explain, image by image (docs/verification.md, "Reference ties").

The reference of an imported build is the user's float model executed by qonnx in float32. Where a
threshold of a sign activation lies within float rounding of a value the integer accumulator reaches (the
imported-model analogue of collapse drift: a BatchNorm mean that is, or rounds to, an integer), the
reference's float32 pre-activation k (z - T) + ... can land on either side of its quantizer's decision
point, while the integer design (FINN's streamlined graph, its integer thresholds, the hardware) decides
z >= T exactly. Such an image is a difference of the reference, not of the design; it is counted apart,
never hidden, and only when all of this holds:

1. the image is run through the streamlined graph (the integer design) and through the reference, one
   sign activation after the other, paired in graph order (the k-th binary MultiThreshold with the k-th
   BipolarQuant of an activation);
2. wherever the two decide an element differently, it is a tie on *both* sides: the streamlined
   MultiThreshold input within TIE_EPSILON of its threshold (in accumulator units) and the reference
   quantizer's input within TIE_EPSILON of its decision point 0 (in units of its scale); the reference is
   then continued with that element decided the integer design's way, so the tie propagates as it does
   in the design; any other difference leaves the image unexplained;
3. the reference so continued (ties broken the integer design's way, nothing else changed) gives the
   compared level's class scores exactly.

The levels after the integer design that give class scores (rtl_accelerator, `onebit validate`'s
accelerator) are compared with that tie-resolved reference exactly: they get no tie explanation of their own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

TIE_EPSILON = 1e-3  # accumulator units (streamlined side) and quantizer-scale units (reference side)
STOP_AFTER = 20  # images no tie explains before the analysis stops (the rest count as unexplained)


def _bipolar_activations(model) -> list:
    """The reference's sign activations in graph order: BipolarQuant nodes whose input is not a weight."""
    return [n for n in model.graph.node
            if n.op_type == "BipolarQuant" and model.get_initializer(n.input[0]) is None]


def _binary_thresholds(model) -> list:
    """The streamlined graph's sign activations in graph order: MultiThreshold nodes with one threshold."""
    nodes = []
    for node in model.graph.node:
        if node.op_type == "MultiThreshold":
            thresholds = model.get_initializer(node.input[1])
            if thresholds is not None and thresholds.shape[-1] == 1:
                nodes.append(node)
    return nodes


def _streamlined_decisions(model, node, context: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(decision v >= T, |v - T| <= TIE_EPSILON, v - T) per element of a one-threshold MultiThreshold node."""
    from qonnx.custom_op.registry import getCustomOp

    v = np.asarray(context[node.input[0]], dtype=np.float64)
    thresholds = np.asarray(model.get_initializer(node.input[1]), dtype=np.float64)[:, 0]
    layout = getCustomOp(node).get_nodeattr("data_layout")
    axis = v.ndim - 1 if (v.ndim == 4 and layout == "NHWC") else 1
    shape = [1] * v.ndim
    shape[axis] = len(thresholds)
    t = thresholds.reshape(shape) if len(thresholds) > 1 else thresholds.reshape([1] * v.ndim)
    return v >= t, np.abs(v - t) <= TIE_EPSILON, v - t


def _in_reference_layout(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """`values` (the streamlined graph's layout) in the reference's layout `shape`, or None if they do not pair."""
    if values.shape == shape:
        return values
    if values.ndim == 4 and len(shape) == 4 and values.transpose(0, 3, 1, 2).shape == shape:  # NHWC -> NCHW
        return values.transpose(0, 3, 1, 2)
    if values.size == int(np.prod(shape)) and (values.ndim <= 2 or len(shape) <= 2):  # a flatten
        return values.reshape(shape)
    return None


def explain_image(reference, streamlined, reference_input: np.ndarray, streamlined_input: np.ndarray,
                  score_tensor: str, alpha: float) -> dict[str, Any]:
    """The tie analysis of one image (batch 1): {"z": the reference's integer scores with every tie broken
    the integer design's way (None if it could not be continued), "ties": elements decided the design's
    way, "unexplained": the first difference that is no tie on both sides (None if there is none)}."""
    from finn.core.onnx_exec import execute_onnx as finn_execute
    from qonnx.core.onnx_exec import execute_node
    from qonnx.util.basic import get_preferred_qonnx_opset

    quantizers, thresholds = _bipolar_activations(reference), _binary_thresholds(streamlined)
    if len(quantizers) != len(thresholds):
        return {"z": None, "ties": 0, "unexplained": f"the reference has {len(quantizers)} sign activations, the "
                                                      f"streamlined graph {len(thresholds)}: they cannot be paired"}
    design = finn_execute(streamlined, {streamlined.graph.input[0].name: streamlined_input},
                          return_full_exec_context=True)
    pairs = {q.name: (k, t) for k, (q, t) in enumerate(zip(quantizers, thresholds))}
    # qonnx's execute_onnx node by node, with each sign activation's output overridden at the ties (why by
    # hand: execute_onnx has no hook between nodes, and resuming it from a node loses tensors of unknown shape)
    context = reference.make_empty_exec_context()
    context[reference.graph.input[0].name] = reference_input
    opsets = reference.get_opset_imports()
    ties, first = 0, None
    for node in reference.graph.node:
        execute_node(node, context, reference.graph, opsets.get(node.domain, get_preferred_qonnx_opset()))
        if node.name not in pairs:
            continue
        k, threshold = pairs[node.name]
        x = np.asarray(context[node.input[0]], dtype=np.float64)
        scale = np.abs(np.asarray(context[node.input[1]], dtype=np.float64))
        decided, tie, margin = (_in_reference_layout(a, x.shape)
                                for a in _streamlined_decisions(streamlined, threshold, design))
        if decided is None:
            return {"z": None, "ties": ties, "unexplained": f"activation {k} ({node.name}): shapes {x.shape} and "
                                                            f"{design[threshold.input[0]].shape} do not pair"}
        differ = decided != (context[node.output[0]] > 0)
        reference_tie = np.abs(x / np.where(scale > 0, scale, 1.0)) <= TIE_EPSILON
        genuine = differ & ~(tie & reference_tie)
        if genuine.any():
            where = tuple(int(i) for i in np.argwhere(genuine)[0])
            return {"z": None, "ties": ties,
                    "unexplained": f"activation {k} ({node.name}) element {list(where)}: the design decides "
                                   f"{'+1' if decided[where] else '-1'} (accumulator - threshold {margin[where]:.6g}), "
                                   f"the reference {'-1' if decided[where] else '+1'} "
                                   f"(pre-activation {x[where]:.6g}): no tie"}
        if differ.any():
            if first is None:  # the first, with its numbers: the design's v - T and the reference's pre-activation
                where = tuple(int(i) for i in np.argwhere(differ)[0])
                first = {"activation": k, "node": node.name, "element": list(where),
                         "design_accumulator_minus_threshold": float(margin[where]),
                         "design_decides_plus_one": bool(decided[where]),
                         "reference_pre_activation": float(x[where]),
                         "reference_scale": float(np.broadcast_to(scale, x.shape)[where])}
            ties += int(differ.sum())
            out = np.broadcast_to(scale, x.shape)
            context[node.output[0]] = np.where(decided, out, -out).astype(np.float32)
    s = np.asarray(context[score_tensor], dtype=np.float64) / float(alpha)
    return {"z": np.rint(s).astype(np.int64).reshape(-1), "ties": ties, "unexplained": None, "first_tie": first}


def explain_ties(build_dir: str | Path, record: dict[str, Any], images: np.ndarray, candidates: np.ndarray,
                 streamlined_input: Callable[[Any, np.ndarray], np.ndarray],
                 stop_after: int = STOP_AFTER) -> dict[int, dict[str, Any]]:
    """explain_image for each image index in `candidates` (the ones a level compared with the float reference
    got wrong). streamlined_input(model, images[i:i+1]) gives the streamlined graph's input of one image.
    After `stop_after` images that no tie explains the rest are left out (unexplained: the level has failed
    anyway, and a broken design need not cost one more graph execution per image)."""
    from qonnx.core.modelwrapper import ModelWrapper

    from export.qonnx_import import REFERENCE_FILE, declared_input
    from hw.check.imported import score_alpha

    build_dir = Path(build_dir)
    reference = ModelWrapper(str(build_dir / REFERENCE_FILE))
    streamlined = ModelWrapper(str(build_dir / "finn" / "step_streamline.onnx"))
    score_tensor, alpha = record["score_tail"]["input_tensor"], score_alpha(record)
    results, unexplained = {}, 0
    for i in (int(i) for i in candidates):
        one = images[i:i + 1]
        results[i] = explain_image(reference, streamlined, declared_input(one, record).astype(np.float32),
                                   streamlined_input(streamlined, one), score_tensor, alpha)
        unexplained += results[i]["z"] is None or not results[i]["ties"]
        if unexplained >= stop_after:
            break
    return results
