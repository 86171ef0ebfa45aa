"""Verification's qonnx/FINN Python execution (hw.check.verify.fast_python_execution): same results, less time.

qonnx's sanitize_quant_values measures the rounding error of every integer-annotated tensor with Python's
builtin max over all elements; inside fast_python_execution tensors that are already exact integers skip it,
and anything else still goes through qonnx's own function (rounded, with its warning).
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import pytest


def _model(n: int):
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])
    model = ModelWrapper(qonnx_make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [inp], [out])))
    model.set_tensor_datatype("x", DataType["INT8"])
    model.set_tensor_datatype("y", DataType["INT8"])
    return model


def _sanitize(model, context):
    import qonnx.core.onnx_exec as qonnx_exec  # the name execute_onnx calls, patched by the context

    return qonnx_exec.sanitize_quant_values(model, ["x", "y"], context)


def test_exact_tensors_skip_the_slow_check_and_others_are_still_rounded():
    from hw.check.verify import fast_python_execution

    n = 3_000_000
    model = _model(n)
    exact = {"x": np.random.default_rng(0).integers(-128, 128, (1, n)).astype(np.float32)}
    exact["y"] = exact["x"].copy()
    started = time.perf_counter()
    _sanitize(model, dict(exact))
    qonnx_seconds = time.perf_counter() - started
    with fast_python_execution():
        started = time.perf_counter()
        result = _sanitize(model, dict(exact))
        fast_seconds = time.perf_counter() - started
        np.testing.assert_array_equal(result["x"], exact["x"])
        # a tensor off its datatype still gets qonnx's treatment: rounded, with its warning
        off = {"x": exact["x"].copy(), "y": exact["y"] + np.float32(1e-4)}
        with pytest.warns(UserWarning, match="rounded"):
            rounded = _sanitize(model, off)
        np.testing.assert_array_equal(rounded["y"], exact["y"])
    assert fast_seconds < qonnx_seconds / 3, (fast_seconds, qonnx_seconds)
    import qonnx.core.onnx_exec as qonnx_exec

    assert qonnx_exec.sanitize_quant_values.__name__ == "sanitize_quant_values"  # restored afterwards
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _sanitize(model, dict(exact))  # and behaves as before outside
