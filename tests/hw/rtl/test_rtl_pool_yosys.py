"""onebit's RTL max pool against FINN's Pool execute_node, and yosys resource counts of RTL nodes."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from hw.rtl import MaxPoolConfig, MVAUConfig, RTLMaxPool, RTLMvau, StreamDeadlock, synthesize
from onebit.errors import OnebitError

verilator = pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator not installed (tools/setup_env.sh)")
yosys = pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed (tools/setup_env.sh)")


def finn_pool(cfg: MaxPoolConfig, windows: np.ndarray) -> np.ndarray:
    from onnx import helper
    from qonnx.custom_op.registry import getCustomOp

    n, oh, ow, _ = windows.shape
    node = helper.make_node("Pool", ["inp"], ["outp"], domain="finn.custom_op.fpgadataflow", backend="fpgadataflow",
                            Channels=cfg.channels, PE=cfg.pe, KernelSize=list(cfg.kernel), Function="MaxPool",
                            OutImgDims=[oh, ow], InputDataType=cfg.dtype, OutputDataType=cfg.dtype, BatchSize=n)
    context = {"inp": windows.astype(np.float32), "outp": np.zeros((n, oh, ow, cfg.channels), np.float32)}
    getCustomOp(node).execute_node(context, None)
    return context["outp"].astype(np.int64)


@verilator
@pytest.mark.parametrize("dtype, pe, channels, kernel", [("BINARY", 2, 6, (2, 2)),
                                                        pytest.param("INT4", 3, 3, (3, 2), marks=pytest.mark.rtl_sweep)])
def test_rtl_maxpool_matches_finn(dtype, pe, channels, kernel):
    rng = np.random.default_rng(3)
    cfg = MaxPoolConfig(channels=channels, pe=pe, kernel=kernel, dtype=dtype, name=f"Pool_{dtype}")
    lo, hi = (0, 1) if dtype == "BINARY" else (-8, 7)
    windows = rng.integers(lo, hi + 1, (2, 3, 3, cfg.k2 * channels))
    sim = RTLMaxPool(cfg).simulate(windows, in_stall=0.25, out_stall=0.4, seed=11)
    expected = finn_pool(cfg, windows)
    np.testing.assert_array_equal(sim.outputs, expected)
    # the signed compare matters: an unsigned one would call -1 (0b1111) the maximum
    if dtype == "INT4":
        assert (expected < 0).any()


def test_maxpool_config_checked():
    with pytest.raises(OnebitError, match=r"PE \(4\) must divide Channels \(6\)"):
        MaxPoolConfig(channels=6, pe=4, kernel=(2, 2), dtype="BINARY")


@yosys
def test_yosys_counts_of_a_small_mvau():
    rng = np.random.default_rng(0)
    cfg = MVAUConfig(mw=16, mh=8, pe=2, simd=8, idt="BINARY", wdt="BINARY", odt="BINARY", binary_xnor=True,
                     name="MVAU_small")
    node = RTLMvau(cfg, rng.integers(0, 2, (16, 8)), rng.integers(4, 13, (8, 1)))
    small = node.resources("xc7")
    assert small.family == "xc7"
    # 2 PEs x 8-input XNOR popcounts, accumulators, counters: tens to a few hundred LUTs, no DSP
    assert 10 < small.lut < 600, small.cells
    assert 10 < small.ff < 400, small.cells
    assert small.dsp == 0
    # twice the PEs: more logic (the counts follow the configuration, they are not constants)
    wide = RTLMvau(MVAUConfig(mw=16, mh=8, pe=4, simd=8, idt="BINARY", wdt="BINARY", odt="BINARY",
                              binary_xnor=True, name="MVAU_wide"),
                   rng.integers(0, 2, (16, 8)), rng.integers(4, 13, (8, 1))).resources("xc7")
    assert wide.lut > small.lut
    with pytest.raises(OnebitError, match="unknown FPGA family 'xc9'"):
        node.resources("xc9")


@yosys
def test_yosys_synthesizes_each_pe_dot_product_once_and_counts_it_per_pe():
    # A wide UINT8 x +-1 layer (TFC's first layer auto-folded to PE 32 x SIMD 16) did not finish flat in
    # 15 minutes: every PE's adder tree became one full-adder network for ABC. Each PE's dot product is
    # now its own module, synthesized once and counted PE times.
    rng = np.random.default_rng(2)
    cfg = MVAUConfig(mw=16, mh=8, pe=4, simd=8, idt="UINT8", wdt="BIPOLAR", odt="BINARY", name="MVAU_uint8")
    node = RTLMvau(cfg, rng.choice([-1, 1], (16, 8)), np.sort(rng.integers(-512, 512, (8, 1)), axis=1))
    mvau = node.resources("xc7")
    assert mvau.instances == {"onebit_dot": 4}
    p = node.parameters()
    # the dot product as the MVAU instantiates it: pipelined with the MVAU's adder-tree stages
    dot = synthesize("onebit_dot", {"SIMD": 8, "IBITS": 8, "ISIGNED": 0, "XNOR": 0, "STAGES": p["TREE_STAGES"]},
                     family="xc7")
    assert dot.lut > 20 and dot.instances == {}  # an 8-lane add/subtract tree: tens of LUTs
    # the four instances are all counted, beside the counters, accumulators and thresholds of the MVAU
    assert mvau.lut >= p["PE"] * dot.lut, (mvau.cells, dot.cells)
    assert mvau.carry >= p["PE"] * dot.carry
    assert "$paramod" not in " ".join(mvau.cells)


@verilator
@pytest.mark.rtl_sweep  # the stitched accelerator test (tests/hw/rtl/test_rtl_accelerator.py) covers FIFOs
def test_rtl_fifo_passes_beats_in_order_under_stalls(tmp_path):
    from hw.rtl import build_simulator, run_stream
    from hw.rtl.stream import values_to_words, words_to_values

    sim = build_simulator("onebit_fifo", {"WIDTH": 16, "DEPTH": 4})
    values = np.random.default_rng(5).integers(0, 1 << 16, (200, 1))
    result = run_stream(sim, values_to_words(values, "UINT16"), 200, 1, tmp_path, name="fifo", in_stall=0.3,
                        out_stall=0.5, seed=3)
    np.testing.assert_array_equal(words_to_values(result.words, "UINT16", 1), values)
    with pytest.raises(StreamDeadlock, match="fifo: deadlock in onebit_fifo"):
        # a consumer that stops after 10 beats: the FIFO fills (DEPTH + output register) and stops taking
        run_stream(sim, values_to_words(values, "UINT16"), 200, 1, tmp_path, name="fifo", sink_capacity=10,
                   idle_limit=200)
