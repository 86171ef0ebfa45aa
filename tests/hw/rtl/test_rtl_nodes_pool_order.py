"""Level rtl_nodes on onebit's max pool with PE < Channels: the harness must feed the pool its input in the
order the depthwise window generator streams it ((channel fold, window element, PE), FINN's Pool docstring),
not FINN's folded im2col shape. Fed the latter, every image of an auto-folded narrow CNV's second pool
(PE 4 x 32 channels) mismatched in rtl_nodes while the whole accelerator had none."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator not installed (tools/setup_env.sh)")


@pytest.mark.parametrize("pe", [2])
def test_rtl_nodes_simulates_a_folded_max_pool_like_finn(tmp_path, pe):
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.util.basic import qonnx_make_model

    import hw.rtl.custom_op  # noqa: F401
    from hw.check.rtl_nodes import reference_outputs, simulate_node

    channels, k2, dims = 6, 4, (2, 2)
    node = helper.make_node("OnebitPool_rtl", ["inp"], ["outp"], domain="finn.custom_op.fpgadataflow.rtl",
                            backend="fpgadataflow", name="OnebitPool_rtl_0", Channels=channels, PE=pe,
                            KernelSize=[2, 2], Function="MaxPool", OutImgDims=list(dims), InputDataType="UINT4",
                            OutputDataType="UINT4", BatchSize=1)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, *dims, k2 * channels])],
        [helper.make_tensor_value_info("outp", TensorProto.FLOAT, [1, *dims, channels])])
    model = ModelWrapper(qonnx_make_model(graph))
    inst = getCustomOp(model.graph.node[0])
    inst.set_nodeattr("code_gen_dir_ipgen", str(tmp_path / "ipgen"))
    inst.code_generation_ipgen(model, "xc7z020clg400-1", 10.0)

    frames = np.random.default_rng(pe).integers(0, 16, (6, *dims, k2 * channels)).astype(np.float32)
    got, _ = simulate_node(model, model.graph.node[0], frames, tmp_path / "cache", seed=1)
    expected = reference_outputs(model, model.graph.node[0], frames)
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)
