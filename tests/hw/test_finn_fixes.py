"""finn-plus' XNOR accumulator range: without hw/finn/fixes.py a threshold above the range FINN computes is
clipped, and the MVAU then fires for popcounts it must not (found by hw/check/verify.py on a CNV BinaryDuo build)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper


def _xnor_mvau(mw: int, thresholds: list[float]):
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    mh = len(thresholds)
    node = helper.make_node(
        "MVAU", ["x", "w", "t"], ["y"], domain="finn.custom_op.fpgadataflow", backend="fpgadataflow",
        MW=mw, MH=mh, SIMD=1, PE=1, inputDataType="BINARY", weightDataType="BINARY",
        outputDataType="BINARY", accDataType="INT32", binaryXnorMode=1, noActivation=0, ActVal=0,
        numInputVectors=[1])
    graph = helper.make_graph([node], "xnor", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, mw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, mh])])
    model = ModelWrapper(helper.make_model(graph))
    # every column has as many 1 (+1) as 0 (-1) weights: FINN's range is about [-MW/2, MW/2]
    weights = np.tile(np.array([1, 0] * (mw // 2), dtype=np.float32)[:, None], (1, mh))
    model.set_initializer("w", weights)
    model.set_initializer("t", np.array(thresholds, dtype=np.float32)[:, None])
    model.set_tensor_datatype("x", DataType["BINARY"])
    model.set_tensor_datatype("w", DataType["BINARY"])
    model.set_tensor_datatype("y", DataType["BINARY"])
    return model, weights


def _finn_bit_width_steps(model):
    # what step_minimize_bit_width (and the partition step) do to the thresholds
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.transformation.infer_datatypes import InferDataTypes

    model = model.transform(MinimizeAccumulatorWidth())
    model = model.transform(RoundAndClipThresholds())
    return model.transform(InferDataTypes())


def test_xnor_thresholds_above_half_the_fan_in_survive_finn_bit_width_minimization(tmp_path):
    from finn.core.onnx_exec import execute_onnx

    from hw.finn.env import prepare_finn

    prepare_finn(tmp_path / "finn")
    mw = 24
    model, weights = _xnor_mvau(mw, [20.0, 5.0])
    model = _finn_bit_width_steps(model)
    assert model.get_initializer("t")[0, 0] == 20.0, "the popcount threshold 20 of a 24-input XNOR layer was clipped"
    # inputs whose popcount with column 0 is 16..24: out must be 1 iff popcount >= 20
    agree = weights[:, 0].copy()
    for popcount in range(16, mw + 1):
        x = agree.copy()
        x[: mw - popcount] = 1 - x[: mw - popcount]
        assert int((x == weights[:, 0]).sum()) == popcount
        out = execute_onnx(model, {"x": x[None, :]})["y"]
        assert out[0, 0] == float(popcount >= 20), f"popcount {popcount}"
    from qonnx.custom_op.registry import getCustomOp

    acc = getCustomOp(model.graph.node[0]).get_nodeattr("accDataType")
    from qonnx.core.datatype import DataType

    assert DataType[acc].max() >= mw and DataType[acc].min() <= 0, acc


def test_the_original_finn_range_is_what_the_fix_corrects(tmp_path):
    """Guards the premise: FINN's own range for this layer does not contain the popcount's (if a future
    finn-plus fixes it, this test says the correction can go)."""
    from qonnx.util.basic import calculate_matvec_accumulator_range
    from qonnx.core.datatype import DataType

    _, weights = _xnor_mvau(24, [20.0])
    low, high = calculate_matvec_accumulator_range(2 * weights - 1, DataType["BINARY"])
    assert high < 24
