"""The command line and the reports without rough edges (issue 24): what a new user types and reads."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from onebit import __version__
from onebit.cli import main as onebit_main

ROOT = Path(__file__).resolve().parents[2]


def test_version(capsys):
    assert onebit_main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"onebit {__version__}"
    toml = (ROOT / "pyproject.toml").read_text()
    assert 'version = {attr = "onebit.__version__"}' in toml  # one place for the version


def test_usage_names_the_command_typed():
    typed = subprocess.run([sys.executable, "-m", "onebit", "train", "--help"], cwd=ROOT, capture_output=True,
                           text=True)
    assert typed.returncode == 0 and typed.stdout.startswith("usage: onebit train"), typed.stdout[:200]
    direct = subprocess.run([sys.executable, "-m", "quant_models.train", "--help"], cwd=ROOT, capture_output=True,
                            text=True)
    assert direct.stdout.startswith("usage: python -m quant_models.train"), direct.stdout[:200]


def test_export_is_build(capsys):
    from onebit.cli import SUBCOMMANDS

    assert SUBCOMMANDS["export"][0] == SUBCOMMANDS["build"][0] == "hw.pipeline"
    assert "alias" in SUBCOMMANDS["export"][1]


def test_unknown_names_suggest_the_closest(capsys):
    from hw.boards import BOARDS, get_board
    from onebit.errors import OnebitError

    with pytest.raises(OnebitError, match="did you mean Pynq-Z2"):
        get_board("pynq-z3")
    assert onebit_main(["trian"]) == 2
    assert "did you mean 'train'" in capsys.readouterr().err
    helptext = subprocess.run([sys.executable, "-m", "onebit", "build", "--help"], cwd=ROOT, capture_output=True,
                              text=True).stdout
    assert all(name in " ".join(helptext.split()) for name in BOARDS)


def test_validate_lists_every_level_and_refuses_a_file(tmp_path, capsys):
    from hw.check.levels import LEVEL_MODULES
    from hw.check.validate import LEVEL_HELP
    from hw.check.validate import main as validate_main

    assert set(LEVEL_HELP) == set(LEVEL_MODULES)
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not a folder")
    assert validate_main([str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a build folder" in err and "onebit build" in err and "Traceback" not in err


def test_build_report_and_log_read_well(tfc_build: Path):
    report = json.loads((tfc_build / "report.json").read_text())
    markdown = (tfc_build / "report.md").read_text()
    # artifact paths relative to the build folder: a build folder is what a user carries around
    artifacts = markdown[markdown.index("## Artifacts"):]
    assert str(tfc_build) not in artifacts and "- qonnx: model_qonnx.onnx" in artifacts
    # each missing tool said once, with the steps that need it
    skipped = markdown[markdown.index("## Skipped FINN steps"):markdown.index("## Artifacts")]
    if any("Vivado (no" in s["missing"] for s in report["skipped_steps"]):
        assert skipped.count("missing Vivado (") == 1, skipped
    # one latency figure: the auto-fold report and the build report agree
    autofold = json.loads((tfc_build / "autofold_report.json").read_text())
    assert report["estimate"]["latency_cycles"] == autofold["critical_path_cycles"]
    assert "(UINT" not in markdown and "words on the stream" in markdown
    # onebit's own messages in the build log, beside FINN's
    log = (tfc_build / "build.log").read_text()
    assert f"[onebit.build] INFO: onebit {__version__} build of" in log
    assert "[onebit] INFO: first divergent level:" in log
    assert "\r" not in log
