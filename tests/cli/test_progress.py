"""Progress output: bars only on a terminal, plain lines in a log file, nothing with --no-progress (issue 24)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onebit import progress

ROOT = Path(__file__).resolve().parents[2]
REDRAWS = ("\r", "\x1b[")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_progress_is_plain_lines(monkeypatch):
    monkeypatch.delenv("ONEBIT_PROGRESS", raising=False)
    log = io.StringIO()
    with progress.bar(total=4, desc="FINN build", unit="step", file=log, interval_s=0.0) as bar:
        for _ in range(4):
            bar.update(1)
    text = log.getvalue()
    assert not any(code in text for code in REDRAWS), repr(text)
    lines = text.splitlines()
    assert lines[0].startswith("FINN build: 1/4 step (25 %)"), lines
    assert lines[-1].startswith("FINN build: 4/4 step (100 %)"), lines


def test_plain_lines_are_periodic_not_per_item(monkeypatch):
    monkeypatch.delenv("ONEBIT_PROGRESS", raising=False)
    log = io.StringIO()
    items = list(progress.bar(range(1000), desc="verify", unit="img", file=log))
    assert items == list(range(1000))
    assert log.getvalue() == ""  # well under the 30 s interval: a short stage writes nothing


def test_a_terminal_gets_a_bar_and_no_progress_silences_it(monkeypatch):
    monkeypatch.delenv("ONEBIT_PROGRESS", raising=False)
    terminal = _Terminal()
    list(progress.bar(range(50), desc="epoch 1/1", unit="batch", file=terminal, leave=True))
    assert "\r" in terminal.getvalue() and "epoch 1/1" in terminal.getvalue()
    silent = _Terminal()
    with progress.bar(total=3, desc="x", file=silent, enabled=False, interval_s=0.0) as bar:
        bar.update(3)
    assert silent.getvalue() == ""


def test_train_into_a_file_writes_no_redraws(tmp_path):
    """A real training run with stderr and stdout into a file, as `make demo > log 2>&1` does."""
    log = tmp_path / "train.log"
    env = {k: v for k, v in os.environ.items() if k != "ONEBIT_PROGRESS"}
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, "-m", "quant_models.train", "--model", "tfc", "--epochs", "2",
                                "--limit-train", "300", "--limit-test", "100", "--out", str(tmp_path / "m.pt")],
                               cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    text = log.read_text()
    assert code == 0, text
    assert not any(code in text for code in REDRAWS), repr(text[:2000])
    assert "epoch 1/2: loss" in text and "epoch 2/2: loss" in text


def test_train_no_progress_on_a_terminal_prints_no_bar(tmp_path):
    pytest.importorskip("pty")
    import pty

    env = {k: v for k, v in os.environ.items() if k != "ONEBIT_PROGRESS"}
    argv = [sys.executable, "-m", "quant_models.train", "--model", "tfc", "--epochs", "1", "--limit-train",
            "300", "--limit-test", "100", "--out", str(tmp_path / "m.pt"), "--no-progress"]
    chunks: list[bytes] = []

    def read(fd: int) -> bytes:
        data = os.read(fd, 4096)
        chunks.append(data)
        return data

    old = os.getcwd()
    os.chdir(ROOT)
    try:
        saved_env = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            status = pty.spawn(argv, read)
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
    finally:
        os.chdir(old)
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "epoch 1/1: loss" in text
    assert "\r" not in text and "batch/s" not in text and "it/s" not in text, repr(text[:2000])
