"""Issue 12, fault injection: build, deploy and training killed (SIGKILL) or interrupted (SIGINT) at the
moments where it hurts most, through `ONEBIT_FAULT=<point>:<signal>` (onebit/faults.py).

After every kill: either a complete build folder that validates, or none marked finished (no report.json);
after the next run: no orphan temporaries, no lock left, no user file lost.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from onebit.buildfolder import LOCK, TEMPORARY_PATTERNS
from reliability_helpers import cli

pytestmark = pytest.mark.slow


def _temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*")
                  if any(pattern.match(p.name) for pattern in TEMPORARY_PATTERNS))


def _sha(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _killed(run, signal_name: str) -> None:
    expected = -9 if signal_name == "SIGKILL" else 130
    assert run.returncode == expected, (run.returncode, run.stderr[-2000:])


def test_build_killed_at_every_stage_is_never_marked_finished_and_recovers(tfc_build, tmp_path):
    """Faults: `onebit build` SIGKILLed mid-write and mid-packaging, SIGINTed after the export: never finished, then a clean rebuild validates."""
    out = tmp_path / "build"
    out.mkdir()
    (out / "NOTES.txt").write_text("the user's notes\n")
    model = tfc_build / "model.pt"
    args = [model, "--out", out, "--verify-samples", "20", "--no-progress"]

    # 1. power cut while the QONNX model is being written: its temporary is left, nothing is finished
    _killed(cli("hw.pipeline", *args, env={"ONEBIT_FAULT": "atomic:model_qonnx.onnx:SIGKILL"}), "SIGKILL")
    assert not (out / "report.json").exists() and not (out / "model_qonnx.onnx").exists()
    assert any("model_qonnx.onnx" in t for t in _temporaries(out)) and (out / LOCK).exists()

    # 2. power cut in the middle of packaging (deploy/ being swapped in): still not finished
    _killed(cli("hw.pipeline", *args, env={"ONEBIT_FAULT": "deploy:before_swap:SIGKILL"}), "SIGKILL")
    assert not (out / "report.json").exists()
    left = _temporaries(out)
    assert any(t.startswith(".deploy.tmp-") for t in left) and not any("model_qonnx" in t for t in left)

    # 3. Ctrl-C right after the export: exit 130, the stale temporaries of run 2 are gone, nothing finished
    _killed(cli("hw.pipeline", *args, env={"ONEBIT_FAULT": "build:after_qonnx:SIGINT"}), "SIGINT")
    assert not (out / "report.json").exists() and _temporaries(out) == [] and not (out / LOCK).exists()
    assert not (out / "deploy").exists()

    # 4. the next run: a complete build folder that validates; no litter, no lock; the user's file is there
    done = cli("hw.pipeline", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "report.json").is_file() and (out / "deploy" / "manifest.json").is_file()
    assert _temporaries(out) == [] and not (out / LOCK).exists()
    assert (out / "NOTES.txt").read_text() == "the user's notes\n"
    report = json.loads((out / "report.json").read_text())
    assert report["deploy"]["manifest_sha256"] and report["integrity"]
    check = cli("hw.check.validate", out, "--limit", "20", "--backend", "model", "--no-progress")
    assert check.returncode == 0, check.stderr[-2000:]


def test_repackaging_killed_keeps_the_finished_build_valid(finished):
    """Faults: `python -m hw.deploy` interrupted while computing, killed before the swap and while recording: the build stays valid or is refused, never misreported."""
    def deploy(fault=None):
        return cli("hw.deploy", finished, "--samples", "10", "--no-progress",
                   env={"ONEBIT_FAULT": fault} if fault else None)

    def validate():
        return cli("hw.check.validate", finished, "--limit", "10", "--backend", "model", "--no-progress")

    before = _sha(finished)
    _killed(deploy("deploy:after_validation_set:SIGINT"), "SIGINT")   # Ctrl-C: cleanup runs
    assert _temporaries(finished) == [] and not (finished / LOCK).exists()
    _killed(deploy("deploy:before_swap:SIGKILL"), "SIGKILL")           # power cut: litter, a stale lock
    after = _sha(finished)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k) and not re.match(r"^\.|.*/\.", k)}
    assert changed == set(), changed  # the old package and the report untouched
    check = validate()  # takes the dead run's lock over, removes its temporaries, validates
    assert check.returncode == 0, check.stderr[-2000:]
    assert _temporaries(finished) == [] and not (finished / LOCK).exists()
    # killed after the new package was swapped in, before report.json recorded it: the pair is refused
    _killed(deploy("atomic:report.json:SIGKILL"), "SIGKILL")
    check = validate()
    assert check.returncode == 2 and "manifest.json differs" in check.stderr, check.stderr[-2000:]
    again = deploy()  # the next repackaging makes it consistent again
    assert again.returncode == 0, again.stderr[-2000:]
    assert _temporaries(finished) == [] and not (finished / LOCK).exists()
    assert validate().returncode == 0


def test_training_killed_while_saving_keeps_the_old_model(tmp_path):
    """Faults: training killed while writing model.pt, or interrupted just before: the old model.pt stays; no litter after the next run."""
    out = tmp_path / "model.pt"
    out.write_bytes(b"the old model")
    args = ["--model", "tfc", "--epochs", "1", "--limit-train", "200", "--limit-test", "50", "--out", out, "--quiet"]
    _killed(cli("quant_models.train", *args, env={"ONEBIT_FAULT": "atomic:model.pt:SIGKILL"}), "SIGKILL")
    assert out.read_bytes() == b"the old model" and len(_temporaries(tmp_path)) == 1
    _killed(cli("quant_models.train", *args, env={"ONEBIT_FAULT": "train:before_save:SIGINT"}), "SIGINT")
    assert out.read_bytes() == b"the old model"
    done = cli("quant_models.train", *args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_bytes() != b"the old model" and _temporaries(tmp_path) == []
