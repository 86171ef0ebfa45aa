"""onebit_mvau pipelined (memory output registers, register ranks in each PE's adder tree) and the timing
estimate that chooses and checks the pipelining (hw/rtl/timing.py).

Bit-exactness against FINN's MVAU execute_node under random stalls for several SIMD / PE / rank counts,
throughput and latency, the elaboration checks of the new parameters, and the Fmax estimate: on a small
node, pipelined vs not, and on a deliberately long combinational path, which must come out slower (the
estimate can fail a design).
"""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from hw.rtl import MVAUConfig, RTLMvau, build_simulator, compare_outputs
from hw.rtl.synth_report import fmax_warnings
from hw.rtl.timing import estimate_timing, tree_stages
from onebit.errors import OnebitError

from test_rtl_mvau import finn_reference, random_inputs

needs_verilator = pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator not installed "
                                     "(tools/setup_env.sh installs it as root)")
needs_yosys = pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed "
                                 "(tools/setup_env.sh installs it as root)")


def _case(mw, mh, pe, simd, idt, stages, mem_reg, seed=0):
    rng = np.random.default_rng(seed)
    xnor = idt == "BINARY"
    cfg = MVAUConfig(mw=mw, mh=mh, pe=pe, simd=simd, idt=idt, wdt="BINARY" if xnor else "BIPOLAR", odt="BINARY",
                     binary_xnor=xnor, tree_stages=stages, mem_reg=mem_reg, name=f"pipe_{idt}_{simd}_{stages}")
    weights = rng.integers(0, 2, (mw, mh)) if xnor else rng.choice([-1, 1], (mw, mh))
    span = mw if xnor else 16 * mw
    thresholds = np.sort(rng.integers(-span // 4 if not xnor else mw // 4, span // 2, (mh, 1)), axis=1)
    return cfg, weights, thresholds


# (MW, MH, PE, SIMD, idt, tree ranks, memory register): XNOR with ranks inside the popcount tree and after
# it; XNOR at the most ranks SIMD 12 takes (one on the full-adder leaves) and at SIMD 3 (no tree: both ranks
# on the leaves); an odd SIMD (a term skipping a level) at the most ranks SIMD 5 takes; signed inputs without
# the memory register
CASES = [(24, 8, 2, 12, "BINARY", 2, 1), (24, 8, 2, 12, "BINARY", 5, 1), (9, 4, 2, 3, "BINARY", 3, 1),
         (15, 6, 3, 5, "UINT8", 4, 1), (8, 4, 2, 4, "INT4", 1, 0)]


@needs_verilator
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[4]}_simd{c[3]}_pe{c[2]}_ranks{c[5]}_mem{c[6]}")
def test_pipelined_mvau_is_bit_exact_at_full_throughput(case):
    cfg, weights, thresholds = _case(*case)
    node = RTLMvau(cfg, weights, thresholds)
    assert node.parameters()["TREE_STAGES"] == case[5] and node.parameters()["MEM_REG"] == case[6]
    x = random_inputs(cfg, 7)
    sim = node.simulate(x, in_stall=0.3, out_stall=0.3, seed=3)     # random stalls on both streams
    compare_outputs(cfg.name, finn_reference(cfg, weights, thresholds, x), sim.outputs)
    free = node.simulate(x)                                           # same build, no stalls
    compare_outputs(cfg.name, finn_reference(cfg, weights, thresholds, x), free.outputs)
    assert free.cycles_per_image == cfg.exp_cycles()                  # ranks add latency, never cycles
    assert free.first_output_latency == cfg.latency == cfg.sf + 3 + case[5] + case[6]


def test_stage_count_follows_the_clock_and_simd():
    # a slower clock never needs more ranks; a wider dot product never fewer
    for simd in (1, 4, 16, 64, 576):
        counts = [tree_stages(simd, 1, True, ns) for ns in (2.5, 5.0, 10.0, 20.0)]
        assert counts == sorted(counts, reverse=True)
    assert tree_stages(576, 1, True, 10.0) >= tree_stages(16, 1, True, 10.0)
    assert tree_stages(1, 1, True, 20.0) == 0
    cfg = MVAUConfig(mw=32, mh=4, pe=1, simd=16, idt="UINT8", wdt="BIPOLAR", odt="BINARY", clock_ns=5.0)
    slow = dataclasses.replace(cfg, clock_ns=20.0)
    assert cfg.stages > slow.stages
    assert RTLMvau(cfg, np.ones((32, 4)), np.zeros((4, 1))).parameters()["TREE_STAGES"] == cfg.stages


def test_lut_rom_depth_follows_the_clock():
    # ZCU104's 5 ns: a LUT ROM deeper than one slice's 256 words is too slow; Pynq-Z1's 10 ns: no limit
    from hw.rtl.timing import lut_rom_depth

    assert lut_rom_depth(5.0) == 256 and lut_rom_depth(10.0) == 0
    cfg, weights, thresholds = _case(64, 16, 1, 2, "BINARY", None, 1)       # 512 weight words
    fast = RTLMvau(dataclasses.replace(cfg, clock_ns=5.0), weights, thresholds)
    assert fast.parameters()["LUT_ROM_DEPTH"] == 256
    assert RTLMvau(cfg, weights, thresholds).parameters()["LUT_ROM_DEPTH"] == 0
    assert fast.unpipelined().parameters()["LUT_ROM_DEPTH"] == 0


@needs_yosys
def test_a_memory_deeper_than_lut_depth_goes_to_block_ram():
    from hw.rtl.yosys import synthesize

    words = {"w.dat": "".join(f"{(i * 7) % 16:x}\n" for i in range(512))}     # 512 x 4 bits: LUTs by size
    params = {"WIDTH": 4, "DEPTH": 512, "INIT_FILE": "w.dat", "OUT_REG": 1}
    in_luts = synthesize("onebit_rom", params, words, name="rom_luts")
    in_bram = synthesize("onebit_rom", {**params, "LUT_DEPTH": 256}, words, name="rom_bram")
    assert in_luts.bram18 == 0 and in_luts.lut_total > 0
    assert in_bram.bram18 > 0 and in_bram.lut_total < in_luts.lut_total
    assert synthesize("onebit_rom", {**params, "LUT_DEPTH": 512}, words, name="rom_fits").bram18 == 0


@needs_verilator
def test_pipeline_parameters_checked_at_elaboration():
    base = {"MW": 16, "MH": 4, "PE": 2, "SIMD": 4}
    with pytest.raises(OnebitError, match=r"rejected at elaboration: onebit_mvau: TREE_STAGES \(9\) must be in "
                                          r"0..clog2\(SIMD\)\+1 = 3 for SIMD 4"):
        build_simulator("onebit_mvau", {**base, "TREE_STAGES": 9}, name="bad_stages")
    with pytest.raises(OnebitError, match=r"(MEM_REG|OUT_REG) \(2\) must be 0 or 1"):
        build_simulator("onebit_mvau", {**base, "MEM_REG": 2}, name="bad_mem_reg")
    with pytest.raises(OnebitError, match=r"tree_stages must be in 0..3 for SIMD 4"):
        MVAUConfig(mw=16, mh=4, pe=2, simd=4, idt="BINARY", wdt="BINARY", odt="BINARY", binary_xnor=True,
                   tree_stages=9)


@needs_yosys
def test_timing_estimate_of_a_small_node_and_what_pipelining_buys():
    cfg, weights, thresholds = _case(16, 4, 2, 8, "UINT8", 0, 0)
    flat = RTLMvau(cfg, weights, thresholds)
    piped = RTLMvau(dataclasses.replace(cfg, tree_stages=2, mem_reg=1), weights, thresholds)
    t_flat, t_piped = flat.timing(), piped.timing()
    for t in (t_flat, t_piped):
        assert t.nets > 0 and t.cell_ns > 0.303 and t.period_ns == pytest.approx(t.cell_ns + t.route_ns, abs=1e-3)
        assert t.fmax_mhz == pytest.approx(1000 / t.period_ns)
        assert any("CARRY4" in step for step in t.path)        # an adder is on the critical path
    assert t_piped.fmax_mhz > 1.2 * t_flat.fmax_mhz
    assert piped.unpipelined().parameters() == flat.parameters()


@needs_yosys
def test_report_sets_the_unpipelined_node_beside_only_when_asked():
    """The build report's comparison with the unpipelined MVAU (--compare-unpipelined; opt-in since it is a second
    synthesis of every MVAU): asked, a small node's row has the same node synthesized unpipelined (LUT, FF, a
    lower Fmax, a shorter latency); not asked, the row and a line under the table say the comparison was not run."""
    from hw.rtl.synth_report import UNPIPELINED_NOT_RUN, _pipelining, timing_rows

    cfg, weights, thresholds = _case(16, 4, 2, 8, "UINT8", 0, 0)
    piped = RTLMvau(dataclasses.replace(cfg, tree_stages=2, mem_reg=1), weights, thresholds)
    timing = piped.timing().as_dict()
    asked = _pipelining(piped, "xc7", compare=True)
    old = asked["unpipelined"]
    assert old["lut_total"] > 0 and old["ff"] > 0 and old["timing"]["fmax_mhz"] < timing["fmax_mhz"], old
    assert (asked["mem_reg"], asked["tree_stages"]) == (1, 2)
    assert asked["unpipelined_latency_cycles"] == asked["latency_cycles"] - 3
    not_asked = _pipelining(piped, "xc7", compare=False)
    assert not_asked["unpipelined"] == {"not_run": UNPIPELINED_NOT_RUN}
    assert {k: v for k, v in not_asked.items() if k != "unpipelined"} == \
        {k: v for k, v in asked.items() if k != "unpipelined"}

    def table(pipelining, executed):
        synth = {"nodes": {"n": {"timing": timing, "lut_total": 1, "ff": 1, "pipelining": pipelining}},
                 "unpipelined_comparison": {"executed": True} if executed else
                 {"executed": False, "reason": UNPIPELINED_NOT_RUN}}
        return "\n".join(timing_rows(synth, 100.0))

    shown = table(asked, True)
    assert f"| {old['lut_total']} / {old['ff']} / {old['timing']['fmax_mhz']} / " in shown and "not run" not in shown
    hidden = table(not_asked, False)
    assert "| not run (--compare-unpipelined) / " in hidden and UNPIPELINED_NOT_RUN in hidden, hidden


LONG_PATH = """
module chain #(parameter int N = 1) (input logic clk, input logic [7:0] a, b, output logic [7:0] q);
  logic [7:0] ra, rb;
  logic [7:0] s [N + 1];
  always_ff @(posedge clk) begin ra <= a; rb <= b; q <= s[N]; end
  assign s[0] = ra;
  for (genvar i = 0; i < N; i++) begin : g   // N adders in series, each fed through a LUT level
    assign s[i + 1] = (s[i] ^ {s[i][3:0], s[i][7:4]}) + (rb ^ 8'(i * 157));
  end
endmodule
"""


@needs_yosys
def test_a_long_combinational_path_gives_a_lower_fmax_and_a_warning(tmp_path):
    source = tmp_path / "chain.sv"
    source.write_text(LONG_PATH)
    short = estimate_timing("chain", {"N": 1}, extra_sources=[source])
    long = estimate_timing("chain", {"N": 6}, extra_sources=[source])
    assert long.fmax_mhz < short.fmax_mhz / 3
    assert long.nets > short.nets
    synth = {"nodes": {"short": {"timing": short.as_dict()}, "long": {"timing": long.as_dict()}}}
    warnings = fmax_warnings(synth, 100.0)
    assert short.fmax_mhz > 100 > long.fmax_mhz
    assert len(warnings) == 1 and warnings[0].startswith("long: estimated Fmax") and "below the 100 MHz" in warnings[0]


@needs_yosys
def test_a_timing_run_over_the_time_limit_is_an_error_not_a_pass(tmp_path, monkeypatch):
    source = tmp_path / "chain.sv"
    source.write_text(LONG_PATH)
    monkeypatch.setenv("ONEBIT_YOSYS_TIMEOUT", "0.01")
    with pytest.raises(OnebitError, match=r"chain: timing estimate not made: .* did not finish within 0.01 s"):
        estimate_timing("chain", {"N": 7}, extra_sources=[source])
    from hw.rtl.synth_report import _timing

    entry = _timing(lambda: estimate_timing("chain", {"N": 7}, extra_sources=[source]))
    assert "did not finish" in entry["error"]
    assert fmax_warnings({"nodes": {"chain": {"timing": entry}}}, 100.0)[0].startswith("chain: no Fmax estimate")


def test_sta_report_parsing_counts_routed_nets_and_port_paths():
    """yosys `sta` text (the format of yosys 0.23) -> cell delays + 0.5 ns per general-routing net: carry-chain
    CI and MUXF7 inputs are dedicated (no allowance); a path from a stream port gets the producer's clock-to-out."""
    from hw.rtl.timing import parse_sta

    reg_to_reg = """Latest arrival time in 'top' is 2000:
    2000 r2 (FDRE.D)
           s [5]
    2000 c1 (CARRY4.CI->O)
           co [3]
    1600 c0 (CARRY4.S->CO)
           t
    1200 m7 (MUXF7.I1->O)
           f
     950 l6 (LUT6.I0->O)
           q
     303 r1 (FDRE.C->Q)
       0   \\ap_clk (<primary input>)
"""
    t = parse_sta(reg_to_reg)
    assert (t.nets, t.cell_ns, t.start, t.end) == (3, 2.0, "r1", "r2")   # LUT6, CARRY4.S and the endpoint
    assert t.period_ns == 3.5 and round(t.fmax_mhz) == 286
    from_port = """Latest arrival time in 'top' is 1000:
    1000 r (FDRE.D)
           n
    1000 l (LUT6.I0->O)
           \\in0_V_TVALID
       0   \\in0_V_TVALID (<primary input>)
"""
    t = parse_sta(from_port)
    assert (t.nets, t.cell_ns) == (2, 1.303)
    with pytest.raises(OnebitError, match="no timing path"):
        parse_sta("End of script.")
