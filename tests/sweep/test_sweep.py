"""`onebit sweep` on local Ray with 2 CPUs: a grid with a failing run, a driver killed mid-sweep and resumed,
and each finished build equal to the same build done alone (issue 26)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray")  # one local Ray instance at a time under `make test` (tests/conftest.py)

SPEC = """\
name: tiny
train:
  model: tfc
  epochs: 1
  limit_train: 300
  limit_test: 100
  seed: [0]
build:
  board: [Pynq-Z1, ZCU104]
  verify_samples: 50
  python_samples: 20
runs:
  - build: {checkpoint: missing.pt, board: KV260}   # made to fail: no such checkpoint
"""


def _sweep(spec: Path, out: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "onebit", "sweep", str(spec), "--out", str(out), "--num-cpus", "2"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen)


def _status(out: Path) -> dict[str, str]:
    found = {}
    for run_file in out.glob("*/*/run.json"):
        record = json.loads(run_file.read_text())
        found[f"{record['kind']}/{record['key']}"] = record["status"]
    return found


def _key_figures(report: dict) -> dict:
    return {"estimate": {k: report["estimate"][k] for k in ("fps", "latency_cycles")},
            "folding": [(r["layer"], r["PE"], r["SIMD"], r["cycles"]) for r in report["layers"]],
            "resources": report["resources"]["total"], "accuracy": report["accuracy"],
            "levels": {name: (e.get("samples"), e.get("integer_mismatches"), e.get("argmax_mismatches"))
                       for name, e in report["verification"]["levels"].items()}}


def test_sweep_resumes_after_the_driver_is_killed_and_keeps_the_failure(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "sweep"
    driver = _sweep(spec, out)
    deadline = time.time() + 600
    # kill the driver once the training has finished and before every build has
    while time.time() < deadline and _status(out).get("train/seed-0_f9277ad6") != "finished":
        assert driver.poll() is None, driver.stdout.read()
        time.sleep(0.5)
    statuses = _status(out)
    assert statuses.get("train/seed-0_f9277ad6") == "finished", statuses
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    half = _status(out)
    assert sum(1 for k, s in half.items() if k.startswith("build/seed") and s == "finished") < 2, half

    rerun = _sweep(spec, out)
    text, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 1, text  # one run failed on purpose
    assert "1 finished earlier" in text or "2 finished earlier" in text, text
    assert "train/seed-0_f9277ad6" not in text.split("to run", 1)[1], text  # the training was not redone
    results = json.loads((out / "results.json").read_text())
    rows = {row["run"]: row for row in results["rows"]}
    assert results["summary"]["finished"] == 3 and results["summary"]["failed"] == 1, results["summary"]
    failing = rows["build/checkpoint-missing.pt_board-KV260_" + next(
        k.rsplit("_", 1)[1] for k in rows if k.startswith("build/checkpoint-missing.pt"))]
    assert failing["status"] == "failed" and "missing.pt: no such file" in failing["error"]
    for board in ("Pynq-Z1", "ZCU104"):
        (row,) = [r for r in rows.values() if r["varying"].get("board") == board and r["kind"] == "build"]
        assert row["status"].startswith("finished") and row["mismatches"] == 0 and row["fps"] > 0, row
    assert (out / "results.md").read_text().count("| build/") == 3
    assert (out / "fps_vs_lut.png").stat().st_size > 1000 and (out / "results.csv").is_file()

    # a finished run's report equals the same build done alone, from the options the sweep ran it with
    (run_dir,) = [p for p in (out / "build").iterdir() if "board-ZCU104" in p.name]
    alone = tmp_path / "alone"
    done = subprocess.run([sys.executable, "-m", "onebit", "build", "--config", str(run_dir / "build_options.json"),
                           "--out", str(alone), "--no-progress"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    swept = json.loads((run_dir / "build" / "report.json").read_text())
    assert _key_figures(swept) == _key_figures(json.loads((alone / "report.json").read_text()))


@pytest.mark.parametrize("text, expected", [
    ("build: {checkpoint: m.pt, board: [Pynq-Z1, Pynq-Z9]}", "unknown board 'Pynq-Z9'"),
    ("bogus: 1", "unknown section(s) bogus"),
    ("build: {board: Pynq-Z1}", "needs 'checkpoint'"),
    ("train: {model: tfc, epochz: 3}", "unknown training option(s) epochz"),
    ("build: {checkpoint: m.pt, out: x}", "out is set by the sweep"),
    ("build: {checkpoint: m.pt, board: []}", "'board' is an empty list"),
    ("[1, 2]", "a sweep spec is a mapping"),
])
def test_bad_specs_are_one_line(tmp_path, capsys, text, expected):
    from onebit.sweep import main

    spec = tmp_path / "s.yaml"
    spec.write_text(text)
    assert main([str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_run_commands_keeps_failures_and_dependencies_in_their_runs(tmp_path):
    """The runner's generic command tasks (bench/estimators_full.py's trainings): a finished task, a failing one
    with its one-line error, a task after the failing one not run (said why), one stopped early on purpose, and a
    task after a finished one run with the first one's output in place."""
    from onebit.sweep.runner import CommandTask, run_commands

    def task(name: str, code: str, **kw) -> CommandTask:
        return CommandTask(id=name, folder=str(tmp_path / name), command=[sys.executable, "-c", code],
                           result="done.txt", **kw)

    write = "import pathlib; pathlib.Path('{}').write_text('{}')"
    tasks = [task("first", write.format(tmp_path / "first" / "done.txt", "1")),
             task("broken", "import sys; print('onebit: broken: what went wrong'); sys.exit(2)"),
             task("after-broken", write.format(tmp_path / "after-broken" / "done.txt", "x"), depends_on=["broken"]),
             task("stops", "import sys; sys.exit(3)", incomplete_exit=3),
             task("after-first", "import pathlib, sys; t = pathlib.Path('{}').read_text(); "
                  "pathlib.Path('{}').write_text(t + '2')".format(tmp_path / "first" / "done.txt",
                                                                  tmp_path / "after-first" / "done.txt"),
                  depends_on=["first"])]
    seen = []
    records = run_commands(tasks, num_cpus=2, on_record=lambda r: seen.append(r["id"]))
    assert sorted(seen) == sorted(t.id for t in tasks)
    status = {name: (r["status"], r["error"]) for name, r in records.items()}
    assert status["first"] == ("finished", None) and status["after-first"] == ("finished", None)
    assert (tmp_path / "after-first" / "done.txt").read_text() == "12"
    assert status["broken"] == ("failed", "onebit: broken: what went wrong")
    assert status["after-broken"] == ("not run", "waits for broken failed")
    assert not (tmp_path / "after-broken").exists()
    assert status["stops"] == ("incomplete", None) and records["stops"]["exit"] == 3


def test_an_unreadable_spec_is_one_line_with_the_parser_error(tmp_path, capsys):
    from onebit.sweep import main

    spec = tmp_path / "s.yaml"
    spec.write_text("build: {checkpoint: [m.pt\n")
    assert main([str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"onebit: {spec}: not a readable sweep spec (ParserError: ") and err.endswith(")"), err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err


def test_an_unexpected_error_in_a_run_is_recorded_as_its_type_and_first_line(tmp_path, monkeypatch):
    """Not an OnebitError (a bug, or something the run did not expect): run.json says its type and first non-empty
    line, one line."""
    import onebit.sweep.runner as runner
    from onebit.sweep.spec import Run

    def broken(run, path):
        raise RuntimeError("\nthe command could not be formed\nsecond line")

    monkeypatch.setattr(runner, "_train_command", broken)
    run = Run(kind="train", key="seed-0_x", params={"model": "tfc"})
    record = runner.execute(run.__dict__, str(tmp_path / "run"))
    assert record["status"] == "failed" and record["error"] == "RuntimeError: the command could not be formed"
    assert json.loads((tmp_path / "run" / runner.RUN_FILE).read_text())["error"] == record["error"]


@pytest.mark.slow
def test_a_run_whose_ray_worker_dies_is_recorded_as_one_line(tmp_path):
    """gather: a task whose worker process dies (after Ray's retries) is a failed record naming Ray's error."""
    import ray

    from onebit.sweep.runner import gather, start_ray

    start_ray(None, 1)

    @ray.remote(max_retries=0)
    def dies():
        os._exit(1)

    records = []
    gather({dies.remote(): "dies"}, lambda record, name: records.append((name, record)))
    ((name, record),) = records
    assert name == "dies" and record["status"] == "failed" and record["seconds"] is None
    assert record["error"].startswith("Ray: WorkerCrashedError: ") and "\n" not in record["error"], record


def test_design_figures_read_the_whole_design_else_the_timed_nodes():
    """A sweep row's synthesized LUT and Fmax from report.json's resources_synth as hw/rtl/synth_report.py writes
    it: the whole design's total (lut_total, its slowest stage), or, where the whole design was not synthesized,
    no LUT figure and the slowest timed node."""
    from hw.rtl.synth_report import design_figures

    nodes = {"a": {"lut_total": 5, "timing": {"fmax_mhz": 300.0}}, "b": {"lut_total": 7, "timing": {"fmax_mhz": 250.0}},
             "fifo": {"error": "yosys could not parse it"}}
    whole = {"executed": True, "nodes": nodes, "total": {"lut_total": 20, "timing": {"fmax_mhz": 240.0}}}
    assert design_figures(whole) == {"lut": 20, "fmax_mhz": 240.0}
    partial = {"executed": True, "nodes": nodes, "total": {"error": "fifo not synthesized"}}
    assert design_figures(partial) == {"lut": None, "fmax_mhz": 250.0}
    assert design_figures({"executed": False, "reason": "FINN HLS nodes"}) == {"lut": None, "fmax_mhz": None}
