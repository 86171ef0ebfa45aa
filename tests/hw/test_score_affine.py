"""step_onebit_split_score_affine on small FINN graphs: a positive scalar tail left in the graph (TensorNorm)
is split off with its float form recorded; a scale <= 0 is refused naming the node."""
from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

from hw.finn.build import SCORE_AFFINE_KEY, BuildError, step_onebit_split_score_affine


def _graph(scale: float, offset: float, n: int = 16, classes: int = 4) -> ModelWrapper:
    nodes = [helper.make_node("XnorPopcountMatMul", ["x", "w"], ["p"], domain="finn.custom_op.general"),
             helper.make_node("Mul", ["p", "a"], ["ap"], name="score_mul"),
             helper.make_node("Add", ["ap", "b"], ["y"], name="score_add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])])
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_initializer("w", np.ones((n, classes), np.float32))
    model.set_initializer("a", np.array(scale, np.float32))
    model.set_initializer("b", np.array(offset, np.float32))
    return model


def test_onebit_form_and_a_positive_tail() -> None:
    model = step_onebit_split_score_affine(_graph(2.0, -16.0), None)  # alpha (2p - n), alpha = 1
    affine = json.loads(model.get_metadata_prop(SCORE_AFFINE_KEY))
    assert affine["alpha"] == 1.0 and affine["beta"] == 0.0 and affine["n"] == 16
    assert [n.op_type for n in model.graph.node] == ["XnorPopcountMatMul"]
    # a TensorNorm-like tail folded in by streamlining: y = 0.25 (2p - n) + 3
    model = step_onebit_split_score_affine(_graph(0.5, -0.25 * 16 + 3.0), None)
    affine = json.loads(model.get_metadata_prop(SCORE_AFFINE_KEY))
    assert affine["alpha"] == 0.25 and affine["beta"] == pytest.approx(3.0) and "y = 0.25 * z +3" in affine["float_scores"]


def test_scale_that_reverses_the_classes_is_refused_naming_the_node() -> None:
    with pytest.raises(BuildError, match="node score_mul.*scale <= 0"):
        step_onebit_split_score_affine(_graph(-2.0, 16.0), None)
