"""Issue 23: a third round of attacks (nothing of the user's deleted, no code run from a model file, no input
that exhausts the machine, no silent corruption, one line instead of a traceback).

Each test replays one attack; its docstring's first line says which (bench/reliability.py turns them into
bench/results/reliability.md). Unit-level replays where they show the same as a full command; commands run
in a fresh process (exit code and stderr as a user sees them) on the session's one TFC build.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onebit.buildfolder import LOCK, BuildFolder
from reliability_helpers import REPO, cli, one_line_error


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) -> sha256 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _user_lookalikes(folder: Path) -> list[Path]:
    """The user's files whose names look like onebit's temporaries (issue 23 item 1's reproduction)."""
    dead = _dead_pid()
    files = {folder / ".photos.tmp-4242" / "a.jpg": b"x\n",
             folder / "notes" / ".thesis.tex.old-20240101": b"\\documentclass{article}\n",
             folder / "mynotes" / ".experiment-log.txt.old-20241231": b"run 7: 91.2 %\n",
             folder / f".deploy.tmp-{dead}" / "mine.txt": b"mine\n",
             folder / f".model.pt.{dead}.abcdefgh.tmp.pt": b"an old checkpoint of mine\n",
             folder / f".onebit-probe-{dead}": b"probe?\n",
             folder / ".cache.old-99999999999": b"huge pid\n"}
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return list(files)


# -- 1. data loss: only recorded temporaries are removed ---------------------------------------------------

def test_cleanup_keeps_user_files_that_look_like_temporaries(tmp_path):
    """Issue 23 item 1: opening a folder holding `.photos.tmp-4242/`, `.thesis.tex.old-…`, `.cache.old-99999999999`: all kept byte for byte."""
    folder = tmp_path / "d"
    _user_lookalikes(folder)
    before = _tree(folder)
    with BuildFolder(folder, "test") as held:
        assert held.clean_stale_temporaries() == []
    assert _tree(folder) == before


def test_build_refused_for_report_md_keeps_the_lookalike_folders(tfc_build, tmp_path):
    """Issue 23 item 1: `onebit build --out d` with d/report.md and d/.photos.tmp-4242/a.jpg: exit 2, every user file kept byte for byte."""
    out = tmp_path / "d"
    _user_lookalikes(out)
    (out / "report.md").write_text("my report\n")
    before = _tree(out)
    line = one_line_error(cli("hw.pipeline", tfc_build / "model.pt", "--out", out, "--no-progress"))
    assert "report.md" in line
    assert _tree(out) == before


def test_validate_keeps_user_notes_inside_the_build(finished):
    """Issue 23 item 1: `onebit validate BUILD` with BUILD/mynotes/.experiment-log.txt.old-20241231: exit 0, the notes kept byte for byte."""
    user = _user_lookalikes(finished)
    before = {p: p.read_bytes() for p in user}
    done = cli("hw.check.validate", finished, "--limit", "10", "--backend", "model", "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p: p.read_bytes() for p in user} == before


def test_train_keeps_a_lookalike_checkpoint_temporary(tmp_path):
    """Issue 23 item 1 (sibling): `train --out d/model.pt` beside the user's `.model.pt.<pid>.abcdefgh.tmp.pt`: kept."""
    from quant_models.train import _check_writable

    user = _user_lookalikes(tmp_path)
    before = {p: p.read_bytes() for p in user}
    _check_writable(tmp_path / "model.pt")
    assert {p: p.read_bytes() for p in user} == before
    assert not (tmp_path / ".onebit-temporaries").exists()  # no journal left in the user's folder


def test_recorded_temporary_of_a_killed_writer_is_removed(tmp_path):
    """Issue 23 item 1: what onebit recorded still goes: a write SIGKILLed mid-way leaves a temporary the next open removes."""
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "mine.txt").write_text("mine\n")
    script = ("import sys; from onebit.buildfolder import BuildFolder; from onebit.atomic import write_text_atomic\n"
              "with BuildFolder(sys.argv[1], 'test') as f:\n    write_text_atomic(f.path / 'sub' / 'r.json', '{}')\n")
    (folder / "sub").mkdir()
    killed = subprocess.run([sys.executable, "-c", script, str(folder)], cwd=REPO, capture_output=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO), ONEBIT_FAULT="atomic:r.json:SIGKILL"))
    assert killed.returncode == -9, killed.stderr
    left = [p for p in (folder / "sub").iterdir() if p.name.startswith(".r.json.")]
    assert len(left) == 1
    with BuildFolder(folder, "test") as held:
        pass
    assert not left[0].exists() and (folder / "mine.txt").read_text() == "mine\n"
    assert not (folder / ".onebit-temporaries").exists() and not (folder / LOCK).exists()


def test_edited_journal_cannot_point_at_user_files(tmp_path):
    """Issue 23 item 1 (sibling): a journal edited to name report.md, `../x` or a reused pid's live temporary: only the dead writer's temporary goes."""
    from onebit.temporaries import JOURNAL, clean, start_time

    dead, alive = _dead_pid(), os.getpid()
    (tmp_path / "b").mkdir()
    (tmp_path / "x").write_text("outside\n")
    (tmp_path / "b" / "report.md").write_text("mine\n")
    reused = tmp_path / "b" / f".deploy.tmp-{alive}"  # our pid, but recorded by an earlier process (container)
    reused.mkdir()
    live = tmp_path / "b" / f".report.json.{alive}.abcdefgh.tmp.json"
    live.write_text("{}")
    entries = [{"pid": dead, "start": None, "path": "report.md"}, {"pid": dead, "start": None, "path": "../x"},
               {"pid": alive, "start": "1", "path": reused.name},
               {"pid": alive, "start": start_time(alive), "path": live.name}]
    (tmp_path / "b" / JOURNAL).write_text("".join(json.dumps(e) + "\n" for e in entries) + "garbage\n")
    assert clean(tmp_path / "b") == [reused]
    assert (tmp_path / "b" / "report.md").read_text() == "mine\n" and (tmp_path / "x").read_text() == "outside\n"
    assert live.exists()


def test_lock_with_an_impossible_pid_is_stale_not_a_traceback(finished):
    """Issue 23 item 11: a lock (or temporary) with pid 99999999999: taken over, no OverflowError."""
    (finished / LOCK).write_text(json.dumps({"pid": 99999999999, "command": "onebit build"}))
    done = cli("hw.check.validate", finished, "--limit", "5", "--backend", "model", "--no-progress")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not (finished / LOCK).exists()
