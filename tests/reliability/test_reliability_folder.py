"""Issue 12, items 1-5, 8, 9: nothing of the user's lost, no false "finished", no unchecked package.

Every attack here is what a careless or hostile user does to a build folder; each test states it in its
first docstring line (bench/reliability.py turns them into bench/results/reliability.md).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from onebit.buildfolder import LOCK, MANIFEST, BuildFolder, BuildFolderError, clean_stale_temporaries
from reliability_helpers import REPO, cli, one_line_error


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- 1. user folders --------------------------------------------------------------------------------

def test_build_into_a_folder_with_user_files_refuses_and_keeps_them(tfc_build, tmp_path):
    """Item 1: `onebit build --out d` where d/validation/a.csv is the user's: refused naming it, a.csv kept."""
    out = tmp_path / "d"
    (out / "validation").mkdir(parents=True)
    (out / "validation" / "a.csv").write_text("x\n")
    (out / "report.md").write_text("my notes\n")
    line = one_line_error(cli("hw.pipeline", tfc_build / "model.pt", "--out", out, "--no-progress"))
    assert "a.csv" in line and "not written by onebit" in line
    assert (out / "validation" / "a.csv").read_text() == "x\n" and (out / "report.md").read_text() == "my notes\n"
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "validation"]  # nothing done, nothing added


def test_rebuild_refuses_a_user_file_added_inside_a_folder_it_replaces(finished, tfc_build):
    """Item 1: a file the user added to a finished build's validation/ would be deleted by a rebuild: refused."""
    notes = finished / "validation" / "notes.txt"
    notes.write_text("mine\n")
    before = _sha(finished / "report.json")
    line = one_line_error(cli("hw.pipeline", tfc_build / "model.pt", "--out", finished, "--no-progress"))
    assert "notes.txt" in line
    assert notes.read_text() == "mine\n" and _sha(finished / "report.json") == before


def test_claim_adopts_only_what_onebit_wrote(tmp_path):
    """Item 1: the manifest: onebit's own entries are replaced, a foreign one named, empty folders harmless."""
    with BuildFolder(tmp_path / "b", "test") as folder:
        folder.claim(["validation", "report.json"], replace=["validation"])
        (folder.path / "validation").mkdir()
        (folder.path / "validation" / "validation.json").write_text("{}")
        folder.record()
        folder.claim(["validation"], replace=["validation"])  # its own files: fine
        folder.remove(["validation"])
        assert not (folder.path / "validation").exists()
        (folder.path / "deploy").mkdir()  # empty: nothing to lose
        folder.claim(["deploy"], replace=["deploy"])
        (folder.path / "model.pt").write_text("the user's")
        with pytest.raises(BuildFolderError, match="model.pt was not written by onebit"):
            folder.claim(["model.pt"])
    assert not (tmp_path / "b" / LOCK).exists()


# -- 2. stale temporaries ---------------------------------------------------------------------------

def test_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    """Item 2: `.deploy.tmp-PID`, `.x.onnx.PID.xxxxxxxx.tmp.onnx` of a killed run go at the next run; a live one stays."""
    from onebit.temporaries import JOURNAL, start_time

    dead, alive = _dead_pid(), os.getpid()
    stale = [tmp_path / f".deploy.tmp-{dead}", tmp_path / f".deploy.zip.tmp-{dead}",
             tmp_path / "finn" / f".step_tidy_up.onnx.{dead}.abcd_123.tmp.onnx",
             tmp_path / f".model_qonnx.onnx.{dead}.k2j3h4g5.tmp.onnx.data"]
    live = [tmp_path / f".deploy.tmp-{alive}", tmp_path / f".report.json.{alive}.abcdefgh.tmp.json"]
    user = [tmp_path / ".deploy.tmp-notes", tmp_path / "finn" / "model.tmp.onnx"]
    for path in stale + live + user:
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.mkdir() if path.name.startswith(".deploy.tmp") else path.write_text("x"))
    # as their writers recorded them (onebit/temporaries.py): only recorded temporaries are ever removed
    (tmp_path / JOURNAL).write_text("".join(json.dumps(
        {"pid": pid, "start": start_time(pid), "path": p.relative_to(tmp_path).as_posix()}) + "\n"
        for pid, paths in ((dead, stale), (alive, live)) for p in paths))
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert all(p.exists() for p in live + user) and not any(p.exists() for p in stale)


def test_atomic_temporaries_carry_the_writer_pid(tmp_path):
    """Item 2: onebit/atomic.py names its temporary with the pid, so a killed writer's file is recognisable."""
    from onebit.atomic import write_atomic

    seen = []
    write_atomic(tmp_path / "model.onnx", lambda tmp: seen.append(tmp.name) or tmp.write_text("x"))
    assert f".{os.getpid()}." in seen[0] and seen[0].startswith(".model.onnx.")


# -- 3. deploy keeps the good package ---------------------------------------------------------------

def test_deploy_on_a_bad_model_keeps_the_existing_package(finished):
    """Item 3: `python -m hw.deploy` on a build whose model.pt is bad: fails, the existing deploy/ and deploy.zip kept."""
    package = {p: _sha(p) for p in [finished / "deploy.zip", *sorted((finished / "deploy").rglob("*.*"))]}
    report = json.loads((finished / "report.json").read_text())
    (finished / "model.pt").write_bytes(b"not a checkpoint")
    line = one_line_error(cli("hw.deploy", finished, "--no-progress"))
    assert "model.pt" in line
    assert {p: _sha(p) for p in package} == package
    assert not [p for p in finished.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert json.loads((finished / "report.json").read_text()) == report


# -- 4. one writer at a time ------------------------------------------------------------------------

def test_second_writer_is_refused_naming_the_holder(finished, tfc_build):
    """Item 4: a build into a folder another onebit process is writing: refused with the holder's pid."""
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (finished / LOCK).write_text(json.dumps({"pid": holder.pid, "command": "onebit build", "started": "now"}))
        line = one_line_error(cli("hw.pipeline", tfc_build / "model.pt", "--out", finished, "--no-progress"))
        assert f"pid {holder.pid}" in line and "in use" in line
        line = one_line_error(cli("hw.check.validate", finished, "--limit", "5", "--no-progress"))
        assert f"pid {holder.pid}" in line
        assert (finished / "report.json").is_file()  # the running build's folder was not touched
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(finished):
    """Item 4: the lock of a killed process does not block the folder forever."""
    (finished / LOCK).write_text(json.dumps({"pid": _dead_pid(), "command": "onebit build"}))
    done = cli("hw.check.validate", finished, "--limit", "10", "--backend", "model", "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (finished / LOCK).exists()


# -- 5. filesystem errors before the work ---------------------------------------------------------

def test_out_that_is_a_file_fails_before_any_work(tfc_build, tmp_path):
    """Item 5: `onebit build --out FILE`: one-line error at once, the file untouched."""
    target = tmp_path / "out.txt"
    target.write_text("mine")
    line = one_line_error(cli("hw.pipeline", tfc_build / "model.pt", "--out", target, "--no-progress"))
    assert "is a file" in line and target.read_text() == "mine"


def test_read_only_build_folder_fails_before_any_work(tfc_build, tmp_path, readonly):
    """Item 5: build into a read-only folder: one-line error before the FINN build, no zero-byte files."""
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        started = time.perf_counter()
        line = one_line_error(cli("hw.pipeline", tfc_build / "model.pt", "--out", out, "--no-progress", prefix=readonly))
        assert "not writable" in line and list(out.iterdir()) == []
        assert time.perf_counter() - started < 60
    finally:
        out.chmod(0o755)


def test_validate_on_a_read_only_build_fails_before_computing(finished, readonly):
    """Item 5: `onebit validate` on a read-only build: refused before the computation, not after it."""
    finished.chmod(0o555)
    try:
        line = one_line_error(cli("hw.check.validate", finished, "--limit", "10", "--no-progress", prefix=readonly))
        assert "not writable" in line
    finally:
        finished.chmod(0o755)


def test_training_into_a_folder_or_read_only_out_fails_before_training(tmp_path, readonly):
    """Item 5: `train --out DIR` or a read-only folder: one-line error before training, not a traceback after."""
    for out, message in ((tmp_path, "is a folder"), (tmp_path / "ro" / "model.pt", "not writable")):
        (tmp_path / "ro").mkdir(exist_ok=True)
        (tmp_path / "ro").chmod(0o555)
        try:
            run = cli("quant_models.train", "--model", "tfc", "--epochs", "1", "--limit-train", "100",
                      "--limit-test", "50", "--out", out, "--quiet", prefix=readonly)
        finally:
            (tmp_path / "ro").chmod(0o755)
        assert message in one_line_error(run) and "epoch" not in run.stdout + run.stderr


def test_disk_full_is_one_line_and_leaves_nothing_half_written(tfc_build, tmp_path, monkeypatch, capsys):
    """Item 5: the disk fills during the QONNX export: one-line error, no zero-byte model, no report.json."""
    import errno

    import export.qonnx
    from hw.pipeline import main as build_main
    from onebit.atomic import write_atomic

    def full_disk(plain, meta, path):
        def write(tmp):
            tmp.write_bytes(b"\0" * 10)
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
        return write_atomic(path, write)

    monkeypatch.setattr(export.qonnx, "export_qonnx", full_disk)
    out = tmp_path / "full"
    assert build_main([str(tfc_build / "model.pt"), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "free space" in err
    assert not (out / "model_qonnx.onnx").exists() and not (out / "report.json").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != MANIFEST] == []


# -- 8. the final model is never chosen by time -------------------------------------------------------

def test_touched_step_model_does_not_become_the_final_model(finished):
    """Item 8: `touch finn/step_specialize_layers.onnx`: validate still uses the build's last step's model."""
    from hw.check.accel_model import final_model_path

    report = json.loads((finished / "report.json").read_text())
    last = report["steps"]["run"][-1]
    future = time.time() + 3600
    os.utime(finished / "finn" / "step_specialize_layers.onnx", (future, future))
    assert final_model_path(finished) == finished / "finn" / f"{last}.onnx"
    (finished / "report.json").unlink()  # an unfinished build: the step order, still not the file time
    assert final_model_path(finished).name == f"{last}.onnx"


def test_hw_model_path_leaving_the_build_folder_is_refused(finished):
    """Item 9: io.json `hw_model: ../../..` is refused (host and driver), never read."""
    from hw.check.accel_model import final_model_path
    from hw.driver import DriverError, IOSpec
    from onebit.errors import OnebitError

    with pytest.raises(OnebitError, match="leaves the build folder"):
        final_model_path(finished, "../../../etc/passwd")
    data = json.loads((finished / "driver" / "io.json").read_text())
    data["hw_model"] = "../../secret.onnx"
    with pytest.raises(DriverError, match="stays inside"):
        IOSpec(data)


# -- 9. integrity ----------------------------------------------------------------------------------

def _board_main(deploy_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "validate_on_board.py"], cwd=deploy_dir, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("tamper", ["driver/io.json", "validation/validation_set.npz", "driver/packing.py",
                                    "driver/extra.py"])
def test_tampered_package_is_refused_on_board_and_host(finished, tamper):
    """Item 9: a changed deploy/ file (io.json, expected scores, driver code, an added module) is refused, not validated."""
    target = finished / "deploy" / tamper
    if tamper.endswith(".npz"):
        with np.load(target) as npz:
            data = {k: npz[k] for k in npz.files}
        data["scores"][0, 0] += 2
        np.savez_compressed(target, **data)
    elif tamper.endswith("extra.py"):
        target.write_text("print('not from the build')\n")
    else:
        target.write_text(target.read_text().replace("1", "2", 1))
    board = _board_main(finished / "deploy")
    assert board.returncode == 2 and Path(tamper).name in board.stderr, board.stderr
    assert "manifest.json" in board.stderr and "no bitstream" not in board.stderr  # stopped before anything ran
    line = one_line_error(cli("hw.check.validate", finished, "--limit", "10", "--backend", "model", "--no-progress"))
    assert Path(tamper).name in line


@pytest.mark.parametrize("change", ["finn model", "io.json", "no report.json"])
def test_changed_or_unfinished_build_is_not_validated(finished, change):
    """Item 9: `onebit validate` on an unfinished build or one whose files changed after the build: refused."""
    if change == "finn model":
        last = json.loads((finished / "report.json").read_text())["steps"]["run"][-1]
        with open(finished / "finn" / f"{last}.onnx", "ab") as handle:
            handle.write(b"\0")
        expected = f"{last}.onnx changed since the build"
    elif change == "io.json":
        io = finished / "driver" / "io.json"
        io.write_text(io.read_text().replace('"batch_size": ', '"batch_size": 1', 1))
        expected = "io.json changed since the build"
    else:
        (finished / "report.json").unlink()
        expected = "did not finish"
    line = one_line_error(cli("hw.check.validate", finished, "--limit", "10", "--backend", "model", "--no-progress"))
    assert expected in line


def test_intact_package_passes_the_board_check(finished):
    """Item 9: the untouched package passes the sha256 check (then stops only for the missing bitstream)."""
    board = _board_main(finished / "deploy")
    assert board.returncode == 2 and "no bitstream" in board.stderr
