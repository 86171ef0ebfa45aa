"""bench/estimators_full.py end to end on a tiny CPU subset: timing, training stopped part-way and
resumed (finished runs never retrained), the float reference tuned on a validation split, the report,
the pack/unpack that carries the work between machines, and (slow) the hardware phase: a checkpoint
through export/to_finn.py and the accelerator model with 0 mismatches."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.estimators_full import INCOMPLETE, main  # noqa: E402

# its Ray runner test starts a local Ray instance: one at a time under `make test` (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("ray")

TINY = ["--models", "tfc", "--methods", "ste,binaryduo,float", "--seeds", "1", "--epochs", "2",
        "--limit-train", "300", "--limit-test", "100", "--arch", 'tfc={"hidden": [16, 16]}',
        "--float-lrs", "0.003,0.01", "--timing-steps", "2", "--verify-samples", "20", "--hw-methods", "ste",
        "--jobs", "0"]
RUNS = ["tfc-binaryduo-s0", "tfc-float-s0", "tfc-float-tune-lr0.003", "tfc-float-tune-lr0.01", "tfc-ste-s0"]


def _sessions(work: Path) -> dict[str, list[int]]:
    return {key: [s["started_at_epoch"] for s in json.loads((work / "runs" / key / "sessions.json").read_text())]
            for key in RUNS}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, Path]:
    """Work folder and result stem after: a call stopped after epoch 1 of every run, then a resuming call."""
    from quant_models.data import IDX_FILES, load_dataset, write_idx

    root = tmp_path_factory.mktemp("estimators_full")
    # the first real Fashion-MNIST images as a small idx dataset: every run loads it in milliseconds
    data = root / "fashion-mnist"
    data.mkdir()
    for split, count in (("train", 300), ("test", 100)):
        part = load_dataset("fashion-mnist", split).head(count)
        write_idx(data / f"{IDX_FILES[split][0]}.gz", part.images[:, 0])
        write_idx(data / f"{IDX_FILES[split][1]}.gz", part.labels.astype("uint8"))
    TINY.extend(["--data-root", str(data)])
    work, out = root / "work", root / "results" / "estimators_full"
    args = [*TINY, "--work", str(work), "--out", str(out)]
    assert main([*args, "--phase", "timing,train", "--stop-after-epochs", "1"]) == INCOMPLETE
    assert not any((work / "runs" / key / "result.json").exists() for key in RUNS)
    # the float seeds wait for their learning rate, whose tuning runs stopped too
    assert [key for key in RUNS if (work / "runs" / key / "state.pt").is_file()] == [k for k in RUNS if k != "tfc-float-s0"]
    assert main([*args, "--phase", "train,report"]) == 0
    return work, out


def test_runs_resume_and_finished_runs_are_skipped(smoke: tuple[Path, Path]) -> None:
    work, out = smoke
    # first call from epoch 0, second resumed after the saved epoch 1 (the float seed started in the second)
    expected = {key: [0] if key == "tfc-float-s0" else [0, 1] for key in RUNS}
    assert _sessions(work) == expected
    for key in RUNS:
        result = json.loads((work / "runs" / key / "result.json").read_text())
        assert [h["epoch"] for h in result["history"]] == [1, 2]
    ste = json.loads((work / "runs" / "tfc-ste-s0" / "result.json").read_text())
    assert ste["collapse_mismatches"] == 0 and ste["test_images"] == 100
    assert (work / "runs" / "tfc-ste-s0" / "collapsed.pt").is_file()
    before = {key: (work / "runs" / key / "result.json").stat().st_mtime_ns for key in RUNS}
    assert main([*TINY, "--work", str(work), "--out", str(out), "--phase", "train,report"]) == 0
    assert _sessions(work) == expected  # nothing trained again
    assert {key: (work / "runs" / key / "result.json").stat().st_mtime_ns for key in RUNS} == before


def test_report_tables_curves_timing_and_float_tuning(smoke: tuple[Path, Path]) -> None:
    work, out = smoke
    data = json.loads(out.with_suffix(".json").read_text())
    tfc = data["summary"]["tfc"]
    tuning = tfc["float_tuning"]
    assert set(tuning) == {"0.003", "0.01"} and tfc["float_lr"] == max((0.003, 0.01), key=lambda lr: (tuning[f"{lr:g}"], -lr))
    methods = tfc["methods"]
    assert list(methods) == ["ste", "binaryduo", "float"]
    assert methods["float"]["lr"] == tfc["float_lr"]
    for name, entry in methods.items():
        assert entry["finished"] == entry["planned"] == 1
        assert 0.0 < entry["mean"] <= 1.0 and len(entry["mean_curve"]) == 2
        assert entry["time_vs_ste"] > 0  # from the timing phase, each method alone
    assert methods["ste"]["time_vs_ste"] == 1.0
    # no hardware phase yet: the accuracy says where it comes from
    assert methods["ste"]["accuracy_source"].startswith("collapsed network")
    assert not data["complete"]
    if methods["float"]["mean"] > methods["ste"]["mean"]:
        gap = (methods["binaryduo"]["mean"] - methods["ste"]["mean"]) / (methods["float"]["mean"] - methods["ste"]["mean"])
        assert methods["binaryduo"]["gap_closed"] == pytest.approx(gap)
    assert data["projection"]["runs"] == 5 and data["projection"]["serial_minutes"] > 0
    md = out.with_suffix(".md").read_text()
    assert "| binaryduo | 1 / 1 |" in md and "hardware phase pending" in md and "How to run it (GPU session)" in md
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_pack_carries_finished_runs_and_unfinished_states(smoke: tuple[Path, Path], tmp_path: Path) -> None:
    work, out = smoke
    # an unfinished run elsewhere: a state without result.json
    unfinished = work / "runs" / "tfc-ste-s9"
    unfinished.mkdir()
    (unfinished / "state.pt").write_bytes((work / "runs" / "tfc-ste-s0" / "state.pt").read_bytes())
    archive = tmp_path / "work.tar.xz"
    try:
        assert main([*TINY, "--work", str(work), "--out", str(tmp_path / "r"), "--phase", "report",
                     "--pack", str(archive)]) == 0
    finally:
        (unfinished / "state.pt").unlink()
        unfinished.rmdir()
    elsewhere = tmp_path / "elsewhere"
    assert main([*TINY, "--work", str(elsewhere), "--out", str(tmp_path / "r2"), "--phase", "report",
                 "--unpack", str(archive)]) == 0
    for key in RUNS:
        assert (elsewhere / "runs" / key / "result.json").is_file()
        assert not (elsewhere / "runs" / key / "state.pt").exists()  # finished: its state stays behind
        assert not (elsewhere / "runs" / key / "model.pt").exists()
    assert (elsewhere / "runs" / "tfc-ste-s0" / "collapsed.pt").is_file()
    assert (elsewhere / "runs" / "tfc-ste-s9" / "state.pt").is_file()
    assert json.loads((tmp_path / "r2.json").read_text())["summary"] == json.loads((tmp_path / "r.json").read_text())["summary"]


def test_plateau_check_compares_the_same_ste_seeds_on_a_longer_schedule(smoke: tuple[Path, Path], tmp_path: Path) -> None:
    work, out = smoke
    longer = tmp_path / "ste_longer"
    # the same STE seed, 3 epochs instead of 2 (argparse: the later --methods/--epochs win over TINY's)
    assert main([*TINY, "--methods", "ste", "--epochs", "3", "--work", str(tmp_path / "work"), "--out", str(longer),
                 "--phase", "train,report"]) == 0
    rendered = tmp_path / "rendered"
    rendered.with_suffix(".json").write_text(out.with_suffix(".json").read_text())
    # the report again from its JSON alone (no work folder), with the longer schedule beside it
    assert main([*TINY, "--work", str(tmp_path / "no-runs"), "--out", str(rendered), "--phase", "render",
                 "--schedule-check", str(longer.with_suffix(".json"))]) == 0
    check = json.loads(rendered.with_suffix(".json").read_text())["summary"]["tfc"]["ste_schedule_check"]
    short = json.loads(out.with_suffix(".json").read_text())["summary"]["tfc"]["methods"]["ste"]["per_seed"]
    long = json.loads(longer.with_suffix(".json").read_text())["summary"]["tfc"]["methods"]["ste"]["per_seed"]
    assert (check["epochs"], check["longer_epochs"], check["seeds"]) == (2, 3, 1)
    assert check["per_seed_gain"] == {"tfc-ste-s0": pytest.approx(long["tfc-ste-s0"] - short["tfc-ste-s0"])}
    assert check["plateaued"] is None  # one seed: no standard error to judge the gain by
    md = rendered.with_suffix(".md").read_text()
    assert "STE plateau check (schedule length)" in md and "undecided" in md
    assert main([*TINY, "--out", str(tmp_path / "absent"), "--phase", "render"]) == 2  # nothing to render: clear error


def test_second_driver_on_the_same_work_folder_is_refused(smoke: tuple[Path, Path], capsys) -> None:
    from onebit.sweep.runner import SweepLock

    work, out = smoke
    with SweepLock(work):  # a running driver (this process: alive)
        assert main([*TINY, "--work", str(work), "--out", str(out), "--phase", "train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a sweep driver is running there" in err[0] and str(work) in err[0]
    assert main([*TINY, "--work", str(work), "--out", str(out), "--phase", "train"]) == 0  # lock released


def test_plateau_verdict_is_the_paired_gain_against_its_standard_error() -> None:
    from bench.estimators_full import schedule_check

    def table(epochs: int, accs: list[float]) -> dict:
        per_seed = {f"tfc-ste-s{i}": a for i, a in enumerate(accs)}
        return {"tfc": {"epochs": epochs, "methods": {"ste": {"per_seed": per_seed, "mean": sum(accs) / len(accs),
                                                               "std": 0.0, "accuracy_source": "accelerator model"}}}}
    short = table(30, [0.860, 0.870, 0.865])
    for long_accs, plateaued in (([0.862, 0.869, 0.866], True), ([0.865, 0.875, 0.871], False)):
        summary = json.loads(json.dumps(short))
        schedule_check(summary, {"summary": table(60, long_accs)})
        assert summary["tfc"]["ste_schedule_check"]["plateaued"] is plateaued


@pytest.mark.slow
def test_hardware_phase_reports_the_accelerator_accuracy(smoke: tuple[Path, Path]) -> None:
    work, out = smoke
    assert main([*TINY, "--work", str(work), "--out", str(out), "--phase", "hardware,report"]) == 0
    hw = json.loads((work / "runs" / "tfc-ste-s0" / "hw.json").read_text())
    assert hw["checkpoint"] == "trained" and hw["accelerator_samples"] == 100 and hw["accelerator_mismatches"] == 0
    assert all(level["executed"] and level["integer_mismatches"] == 0 for level in hw["levels"].values())
    ste = json.loads(out.with_suffix(".json").read_text())["summary"]["tfc"]["methods"]["ste"]
    assert ste["accuracy_source"] == "accelerator model" and ste["mean"] == hw["accelerator_accuracy"]
    assert ste["hardware_mismatches"] == 0 and ste["accelerator_images"] == 100


def test_pack_splits_into_parts_the_device_can_return(smoke: tuple[Path, Path], tmp_path: Path, monkeypatch) -> None:
    import bench.estimators_full as full

    work, _ = smoke
    monkeypatch.setattr(full, "PART_BYTES", 20_000)
    packed = full.pack(work, tmp_path / "w.tar.xz", state_budget_mib=1)
    parts = [Path(p) for p in packed["archive"]]
    assert len(parts) > 1 and all(p.stat().st_size <= 20_000 for p in parts) and not (tmp_path / "w.tar.xz").exists()
    full.unpack(tmp_path / "w.tar.xz", tmp_path / "again")
    assert (tmp_path / "again" / "runs" / "tfc-ste-s0" / "collapsed.pt").read_bytes() == \
        (work / "runs" / "tfc-ste-s0" / "collapsed.pt").read_bytes()


def test_binarized_input_form_and_hyperlinear_extension(smoke: tuple[Path, Path], tmp_path: Path) -> None:
    """--input-bits 1: its own runs and table (the float reference on the same +-1 input), hyper's two
    linear forms trained as labelled, and CNV, which cannot take binarized 28x28 input, left out."""
    import bench.estimators_full as full

    data_root = TINY[TINY.index("--data-root") + 1]
    common = ["--models", "tfc", "--seeds", "1", "--epochs", "1", "--limit-train", "300", "--limit-test", "100",
              "--arch", 'tfc={"hidden": [16, 16]}', "--float-lrs", "0.01", "--jobs", "0", "--data-root", data_root]
    work, out = tmp_path / "work", tmp_path / "r"
    args = full._parse([*common, "--models", "tfc,cnv", "--input-bits", "8,1", "--methods", "ste,hyper,float"])
    assert [name for name, _, _ in full.configs(args)] == ["tfc", "cnv", "tfc-in1"]
    keys = [r.key for r in full.plan(args)]
    # the UINT8 form's runs all come first
    assert keys.index("tfc-in1-float-tune-lr0.01") > max(i for i, k in enumerate(keys) if not k.startswith("tfc-in1"))
    assert main([*common, "--work", str(work), "--out", str(out), "--input-bits", "1",
                 "--methods", "hyper,hyper-hyperlinear,float", "--phase", "train,report"]) == 0
    runs = work / "runs"
    assert sorted(p.name for p in runs.iterdir()) == [
        "tfc-in1-float-s0", "tfc-in1-float-tune-lr0.01", "tfc-in1-hyper-hyperlinear-s0", "tfc-in1-hyper-s0"]
    for key, linear in (("tfc-in1-hyper-s0", "authors"), ("tfc-in1-hyper-hyperlinear-s0", "hyper")):
        result = json.loads((runs / key / "result.json").read_text())
        assert result["estimator"]["name"] == "hyper" and result["estimator"]["hparams"]["linear"] == linear
        assert result["final_arch"]["input_bits"] == 1 and result["collapse_mismatches"] == 0
    md = out.with_suffix(".md").read_text()
    assert "## TFC-w1a1, `--input-bits 1` (binarized input), 1 epochs" in md
    assert "| hyper, linear=hyper (onebit's extension) | 1 / 1 |" in md
    # the float reference's input is what the binarized-input BNN sees
    import torch
    pixels = torch.tensor([0, 127, 128, 255], dtype=torch.uint8)
    assert full._float_input(pixels, 1).tolist() == [-1.0, -1.0, 1.0, 1.0]


def test_report_marks_unrun_rows(smoke: tuple[Path, Path], tmp_path: Path) -> None:
    """CNV without runs on a CPU: 'needs a GPU'; a TFC method not trained: 'not run yet'; never a number."""
    work, _ = smoke
    out = tmp_path / "r"
    args = [*TINY, "--work", str(work), "--out", str(out), "--phase", "report"]
    methods = args.index("--methods") + 1
    args[methods] = "ste,rbonn,binaryduo,float"
    args[args.index("--models") + 1] = "tfc,cnv"
    assert main(args) == 0  # a report alone: nothing to continue
    md = out.with_suffix(".md").read_text()
    assert "| rbonn | 0 / 1 | not run yet |" in md and "| rbonn | 0 / 1 | needs a GPU |" in md
    assert "| binaryduo | 1 / 1 |" in md
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["summary"]["tfc"]["float_check"]["best_binary_mean"] == max(
        data["summary"]["tfc"]["methods"][m]["mean"] for m in ("ste", "binaryduo"))


def test_ray_runner_resumes_the_process_runners_runs_with_the_same_results(smoke: tuple[Path, Path],
                                                                           tmp_path: Path) -> None:
    """The trainings as tasks of onebit's sweep runner on local Ray (2 CPUs), in the same run folders: they resume
    runs the worker processes stopped part-way, the float seed waits for its tuning runs (a Ray dependency), and
    every result equals the same run done by the worker processes alone."""
    pytest.importorskip("ray")
    common = [*TINY, "--methods", "ste,float", "--jobs", "2", "--phase", "train"]
    keys = ["tfc-float-s0", "tfc-float-tune-lr0.003", "tfc-float-tune-lr0.01", "tfc-ste-s0"]
    mixed, alone = tmp_path / "mixed", tmp_path / "alone"
    assert main([*common, "--work", str(mixed), "--runner", "processes", "--stop-after-epochs", "1"]) == INCOMPLETE
    assert not (mixed / "runs" / "tfc-float-s0").exists()  # its tuning runs stopped too
    assert main([*common, "--work", str(mixed), "--runner", "ray"]) == 0
    assert main([*common, "--work", str(alone), "--runner", "processes"]) == 0
    for key in keys:
        sessions = [s["started_at_epoch"] for s in json.loads((mixed / "runs" / key / "sessions.json").read_text())]
        assert sessions == ([0] if key == "tfc-float-s0" else [0, 1]), (key, sessions)
        ray_run, reference = (json.loads((w / "runs" / key / "result.json").read_text()) for w in (mixed, alone))
        assert [h["test_accuracy"] for h in ray_run["history"]] == [h["test_accuracy"] for h in reference["history"]]
        assert ray_run["final_accuracy"] == reference["final_accuracy"] and ray_run["spec"]["lr"] == reference["spec"]["lr"]
    assert json.loads((mixed / "runs" / "tfc-ste-s0" / "result.json").read_text())["collapse_mismatches"] == 0
