"""Every verification level tells the truth (issue 20): the default levels pass on models with FINN RTL
nodes (an `--input-bits 1` TFC's Thresholding_rtl) wherever onebit is started, and each level fails, with
a non-zero exit naming the level and the node, when the design it simulates is broken:

  rtl_nodes        a node's init file missing (Verilator only warns "$readmem file not found")
  rtl_accelerator  onebit RTL that does not compile (the build folder's copy, what Vivado receives)
  integrity        a generated file changed after the build: `onebit validate` refuses it

plus the three outcomes of a level (passed / failed / skipped): an exception is a failure, never a skip.
These builds run the default levels (whatever the setup installed), not ONEBIT_LEVELS=none.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hw.check.levels import LevelOutcome, run_level
from hw.check.rtl_nodes import verilator_path

needs_verilator = pytest.mark.skipif(verilator_path() is None, reason="verilator not installed (tools/setup_env.sh)")
THRESHOLD_FILE = "Thresholding_rtl_0_threshs_0_0.dat"  # what FINN's generated Verilog reads by "./" path


def _train_tfc1(root: Path) -> Path:
    from quant_models.train import main as train_main

    checkpoint = root / "tfc1.pt"
    assert train_main(["--model", "tfc", "--input-bits", "1", "--dataset", "fashion-mnist", "--epochs", "1",
                       "--limit-train", "2000", "--limit-test", "200", "--seed", "0", "--out", str(checkpoint),
                       "--quiet"]) == 0
    return checkpoint


def _build(checkpoint: Path, out: Path, *extra: str) -> int:
    from hw.pipeline import main as build_main

    # --input-packing none: the pixel threshold stays on the FPGA (a Thresholding_rtl node reading its init
    # file), which these tests are about; the default for a binary-input MLP moves it to the host
    return build_main([str(checkpoint), "--out", str(out), "--verify-samples", "200", "--node-samples", "20",
                       "--no-progress", "--input-packing", "none", *extra])


def _code_gen(build: Path, node: str) -> Path:
    return next((build / "hw").glob(f"code_gen_ipgen_{node}_*"))


@pytest.fixture(scope="module")
def default_levels(monkeypatch_module):
    monkeypatch_module.delenv("ONEBIT_LEVELS", raising=False)  # what a user gets, not the suite's "none"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def tfc1(tmp_path_factory, default_levels) -> tuple[Path, Path]:
    """(checkpoint, finished build) of an --input-bits 1 TFC, built with the default levels from a folder
    that holds a stale all-zero copy of the threshold file its Thresholding_rtl node reads."""
    root = tmp_path_factory.mktemp("tfc1")
    checkpoint = _train_tfc1(root)
    elsewhere = root / "user_cwd"
    elsewhere.mkdir()
    (elsewhere / THRESHOLD_FILE).write_text("0\n" * 64)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(elsewhere)
        assert _build(checkpoint, root / "build") == 0
    return checkpoint, root / "build"


@needs_verilator
def test_input_bits_1_tfc_passes_the_default_levels_from_any_folder(tfc1):
    report = json.loads((tfc1[1] / "report.json").read_text())
    levels = report["verification"]["levels"]
    rtl = levels["rtl_nodes"]
    assert rtl["status"] == "passed" and rtl["integer_mismatches"] == 0 and rtl["samples"] == 20, rtl
    assert [(n["op_type"], n["status"]) for n in rtl["nodes"]] == [("Thresholding_rtl", "ok")]
    assert rtl["nodes"][0]["mismatching_random"] == 0
    for name, level in levels.items():  # passed, or skipped for a tool this machine lacks: never failed
        assert level["status"] in ("passed", "skipped"), (name, level)
        if level["status"] == "skipped":
            assert level["reason"].startswith("skipped: "), (name, level)
    assert report["verification"]["ok"] and report["verification"]["failed_levels"] == []


@needs_verilator
def test_rtl_nodes_fails_on_a_missing_init_file_naming_the_node(tfc1, tmp_path, monkeypatch, capsys):
    """The build's Thresholding_rtl loses its threshold file before verification: Verilator only warns and
    reads zeros; the level fails with that warning, the build exits 1 naming level and node, and a later
    `onebit validate` of that build says the build's own verification failed."""
    import hw.pipeline

    finish = hw.pipeline.finish_build_folder

    def lose_the_threshold_file(result):
        extras = finish(result)
        (_code_gen(result.out_dir, "Thresholding_rtl_0") / THRESHOLD_FILE).unlink()
        return extras

    monkeypatch.setattr(hw.pipeline, "finish_build_folder", lose_the_threshold_file)
    monkeypatch.chdir(tfc1[1] / "hw" / _code_gen(tfc1[1], "Thresholding_rtl_0").name)  # a good copy in the cwd
    out = tmp_path / "build"
    assert _build(tfc1[0], out) == 1
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.strip().startswith("rtl_nodes"))
    assert "FAILED" in line and "Thresholding_rtl_0" in line and "$readmem file not found" in line, line
    assert "first divergent level: rtl_nodes" in printed
    entry = json.loads((out / "report.json").read_text())["verification"]["levels"]["rtl_nodes"]
    assert entry["status"] == "failed" and "node Thresholding_rtl_0" in entry["error"]

    from hw.check.validate import main as validate_main

    monkeypatch.chdir(tmp_path)
    assert validate_main([str(out), "--limit", "20", "--backend", "model", "--levels", "none", "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert "THE BUILD'S OWN VERIFICATION FAILED" in printed and "rtl_nodes" in printed


@needs_verilator
def test_validate_refuses_a_changed_generated_file_naming_the_node(tfc1, capsys):
    from hw.check.validate import main as validate_main

    build = tfc1[1]
    args = [str(build), "--limit", "20", "--backend", "model", "--levels", "rtl_nodes", "--node-samples", "5",
            "--no-progress"]
    assert validate_main(args) == 0
    assert "rtl_nodes: passed: 0 mismatching node outputs on 5 images" in capsys.readouterr().out
    threshold = _code_gen(build, "Thresholding_rtl_0") / THRESHOLD_FILE
    original = threshold.read_text()
    try:
        threshold.write_text(original.replace("0", "1", 1))
        assert validate_main(args) == 2
        error = capsys.readouterr().err
        assert "integrity" in error and "node Thresholding_rtl_0" in error and THRESHOLD_FILE in error, error
        assert "rtl_nodes" in error
    finally:
        threshold.write_text(original)


@pytest.mark.slow
@needs_verilator
def test_uncompilable_rtl_fails_rtl_accelerator_naming_the_node(tfc_build, tfc_rtl_folding, tmp_path, monkeypatch,
                                                               capsys):
    """onebit_popcount.sv with one `;` deleted, as the build copies it for Vivado (--mvau rtl): both RTL
    levels fail (not "not executed"), name the node, and the build exits 1; the repository's intact
    hw/rtl/sv is not what they simulate. The suite's small --mvau rtl folding (tests/conftest.py): the report's
    yosys synthesis of the intact nodes is the one other RTL tests make (cached), not auto-fold's widest layers."""
    import hw.rtl.custom_op
    from hw.rtl.verilator import SV_DIR

    monkeypatch.delenv("ONEBIT_LEVELS", raising=False)
    broken = tmp_path / "sv"
    shutil.copytree(SV_DIR, broken)
    popcount = broken / "onebit_popcount.sv"
    text = popcount.read_text()
    cut = text.index(";", text.index("module onebit_popcount"))
    popcount.write_text(text[:cut] + text[cut + 1:])
    monkeypatch.setattr(hw.rtl.custom_op, "SV_DIR", broken)
    out = tmp_path / "build"
    assert _build(tfc_build / "model.pt", out, "--mvau", "rtl", "--folding", str(tfc_rtl_folding),
                  "--levels", "rtl_nodes,rtl_accelerator") == 1
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())["verification"]
    for level in ("rtl_nodes", "rtl_accelerator"):
        entry = report["levels"][level]
        assert entry["status"] == "failed" and "OnebitMVAU_rtl_" in entry["error"], (level, entry)
        line = next(line for line in printed.splitlines() if line.strip().startswith(level))
        assert "FAILED" in line and "OnebitMVAU_rtl_" in line, line
    assert "onebit_popcount.sv" in report["levels"]["rtl_accelerator"]["error"]
    assert report["failed_levels"] == ["rtl_nodes", "rtl_accelerator"] and not report["ok"]


class _Level:
    name, default = "fake", True

    def __init__(self, run=None, skip=None):
        self._run, self._skip = run, skip

    def skipped(self):
        return self._skip

    def run(self, ctx):
        return self._run()


@pytest.mark.parametrize("behaviour,status,text", [
    (lambda: (_ for _ in ()).throw(RuntimeError("the design exploded\nsecond line")), "failed",
     "RuntimeError: the design exploded"),
    (lambda: LevelOutcome(executed=True, samples=4, nodes=[{"node": "N_0", "op_type": "X", "status": "ok"},
                                                            {"node": "N_1", "op_type": "X",
                                                             "status": "failed: %Error: x.sv:3: syntax error"}]),
     "failed", "node N_1: failed: %Error: x.sv:3: syntax error"),
    (lambda: LevelOutcome(executed=True, samples=4, integer_mismatches=2), "failed", None),
    (lambda: LevelOutcome(executed=True, samples=4), "passed", None),
    (lambda: LevelOutcome.skip("no simulator here (apt-get install it)"), "skipped", "skipped: no simulator here"),
    # a build with no node of the level's kind: neither a pass (nothing verified) nor a skip (no tool missing)
    (lambda: LevelOutcome.nothing_to_simulate("no *_x node in the final HW graph"), "nothing to simulate",
     "nothing to simulate: no *_x node in the final HW graph"),
])
def test_a_level_has_three_outcomes_and_an_error_is_never_a_skip(monkeypatch, behaviour, status, text):
    import hw.check.levels as levels
    from hw.check.verdict import describe_level, judge

    monkeypatch.setattr(levels, "get_level", lambda name: _Level(run=behaviour))
    entry = run_level("fake", None)
    assert entry["status"] == status, entry
    if text:
        assert text in (entry.get("error") or entry.get("reason")), entry
    verdict = judge({"pytorch_collapsed": {"executed": True, "integer_mismatches": 0}, "fake": entry})
    assert verdict["ok"] == (status != "failed")
    assert verdict["skipped_levels"] == (["fake"] if status == "skipped" else [])
    assert describe_level(entry).startswith({"failed": "FAILED", "passed": "passed", "skipped": "skipped",
                                             "nothing to simulate": "nothing to simulate: "}[status])


def test_old_entries_without_status_read_the_same_way():
    from hw.check.verdict import level_status

    assert level_status({"executed": False, "reason": "skipped: verilator not found"}) == "skipped"
    assert level_status({"executed": False, "reason": "ValueError: broken"}) == "failed"
    assert level_status({"executed": True, "integer_mismatches": 3}) == "failed"
    assert level_status({"executed": True, "integer_mismatches": 0}) == "passed"


def test_drift_explanation_states_both_directions_and_measured_distances():
    from hw.check.verdict import collapse_drift

    trained = np.array([[1, 2], [3, 4], [5, 6]])
    collapsed = np.array([[1, 2], [3, 2], [5, 6]])
    drift = collapse_drift(trained, collapsed, None, np.array([0.4, 2e-4, 3e-7, 0.01]))
    assert drift["integer_mismatches"] == 1 and drift["nearest_threshold_distance"] == pytest.approx(3e-7)
    assert drift["thresholds_within_1e-3_of_an_integer"] == 2
    assert "both directions" in drift["explanation"] and "exactly" not in drift["explanation"]
    assert "3e-07" in drift["explanation"]
