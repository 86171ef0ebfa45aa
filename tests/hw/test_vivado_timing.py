"""Contract test of onebit's timing gate (hw/finn/vivado_timing.py) on Vivado's routed timing summary.

The two reports in tests/hw/data are written in the text format of Vivado 2024.2's report_timing_summary (the file
finn-plus copies to <build>/report/post_route_timing.rpt): one whose constraints are met, one with a setup
violation. They are not the output of a real implementation run (there is no Vivado here).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from hw.finn.vivado_timing import REPORT, TimingReportError, parse_timing_summary, timing_verdict

DATA = Path(__file__).resolve().parent / "data"


def _build_with(tmp_path: Path, report: str | None) -> Path:
    build = tmp_path / "build"
    (build / "report").mkdir(parents=True)
    if report is not None:
        shutil.copy(DATA / report, build / REPORT)
    return build


def test_met_report_passes_with_its_numbers(tmp_path):
    verdict = timing_verdict(_build_with(tmp_path, "timing_summary_met.rpt"), 100.0)
    assert verdict["status"] == "passed", verdict
    assert (verdict["wns_ns"], verdict["tns_ns"], verdict["whs_ns"]) == (1.234, 0.0, 0.021)
    assert verdict["clock"] == {"name": "clk_fpga_0", "period_ns": 10.0, "mhz": 100.0}
    assert "timing met at 100 MHz: WNS 1.234 ns" in verdict["message"]


def test_violated_report_fails_naming_the_worst_paths_endpoints(tmp_path):
    verdict = timing_verdict(_build_with(tmp_path, "timing_summary_violated.rpt"), 100.0)
    assert verdict["status"] == "failed"
    assert (verdict["wns_ns"], verdict["tns_ns"], verdict["tns_failing_endpoints"]) == (-0.532, -12.345, 45)
    message = verdict["message"]
    assert "\n" not in message and "WNS -0.532 ns" in message and "TNS -12.345 ns" in message
    path = verdict["worst_setup_path"]
    assert path["source"].endswith("u_rom/rd_q_reg/CLKARDCLK") and path["destination"].endswith("acc_q_reg[9]/D")
    assert f"from {path['source']} to {path['destination']}" in message
    assert path["logic_levels"] == 12 and path["data_path_delay_ns"] == 10.321


def test_missing_or_unreadable_report_is_a_failure_not_a_pass(tmp_path):
    missing = timing_verdict(_build_with(tmp_path / "a", None))
    assert missing["status"] == "failed" and "missing" in missing["message"]
    build = _build_with(tmp_path / "b", None)
    (build / REPORT).write_text("FAKE: not a timing report\n")
    unreadable = timing_verdict(build)
    assert unreadable["status"] == "failed" and "timing unknown" in unreadable["message"]
    with pytest.raises(TimingReportError, match="Design Timing Summary"):
        parse_timing_summary("WNS(ns)  TNS(ns)\n-------  -------\n  x  y\n")


def test_pipeline_gate_fails_a_violated_build_and_leaves_other_builds_alone(tmp_path, capsys):
    """hw/pipeline.py: a build that ran step_synthesize_bitfile is failed (verification ok False: no deployment
    package, exit 1) when timing is not met; a build without Vivado gets no timing verdict at all."""
    from hw.boards import get_board
    from hw.pipeline import _timing_gate

    for report, ok in (("timing_summary_met.rpt", True), ("timing_summary_violated.rpt", False)):
        build = _build_with(tmp_path / report, report)
        result = SimpleNamespace(out_dir=build, board=get_board("Pynq-Z1"),
                                 steps_run=["step_hw_codegen", "step_synthesize_bitfile", "step_deployment_package"])
        verification = {"ok": True}
        _timing_gate(result, verification)
        assert verification["ok"] is ok and verification["timing"]["status"] == ("passed" if ok else "failed")
    assert "onebit build: timing not met at 100 MHz: WNS -0.532 ns" in capsys.readouterr().err
    verification = {"ok": True}
    _timing_gate(SimpleNamespace(out_dir=tmp_path / "none", board=get_board("Pynq-Z1"),
                                 steps_run=["step_hw_codegen"]), verification)
    assert verification == {"ok": True}
