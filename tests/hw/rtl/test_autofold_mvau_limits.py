"""auto-fold's MVAU limits follow what the node is built as: FINN's MVAU_hls keeps HLS ap_int's 8191-bit
weight stream; an MVAU that `--mvau rtl` turns into onebit's RTL reads its weights from its own memory
(onebit_rom), so the search may fold it past 8191 weight bits per cycle, and that folding is bit-exact in
onebit's RTL.

One XNOR MVAU_hls (128 x 128) on Pynq-Z1: its 128-bit input and output vectors take 2 beats of the 64-bit
AXI port, so the I/O bound is 2 cycles per vector, which needs 128 * 128 / 2 = 8192 weight bits per cycle.
No synthesis here (the cost model is the stored fit; the Fmax check is stubbed); the Verilator build of the
chosen node (8192 XNOR lanes, minutes) runs with -m rtl_sweep.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

MW = MH = 128


def xnor_mvau_model(mw: int = MW, mh: int = MH, seed: int = 0):
    """A HW graph (as after step_specialize_layers) of one XNOR MVAU_hls with thresholds."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    rng = np.random.default_rng(seed)
    node = helper.make_node("MVAU_hls", ["inp", "weights", "thresh"], ["outp"],
                            domain="finn.custom_op.fpgadataflow.hls", backend="fpgadataflow", name="MVAU_hls_0",
                            MW=mw, MH=mh, PE=1, SIMD=1, inputDataType="BINARY", weightDataType="BINARY",
                            outputDataType="BINARY", binaryXnorMode=1, noActivation=0, ActVal=0,
                            mem_mode="internal_decoupled", ram_style="auto", numInputVectors=[1])
    graph = helper.make_graph([node], "one_mvau",
                              [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, mw])],
                              [helper.make_tensor_value_info("outp", TensorProto.FLOAT, [1, mh])])
    model = ModelWrapper(qonnx_make_model(graph, producer_name="onebit-test"))
    model.set_tensor_datatype("inp", DataType["BINARY"])
    model.set_tensor_datatype("outp", DataType["BINARY"])
    model.set_initializer("weights", rng.integers(0, 2, (mw, mh)).astype(np.float32))
    model.set_tensor_datatype("weights", DataType["BINARY"])
    model.set_initializer("thresh", np.sort(rng.integers(mw // 4, 3 * mw // 4, (mh, 1)), axis=1).astype(np.float32))
    model.set_tensor_datatype("thresh", DataType["INT32"])
    return model


def _node(model):
    from qonnx.custom_op.registry import getCustomOp

    node = model.graph.node[0]
    return node, getCustomOp(node)


def _widest(groups) -> int:
    return max(s["MVAU_hls_0"]["PE"] * s["MVAU_hls_0"]["SIMD"] for s in groups[0].settings)


def test_the_limit_is_the_backends():
    """FINN's HLS limit refuses 8192 weight bits per cycle; onebit's RTL takes them, and refuses only what
    really does not build (a folding that does not divide, a stream FINN's nodes cannot hold)."""
    from hw.finn.autofold.costs import build_groups, hls_mvau_refusal, mvau_refusal, onebit_rtl_mvau_refusal
    from hw.finn.autofold.synth_costs import RTLCosts

    model = xnor_mvau_model()
    node, inst = _node(model)
    assert "weight stream 8192 bits > HLS ap_int's 8191" in hls_mvau_refusal(inst, 64, 128)
    assert hls_mvau_refusal(inst, 32, 128) is None
    assert onebit_rtl_mvau_refusal(inst, 128, 128) is None           # 16384 bits in one memory word
    assert "must divide" in onebit_rtl_mvau_refusal(inst, 3, 128)
    rtl = RTLCosts(model, "xc7z020clg400-1", 10.0)
    assert rtl.covers(node.name)
    assert mvau_refusal(node, inst, 64, 128, rtl) is None
    assert mvau_refusal(node, inst, 64, 128) is not None              # without --mvau rtl: FINN's HLS node
    # the search's settings: capped at 8191 for HLS, the whole 128 x 128 for onebit's RTL
    assert _widest(build_groups(model)) == 4096
    assert _widest(build_groups(model, rtl)) == MW * MH
    # a stream wider than 8191 bits stays refused for onebit's RTL too: its neighbours are FINN's nodes
    wide = xnor_mvau_model(mw=16384, mh=2)
    _, wide_inst = _node(wide)
    assert "input stream 16384 bits" in onebit_rtl_mvau_refusal(wide_inst, 1, 16384)
    assert onebit_rtl_mvau_refusal(wide_inst, 2, 4096) is None         # 8192 weight bits, 4096-bit stream


@pytest.fixture(scope="module")
def folded(request):
    """auto-fold on Pynq-Z1, `--mvau rtl` (Fmax check stubbed: this test is about the width limit) and
    `--mvau hls`."""
    from hw.finn.autofold import fold_for_board
    from hw.finn.autofold.synth_costs import RTLCosts

    model = xnor_mvau_model()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RTLCosts, "timing_misses", lambda self, m, clock_mhz: {})
        rtl_model, rtl = fold_for_board(model, "Pynq-Z1", mvau="rtl")
    _, hls = fold_for_board(model, "Pynq-Z1", mvau="hls")
    return rtl_model, rtl, hls


def test_rtl_search_folds_past_8191_weight_bits_where_hls_stops(folded):
    _, rtl, hls = folded
    width = lambda result: result.config["MVAU_hls_0"]["PE"] * result.config["MVAU_hls_0"]["SIMD"]  # noqa: E731
    assert width(hls) <= 8191 and width(rtl) > 8191, (hls.config, rtl.config)
    mvau = lambda result: next(lr for lr in result.layers if lr.name == "MVAU_hls_0")  # noqa: E731
    assert mvau(rtl).cycles == MW * MH // width(rtl) == 2       # the I/O bound: 2 beats of 64 bits
    assert mvau(hls).cycles == 4 and rtl.fps == pytest.approx(2 * hls.fps)
    assert rtl.totals["LUT"] <= rtl.budget["LUT"] and rtl.totals["BRAM_18K"] <= rtl.budget["BRAM_18K"]


# 8192 XNOR lanes are the fewest past the limit (onebit's weights are 1 bit: the word is the lanes); their
# Verilator build took 170 s on the shared 2-core machine, so it runs with -m rtl_sweep (bench/rtl_sweep.py)
@pytest.mark.rtl_sweep
@pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator not installed (tools/setup_env.sh)")
def test_the_folding_past_8191_bits_is_bit_exact_in_onebit_rtl(folded):
    """The node the search folded, as `--mvau rtl` builds it (synth_costs.rtl_node: the build's MVAUConfig),
    in Verilator under random stalls, against FINN's MVAU execute_node (Python) on the same folded node."""
    from finn.custom_op.fpgadataflow.matrixvectoractivation import MVAU

    from hw.finn.autofold.synth_costs import rtl_node
    from hw.rtl import compare_outputs

    model, rtl, _ = folded
    node, inst = _node(model)
    pe, simd = inst.get_nodeattr("PE"), inst.get_nodeattr("SIMD")
    assert pe * simd > 8191
    hw = rtl_node(model, node, 1000.0 / rtl.clock_mhz)
    x = np.random.default_rng(3).integers(0, 2, (12, MW))
    sim = hw.simulate(x, in_stall=0.2, out_stall=0.2, seed=5)
    context = {"inp": x.astype(np.float32), "outp": np.zeros((12, MH), np.float32),
               "weights": model.get_initializer("weights"), "thresh": model.get_initializer("thresh")}
    inst.set_nodeattr("numInputVectors", [12])
    MVAU.execute_node(inst, context, model.graph)   # FINN's Python semantics (MVAU_hls' own needs cppsim)
    compare_outputs(node.name, context["outp"].astype(np.int64), sim.outputs)
    assert hw.simulate(x).cycles_per_image == MW * MH // (pe * simd)
