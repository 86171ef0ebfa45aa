"""`onebit validate`: report, artifacts, exit codes, and clear errors for broken build folders."""
from __future__ import annotations

import json
import shutil

import pytest

from hw.check.validate import main, validate_build
from onebit.errors import OnebitError


def test_validate_reports_and_writes_artifacts(tfc_build, capsys):
    assert main([str(tfc_build), "--limit", "500", "--backend", "model", "--cppsim"]) == 0
    out = capsys.readouterr().out
    assert "accelerator model" in out and "mismatches: 0" in out and "cppsim: skipped" in out
    report = json.loads((tfc_build / "validation" / "validation.json").read_text())
    assert report["samples"] == 500 and report["mismatches"] == 0
    assert report["software_accuracy"] == report["accelerator_accuracy"]
    assert sum(map(sum, report["confusion_matrix"])) == 500
    assert (tfc_build / "validation" / "confusion.png").stat().st_size > 1000
    assert not (tfc_build / "validation" / "confusion_matrix.png").exists()  # one confusion plot, not two


@pytest.mark.parametrize("missing,message", [("driver/io.json", "no driver/io.json"), ("model.pt", "no model.pt")])
def test_broken_build_folder_is_a_one_line_error(tfc_build, tmp_path, capsys, missing, message):
    broken = tmp_path / "build"
    shutil.copytree(tfc_build, broken, ignore=shutil.ignore_patterns("hw", "finn"))
    (broken / missing).unlink()
    with pytest.raises(OnebitError, match=message):
        validate_build(broken, limit=10, backend="model", progress=False)
    assert main([str(broken), "--limit", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onebit: ") and message in err and err.count("\n") == 1


def test_missing_build_folder_and_off_board_backend(tmp_path, tfc_build, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "no such build folder" in capsys.readouterr().err
    assert main([str(tfc_build), "--limit", "10", "--backend", "board"]) == 2
    assert "backend='model'" in capsys.readouterr().err
