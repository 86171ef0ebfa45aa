"""onebit.atomic: artifacts are complete or absent, and readable like any plainly written file."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from onebit.atomic import save_figure_atomic, write_atomic, write_text_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_file_has_the_mode_open_would_give(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = write_text_atomic(tmp_path / "report.json", "{}")
    assert atomic.read_text() == "{}" and _mode(atomic) == _mode(plain)  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt", "report.json"]


def test_failing_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = write_text_atomic(tmp_path / "model.pt", "old")

    def half_write(tmp: Path) -> None:
        tmp.write_text("ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, half_write)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["model.pt"]


def test_figure_format_follows_the_suffix(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = save_figure_atomic(fig, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not plt.get_fignums()
