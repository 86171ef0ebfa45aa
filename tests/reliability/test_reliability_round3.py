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


# -- 2. no code run from a model file --------------------------------------------------------------------

EVIL = "import pathlib\npathlib.Path(__file__).with_name('RAN.txt').write_text('the module ran')\n"


def _evil_onnx(path: Path, where: str = "graph") -> None:
    """A one-node model whose node is in domain `onebit_evil_ops` (main graph, If branch or function)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 28, 28])
    evil = helper.make_node("Pwn", ["x"], ["y"], name="evil_0", domain="onebit_evil_ops")
    if where == "if":
        branch = helper.make_graph([evil], "branch", [], [y])
        cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
        node = helper.make_node("If", ["c"], ["y"], name="if_0", then_branch=branch, else_branch=branch)
        graph = helper.make_graph([node], "g", [cond, x], [y])
    else:
        graph = helper.make_graph([evil], "g", [x], [y])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    path.with_name("onebit_evil_ops.py").write_text(EVIL)


def test_model_onnx_with_a_foreign_domain_never_imports_it(tmp_path):
    """Issue 23 item 2: `python -m onebit build model.onnx` beside onebit_evil_ops.py (its node's domain): refused naming the node, the module never ran."""
    _evil_onnx(tmp_path / "model.onnx")
    env = {k: v for k, v in os.environ.items() if k != "ONEBIT_FAULT"}
    done = subprocess.run([sys.executable, "-m", "onebit", "build", "model.onnx", "--input-scale", "1",
                           "--input-shape", "1,28,28", "--dataset", "fashion-mnist", "--out", "b", "--no-progress"],
                          cwd=tmp_path, env=dict(env, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    line = one_line_error(done)
    assert "evil_0" in line and "onebit_evil_ops" in line
    assert not (tmp_path / "RAN.txt").exists() and not (tmp_path / "__pycache__").exists()


@pytest.mark.parametrize("where", ["graph", "if"])
def test_domain_check_reads_subgraphs_without_importing(tmp_path, where):
    """Issue 23 item 2 (sibling): a foreign domain in the main graph or an If branch: refused by the protobuf-only check, nothing imported."""
    from export.onnx_domains import UnsupportedDomain, check_domains
    from export.qonnx_import import load_clean

    _evil_onnx(tmp_path / "model.onnx", where)
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(UnsupportedDomain, match="evil_0"):
            check_domains(tmp_path / "model.onnx")
        with pytest.raises(UnsupportedDomain, match="onebit_evil_ops"):
            load_clean(tmp_path / "model.onnx")  # the import front door checks first
    finally:
        sys.path.remove(str(tmp_path))
    assert "onebit_evil_ops" not in sys.modules and not (tmp_path / "RAN.txt").exists()


def _rerecord(build: Path) -> None:
    """What a hostile build folder looks like: its integrity record made to match its (changed) files."""
    from hw.check.finished import build_integrity

    report = json.loads((build / "report.json").read_text())
    report["integrity"] = build_integrity(build)
    (build / "report.json").write_text(json.dumps(report, indent=2))


def test_validate_of_a_build_with_a_foreign_domain_never_imports_it(finished):
    """Issue 23 item 2 (sibling): `onebit validate .` in a build folder whose finn/*.onnx names a domain module lying beside it: refused, never run."""
    import onnx

    graphs = sorted((finished / "finn").glob("*.onnx"))
    model = onnx.load(str(graphs[-1]))
    model.graph.node[0].domain = "onebit_evil_ops"
    onnx.save(model, str(graphs[-1]))
    (finished / "onebit_evil_ops.py").write_text(EVIL)
    _rerecord(finished)
    env = {k: v for k, v in os.environ.items() if k != "ONEBIT_FAULT"}
    done = subprocess.run([sys.executable, "-m", "onebit", "validate", ".", "--limit", "5", "--no-progress"],
                          cwd=finished, env=dict(env, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    line = one_line_error(done)
    assert "onebit_evil_ops" in line and graphs[-1].name in line
    assert not (finished / "RAN.txt").exists()
