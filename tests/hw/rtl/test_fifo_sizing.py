"""FIFO sizing of the whole-accelerator simulation (hw/rtl/stitch.py size_fifos) and the per-node free-running
rates (hw/rtl/node_rates.py) on the session's narrow CNV (FMPadding / sliding-window generators / pools /
MVAUs): with FINN's rule depths the chain runs well above its bottleneck node's estimate because windows,
rows and MVAU input vectors arrive in bursts; with depths sized by simulation it runs at the estimate, while
every node alone meets its own estimate. One Verilator build of the chain (run-time FIFO caps: sizing, the
sized depths and the rule all run on it) and one of the onebit nodes side by side.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator not installed (tools/setup_env.sh)")]

IMAGES = 6


@pytest.fixture(scope="module")
def cnv_rtl_model(cnv_build, tmp_path_factory):
    """The session CNV's final graph with onebit's RTL MVAU / pool in place of FINN's HLS nodes (the
    --mvau rtl builder step on the same folding); FINN's own RTL nodes keep their generated files."""
    from qonnx.core.modelwrapper import ModelWrapper

    from hw.finn.env import prepare_finn, prepared_dir
    from hw.finn.rtl_mvau import replace_with_rtl

    if prepared_dir() is None:
        prepare_finn(tmp_path_factory.mktemp("finn_env"))
    model, summary = replace_with_rtl(ModelWrapper(str(cnv_build / "finn" / "step_hw_codegen.onnx")))
    assert summary["replaced"] and not summary["kept"], summary
    return model


def _cycles(sim) -> float:
    first = sim.design.nodes[0]
    sim.run(np.zeros((IMAGES, first.in_beats, sim.design.in_width // 8), np.uint8))  # timing is data-independent
    return sim.last.cycles_per_image


def test_sized_fifos_reach_the_bottleneck_estimate_where_the_rule_does_not(cnv_rtl_model, tmp_path):
    from hw.rtl.stitch import RTLAccelerator

    sized = RTLAccelerator(cnv_rtl_model, artifacts=tmp_path)
    bottleneck = sized.design.bottleneck_cycles
    assert sized.sizing and not sized.sizing["capped"], sized.sizing
    depths, rule_depths = sized.depths, sized.sizing["rule_depths"]
    assert all(depths[k] >= rule_depths[k] for k in rule_depths)
    assert any(depths[k] > rule_depths[k] for k in rule_depths), depths
    sized_cycles = _cycles(sized)
    assert abs(sized_cycles / bottleneck - 1) < 0.05, (sized_cycles, bottleneck, depths)

    rule = RTLAccelerator(cnv_rtl_model, artifacts=tmp_path, fifo_sizing="rule")
    assert rule.sim.executable == sized.sim.executable  # one build: the depths are run-time caps
    assert rule.depths == rule_depths
    rule_cycles = _cycles(rule)
    assert rule_cycles > 1.05 * bottleneck, (rule_cycles, bottleneck)
    # the sizing is cached with the build folder: a second accelerator neither sizes nor builds again
    again = RTLAccelerator(cnv_rtl_model, artifacts=tmp_path)
    assert again.sizing == sized.sizing and again.depths == depths


def test_onebit_nodes_alone_meet_finns_estimate(cnv_rtl_model, tmp_path):
    from hw.rtl.node_rates import isolated_rates
    from hw.rtl.stitch import AcceleratorDesign, plan_accelerator

    design = plan_accelerator(cnv_rtl_model)
    onebit = [s for s in design.stages if s.kind == "onebit"]
    assert {s.op_type for s in onebit} == {"OnebitMVAU_rtl", "OnebitPool_rtl"}
    only = AcceleratorDesign(onebit, [], [], design.init_files, design.init_sources, [s.name for s in onebit],
                             design.library_sources, onebit[0].in_width, onebit[-1].out_width)
    rates = isolated_rates(only, tmp_path, images=4)
    assert [r.node for r in rates] == [s.name for s in onebit]
    for rate in rates:
        assert rate.images >= 3, rate
        # one fold step per cycle: SF x NF cycles per input vector (an MVAU), one window per cycle (a pool)
        assert rate.cycles_per_image == rate.exp_cycles, rate
