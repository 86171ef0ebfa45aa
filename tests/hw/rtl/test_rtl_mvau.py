"""onebit's SystemVerilog MVAU simulated with Verilator against FINN's own MVAU semantics.

References: FINN's MVAU execute_node (the Python semantics every FINN level is checked against) and,
for XNOR mode, a plain numpy +-1 matmul. Builds are small and cached (hw/rtl/verilator.py), so a rerun
spends its time only in simulation.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from hw.rtl import MVAUConfig, OutputMismatch, RTLMvau, StreamDeadlock, build_simulator, compare_outputs
from onebit.errors import OnebitError

pytestmark = pytest.mark.skipif(shutil.which("verilator") is None,
                                reason="verilator not installed (tools/setup_env.sh installs it as root)")

# name: (MW, MH, PE, SIMD, idt, wdt, odt, binaryXnorMode, noActivation, ActVal, thresholds per channel)
CONFIGS = {
    "xnor_folded": (16, 8, 2, 4, "BINARY", "BINARY", "BINARY", 1, 0, 0, 1),
    "xnor_parallel": (12, 6, 6, 12, "BINARY", "BINARY", "UINT2", 1, 0, 0, 3),     # PE = MH, SIMD = MW
    "bipolar_serial": (5, 3, 1, 1, "BIPOLAR", "BIPOLAR", "BIPOLAR", 0, 0, 0, 1),  # PE = SIMD = 1
    "uint8_first_layer": (12, 8, 4, 3, "UINT8", "BIPOLAR", "BINARY", 0, 0, 0, 1),
    "int4_actval": (8, 4, 2, 4, "INT4", "BIPOLAR", "INT2", 0, 0, -2, 3),
    "score_popcount": (16, 10, 5, 8, "BINARY", "BINARY", "UINT8", 1, 1, 0, 0),
}


def make_case(name: str, seed: int = 0):
    mw, mh, pe, simd, idt, wdt, odt, xnor, noact, act_val, nthr = CONFIGS[name]
    rng = np.random.default_rng(seed)
    cfg = MVAUConfig(mw=mw, mh=mh, pe=pe, simd=simd, idt=idt, wdt=wdt, odt=odt, binary_xnor=bool(xnor),
                     no_activation=bool(noact), act_val=act_val, name=f"MVAU_{name}")
    weights = rng.integers(0, 2, (mw, mh)) if wdt == "BINARY" else rng.choice([-1, 1], (mw, mh))
    thresholds = None
    if not noact:
        if cfg.xnor:
            # mid-range thresholds (the ones that decide outputs); xnor_parallel also gets the
            # extremes 0 and MW + 1 (always / never crossed)
            lo, hi = (0, mw + 2) if name == "xnor_parallel" else (mw // 4, 3 * mw // 4 + 1)
            thresholds = np.sort(rng.integers(lo, hi, (mh, nthr)), axis=1)
        else:
            span = (1 << int(idt.strip("UINT"))) * mw // 4
            thresholds = np.sort(rng.integers(-span, span, (mh, nthr)), axis=1)
    return cfg, weights, thresholds


def random_inputs(cfg: MVAUConfig, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if cfg.idt == "BINARY":
        return rng.integers(0, 2, (n, cfg.mw))
    if cfg.idt == "BIPOLAR":
        return rng.choice([-1, 1], (n, cfg.mw))
    if cfg.idt == "UINT8":
        return rng.integers(0, 256, (n, cfg.mw))
    if cfg.idt == "INT4":
        return rng.integers(-8, 8, (n, cfg.mw))
    raise AssertionError(cfg.idt)


def finn_node(cfg: MVAUConfig, n_vectors: int = 1):
    from onnx import helper
    from qonnx.custom_op.registry import getCustomOp

    inputs = ["inp", "weights"] + ([] if cfg.no_activation else ["thresh"])
    node = helper.make_node("MVAU", inputs, ["outp"], domain="finn.custom_op.fpgadataflow",
                            backend="fpgadataflow", name=cfg.name, MW=cfg.mw, MH=cfg.mh, PE=cfg.pe, SIMD=cfg.simd,
                            inputDataType=cfg.idt, weightDataType=cfg.wdt, outputDataType=cfg.odt,
                            binaryXnorMode=int(cfg.binary_xnor), noActivation=int(cfg.no_activation),
                            ActVal=cfg.act_val, mem_mode="internal_decoupled",
                            numInputVectors=[n_vectors])
    return getCustomOp(node)


def finn_reference(cfg: MVAUConfig, weights, thresholds, x) -> np.ndarray:
    """FINN's MVAU execute_node on the same arrays."""
    inst = finn_node(cfg, x.shape[0])
    context = {"inp": x.astype(np.float32), "weights": weights.astype(np.float32),
               "outp": np.zeros((x.shape[0], cfg.mh), np.float32)}
    if thresholds is not None:
        context["thresh"] = thresholds.astype(np.float32)
    inst.execute_node(context, None)
    return context["outp"].astype(np.int64)


# the default suite builds three MVAU models (each behaviour the accelerator uses: XNOR with thresholds,
# UINT8 x bipolar first layer, raw popcount score layer); the rest of the sweep is marked rtl_sweep
# (deselected by pyproject's addopts; bench/rtl_sweep.py runs it)
SUITE = ("xnor_folded", "uint8_first_layer", "score_popcount")


@pytest.mark.parametrize("name", [n if n in SUITE else pytest.param(n, marks=pytest.mark.rtl_sweep) for n in CONFIGS])
def test_rtl_mvau_matches_finn(name):
    cfg, weights, thresholds = make_case(name)
    x = random_inputs(cfg, 6)
    node = RTLMvau(cfg, weights, thresholds)
    sim = node.simulate(x, in_stall=0.3, out_stall=0.3, seed=7)   # random stalls on both sides
    expected = finn_reference(cfg, weights, thresholds, x)
    compare_outputs(cfg.name, expected, sim.outputs)
    if cfg.xnor:
        # independent of FINN: popcount of XNOR = (+-1 dot product + MW) / 2
        acc = ((2 * (x > 0) - 1) @ (2 * (weights > 0) - 1) + cfg.mw) // 2
        plain = acc if cfg.no_activation else (acc[..., None] >= thresholds[None]).sum(-1) + cfg.act_val
        if cfg.odt == "BIPOLAR":
            plain = 2 * plain - 1
        np.testing.assert_array_equal(sim.outputs, plain)
    assert sim.first_output_latency > 0


def test_weight_init_file_is_finns_memblock(tmp_path):
    """onebit writes the weight file FINN's MVAU writes for its RTL weight streamer (memblock.dat)."""
    for name in ("xnor_folded", "uint8_first_layer", "bipolar_serial"):
        cfg, weights, thresholds = make_case(name)
        finn_node(cfg).make_weight_file(weights.astype(np.float32), "decoupled_verilog_dat", str(tmp_path / "m.dat"))
        assert RTLMvau(cfg, weights, thresholds).init_files()["weights.dat"] == (tmp_path / "m.dat").read_text()


def test_full_throughput_without_stalls():
    cfg, weights, thresholds = make_case("xnor_folded")
    x = random_inputs(cfg, 8)
    sim = RTLMvau(cfg, weights, thresholds).simulate(x)
    # one fold step per cycle: NF * SF cycles per vector, like FINN's get_exp_cycles
    assert sim.cycles_per_image == cfg.exp_cycles()
    # the timing diagram in hw/rtl/README.md: SF + 3 cycles, plus the memory register and the tree's ranks
    assert sim.first_output_latency == cfg.latency == cfg.sf + 3 + cfg.mem_reg + cfg.stages


def test_corrupted_weight_file_gives_mismatch_naming_the_node(tmp_path):
    cfg, weights, thresholds = make_case("xnor_folded")
    node = RTLMvau(cfg, weights, thresholds)
    x = random_inputs(cfg, 16)
    expected = finn_reference(cfg, weights, thresholds, x)
    node.write_init_files(tmp_path)
    compare_outputs(cfg.name, expected, node.simulate(x, init_dir=tmp_path).outputs)  # intact: equal
    lines = (tmp_path / "weights.dat").read_text().splitlines()
    lines[3] = format(int(lines[3], 16) ^ 0xFF, f"0{len(lines[3])}x")  # flip 8 weights of one fold
    (tmp_path / "weights.dat").write_text("\n".join(lines) + "\n")
    with pytest.raises(OutputMismatch, match=rf"{cfg.name}: \d+ of {expected.size} RTL outputs differ"):
        compare_outputs(cfg.name, expected, node.simulate(x, init_dir=tmp_path).outputs)


def test_stalled_consumer_is_a_deadlock_error_not_a_hang():
    cfg, weights, thresholds = make_case("xnor_folded")
    node = RTLMvau(cfg, weights, thresholds)
    x = random_inputs(cfg, 4)
    # a consumer that takes 3 beats and then never again (a FIFO too small in a stitched design)
    with pytest.raises(StreamDeadlock, match=rf"{cfg.name}: deadlock in onebit_mvau: no stream transfer for 500 "
                                             r"cycles .*3/16 output beats"):
        node.simulate(x, sink_capacity=3, idle_limit=500)
    with pytest.raises(StreamDeadlock, match="cycle limit of 20 cycles"):
        node.simulate(x, max_cycles=20)


def test_parameters_checked_at_elaboration():
    with pytest.raises(OnebitError, match=r"rejected at elaboration: onebit_mvau: SIMD \(4\) must divide MW \(15\)"):
        build_simulator("onebit_mvau", {"MW": 15, "MH": 4, "PE": 2, "SIMD": 4}, name="bad_node")
    with pytest.raises(OnebitError, match=r"PE \(3\) must divide MH \(8\)"):
        MVAUConfig(mw=8, mh=8, pe=3, simd=2, idt="BINARY", wdt="BINARY", odt="BINARY", binary_xnor=True)
    with pytest.raises(OnebitError, match="multiplies by \\+-1 weights only"):
        MVAUConfig(mw=8, mh=8, pe=2, simd=2, idt="UINT8", wdt="INT2", odt="BINARY")
