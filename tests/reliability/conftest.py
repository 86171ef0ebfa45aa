"""Fixtures of the reliability tests (issue 12)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # reliability_helpers, in any pytest import mode
from reliability_helpers import unprivileged_prefix  # noqa: E402


@pytest.fixture
def finished(tfc_build, tmp_path) -> Path:
    """A private copy of the session's finished TFC build (report.json, integrity record, deploy/)."""
    copy = tmp_path / "build"
    shutil.copytree(tfc_build, copy, ignore=shutil.ignore_patterns("hw", "intermediate_models"))
    return copy


@pytest.fixture
def readonly() -> list[str]:
    """The command prefix under which a mode-0555 folder is read-only (see reliability_helpers)."""
    prefix = unprivileged_prefix()
    if prefix is None:
        pytest.skip("running as root without setpriv: cannot make a folder read-only")
    return prefix
