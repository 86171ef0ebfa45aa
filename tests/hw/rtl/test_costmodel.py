"""The synthesis-calibrated cost model of onebit's RTL MVAU (hw/rtl/costmodel.py) and auto-fold with it.

The fresh-synthesis check tests the model's form, not today's numbers: nodes outside the calibration grid
(other MW, MH, PE, SIMD, both memory styles, both datapaths) are synthesized with yosys now and must land
within LUT_TOLERANCE of the prediction, with BRAM counted exactly. A change to the RTL (a deeper pipeline)
that the stored fit no longer describes fails here until `python -m hw.rtl.costmodel calibrate` is rerun.
"""
from __future__ import annotations

import json
import shutil

import pytest

from hw.rtl.costmodel import CALIBRATION, CostModel, NodeShape, _node, bram18_count, fit

LUT_TOLERANCE = 0.25   # |model / yosys - 1| for a node off the grid

needs_yosys = pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed (tools/setup_env.sh)")


def test_block_ram_count_takes_the_cheapest_aspect_ratio():
    assert bram18_count(1, 100) == 1
    assert bram18_count(36, 512) == 1          # one RAMB18 at 512 x 36
    assert bram18_count(72, 512) == 2          # one RAMB36 (two RAMB18) or two RAMB18 side by side
    assert bram18_count(2304, 16) == 64        # wide and shallow: width / 36
    assert bram18_count(18, 2048) == 2         # deep and narrow: 2 x (1024 x 18)


def test_stored_calibration_is_the_fit_of_its_own_data():
    """The committed coefficients are what fitting the committed synthesis data gives (no hand edits, no
    stale fit), and the data says which yosys produced it."""
    stored = json.loads(CALIBRATION.read_text())
    assert stored["yosys"].startswith("Yosys")
    refit = fit({k: json.loads(json.dumps(stored[k])) for k in ("yosys", "dots", "nodes")})
    assert refit["lut_coefficients"] == stored["lut_coefficients"]
    assert refit["ff_coefficients"] == stored["ff_coefficients"]
    assert stored["lut_error_xc7"]["mean_abs"] <= LUT_TOLERANCE / 2


def test_prediction_grows_with_parallelism_and_memory():
    model = CostModel.load()
    base = NodeShape(576, 64, 4, 32, "xnor", 1, 10, 1, 1, "distributed")
    more_pe = NodeShape(576, 64, 8, 32, "xnor", 1, 10, 1, 1, "distributed")
    more_simd = NodeShape(576, 64, 4, 64, "xnor", 1, 10, 1, 1, "distributed")
    block = NodeShape(576, 64, 4, 32, "xnor", 1, 10, 1, 1, "block")
    lut = lambda s: model.predict(s)["LUT"]  # noqa: E731
    assert lut(more_pe) > lut(base) and lut(more_simd) > lut(base)
    assert lut(block) < lut(base)                                  # the ROM leaves the LUTs ...
    assert model.predict(block)["BRAM_18K"] == bram18_count(128, 18 * 16) > 0   # ... for block RAM
    assert model.predict(base)["BRAM_18K"] == 0


OFF_GRID = [  # (mode, MW, MH, PE, SIMD, ram_style, no_activation); the suite keeps the first (about 20 s of
    # yosys on an idle core), -m rtl_sweep adds the others
    ("xnor", 128, 32, 4, 16, "distributed", False),
    pytest.param(("xnor", 288, 32, 8, 32, "block", False), marks=pytest.mark.rtl_sweep),
    pytest.param(("uint8", 27, 32, 8, 9, "distributed", False), marks=pytest.mark.rtl_sweep),
]


@needs_yosys
@pytest.mark.parametrize("point", OFF_GRID, ids=["xnor-128x32-pe4-simd16-distributed", "xnor-288x32-pe8-simd32-block",
                                                   "uint8-27x32-pe8-simd9-distributed"])
def test_model_predicts_fresh_synthesis_off_the_grid(point):
    mode, mw, mh, pe, simd, style, no_act = point
    node = _node(mode, mw, mh, pe, simd, style, no_act, 10.0)
    counts = node.resources("xc7")
    predicted = CostModel.load().predict(NodeShape.from_parameters(node.parameters(), 10.0))
    assert abs(predicted["LUT"] / counts.lut_total - 1) <= LUT_TOLERANCE, (predicted, counts.lut_total)
    assert predicted["BRAM_18K"] == counts.bram18


@pytest.fixture(scope="module")
def tfc(tmp_path_factory):
    from bench.folding import reference_hw_model

    return reference_hw_model("tfc-w1a1", tmp_path_factory.mktemp("tfc"))


@needs_yosys
@pytest.mark.rtl_sweep  # times four TFC MVAUs with yosys sta (minutes on a shared machine)
def test_rtl_auto_fold_costs_onebit_mvaus_by_the_model_and_meets_the_clock(tfc):
    from qonnx.custom_op.registry import getCustomOp

    from hw.finn.autofold import fold_for_board
    from hw.finn.autofold.synth_costs import FINN_SOURCE, SYNTH_SOURCE, RTLCosts

    folded, result = fold_for_board(tfc, "Pynq-Z1", mvau="rtl")
    _, finn = fold_for_board(tfc, "Pynq-Z1")
    costs = RTLCosts(folded, result.fpga_part, 1000.0 / result.clock_mhz)
    mvaus = [lr for lr in result.layers if lr.op_type == "MVAU_hls"]
    assert mvaus and all(lr.cost_source == SYNTH_SOURCE for lr in mvaus)
    assert all(lr.cost_source == FINN_SOURCE for lr in result.layers if lr.op_type != "MVAU_hls")
    nodes = {n.name: n for n in folded.graph.node}
    for lr in mvaus:   # the report's figure is the model's prediction at the chosen folding
        assert lr.lut == pytest.approx(costs.estimate(nodes[lr.name], getCustomOp(nodes[lr.name]))["LUT"])
    assert set(result.node_fmax_mhz) == {lr.name for lr in mvaus}
    assert min(result.node_fmax_mhz.values()) >= result.clock_mhz
    # the same rate as FINN's formula gives (the I/O bound), for less estimated logic
    assert result.fps >= finn.fps and result.totals["LUT"] < finn.totals["LUT"]


def test_a_setting_that_misses_the_clock_is_not_chosen(tfc, monkeypatch):
    """A node whose Fmax estimate misses the clock at the chosen setting gets that setting banned and the
    search rerun: the next answer folds it differently and says why."""
    from hw.finn.autofold import fold_for_board
    from hw.finn.autofold.synth_costs import RTLCosts

    monkeypatch.setattr(RTLCosts, "timing_misses", lambda self, model, clock_mhz: {})  # every node meets it
    _, first = fold_for_board(tfc, "Pynq-Z1", mvau="rtl")
    victim = next(n for n in first.config if n.startswith("MVAU"))
    bad = dict(first.config[victim])

    def misses(self, model, clock_mhz):
        from qonnx.custom_op.registry import getCustomOp

        node = next(n for n in model.graph.node if n.name == victim)
        inst = getCustomOp(node)
        now = {"PE": inst.get_nodeattr("PE"), "SIMD": inst.get_nodeattr("SIMD")}
        return {victim: "estimated Fmax 90 MHz < 100 MHz (test)"} if now == {k: bad[k] for k in now} else {}

    monkeypatch.setattr(RTLCosts, "timing_misses", misses)
    _, second = fold_for_board(tfc, "Pynq-Z1", mvau="rtl")
    assert {k: second.config[victim][k] for k in ("PE", "SIMD")} != {k: bad[k] for k in ("PE", "SIMD")}
    assert second.timing_rejected and second.timing_rejected[0]["node"] == victim
    assert "90 MHz" in second.markdown()
