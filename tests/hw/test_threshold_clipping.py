"""hw/finn/thresholds.py: thresholds clipped to what their input can reach, outputs unchanged; refused where
FINN cannot build them. Small graphs made here with qonnx's own node types, executed by qonnx."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper


def _graph(first: str, weights: np.ndarray, thresholds: np.ndarray, in_dtype: str):
    """x (1, K) -> MatMul or XnorPopcountMatMul (weights K x C) -> MultiThreshold -> y (1, C)."""
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    k, c = weights.shape
    nodes = [helper.make_node(first, ["x", "w"], ["acc"], **({"domain": "qonnx.custom_op.general"}
                                                              if first == "XnorPopcountMatMul" else {})),
             helper.make_node("MultiThreshold", ["acc", "t"], ["y"], domain="qonnx.custom_op.general",
                              out_dtype="UINT4", name="MultiThreshold_0")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c])])
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_initializer("w", weights.astype(np.float32))
    model.set_initializer("t", thresholds.astype(np.float32))
    model.set_tensor_datatype("x", DataType[in_dtype])
    model.set_tensor_datatype("w", DataType["BINARY" if first == "XnorPopcountMatMul" else "INT2"])
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    return model.transform(InferShapes()).transform(InferDataTypes())


def _outputs(model, inputs: np.ndarray) -> np.ndarray:
    from qonnx.core.onnx_exec import execute_onnx

    return np.stack([execute_onnx(model, {"x": x[None]})["y"][0] for x in inputs])


def test_xnor_popcount_thresholds_clipped_to_0_mw_plus_1_outputs_unchanged() -> None:
    from hw.finn.thresholds import clip_thresholds

    rng = np.random.default_rng(0)
    weights = rng.integers(0, 2, (64, 3)).astype(np.float64)
    thresholds = np.array([[-20.0, 10.0, 30.0], [5.0, 67.0, 80.0], [70.0, 3.0, 64.5]])  # unsorted row 2
    model = _graph("XnorPopcountMatMul", weights, thresholds, "BINARY")
    inputs = rng.integers(0, 2, (40, 64)).astype(np.float32)
    before = _outputs(model, inputs)
    model, changed = clip_thresholds(model)
    after_t = model.get_initializer("t")
    assert after_t.min() >= 0 and after_t.max() <= 65 and np.all(np.diff(after_t, axis=1) >= 0)
    assert changed == [{"node": "MultiThreshold_0", "thresholds_clipped": 4, "reachable": [0.0, 64.0]}]
    assert np.array_equal(_outputs(model, inputs), before)
    # the edge values themselves: a popcount of 0 and of 64
    edges = np.stack([np.zeros(64), np.ones(64)]).astype(np.float32)
    reference = _graph("XnorPopcountMatMul", weights, thresholds, "BINARY")
    assert np.array_equal(_outputs(model, edges), _outputs(reference, edges))


def test_signed_thresholds_over_uint8_clipped_per_channel_of_a_matmul() -> None:
    from hw.finn.thresholds import clip_thresholds

    rng = np.random.default_rng(1)
    weights = rng.choice([-1.0, 1.0], (16, 2))
    thresholds = np.array([[-5000.0, -10.0, 0.0, 9000.0], [-1.0, 1.0, 2.0, 3.0]])
    model = _graph("MatMul", weights, thresholds, "UINT8")
    inputs = np.concatenate([rng.integers(0, 256, (50, 16)), np.zeros((1, 16)), np.full((1, 16), 255)]).astype(np.float32)
    before = _outputs(model, inputs)
    model, changed = clip_thresholds(model)
    low = np.minimum(weights * 0, weights * 255).sum(0)
    high = np.maximum(weights * 0, weights * 255).sum(0)
    t = model.get_initializer("t")
    assert np.all(t >= low[:, None]) and np.all(t <= high[:, None] + 1)
    assert changed[0]["thresholds_clipped"] == 2
    assert np.array_equal(_outputs(model, inputs), before)


def test_non_finite_thresholds_are_refused_naming_the_node() -> None:
    from hw.finn.thresholds import ThresholdsUnmappable, clip_thresholds

    model = _graph("XnorPopcountMatMul", np.ones((8, 1)), np.array([[np.inf]]), "BINARY")
    with pytest.raises(ThresholdsUnmappable, match="MultiThreshold MultiThreshold_0 has non-finite thresholds"):
        clip_thresholds(model)


def test_thresholds_inside_the_range_are_left_alone() -> None:
    from hw.finn.thresholds import clip_thresholds

    model = _graph("XnorPopcountMatMul", np.ones((8, 2)), np.array([[0.5, 3.0], [2.25, 8.5]]), "BINARY")
    model, changed = clip_thresholds(model)
    assert changed == [] and np.array_equal(model.get_initializer("t"), np.array([[0.5, 3.0], [2.25, 8.5]], np.float32))
