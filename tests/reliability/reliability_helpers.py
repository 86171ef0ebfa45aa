"""Helpers of the reliability tests (issue 12): CLI runs in a fresh process (signals, exit codes and stderr
exactly as a user sees them) and a read-only folder even for root (setpriv drops CAP_DAC_OVERRIDE)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli(module: str, *args: str, env: dict | None = None, prefix: list[str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m module args` from the repository root, as a user runs it; returns the finished process."""
    full_env = {k: v for k, v in os.environ.items() if k != "ONEBIT_FAULT"}
    full_env.update(PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([*(prefix or []), sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=default_sigint)


def default_sigint() -> None:
    """In the child: Ctrl-C acts as for a user at a terminal, even when the tests run as a background job
    (whose children inherit an ignored SIGINT; Python would keep ignoring it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def unprivileged_prefix() -> list[str] | None:
    """Command prefix under which a mode-0555 folder is read-only: none needed for a normal user; root
    without CAP_DAC_OVERRIDE (setpriv); None where neither works."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def one_line_error(process: subprocess.CompletedProcess) -> str:
    """stderr's last line, after checking it is a one-line onebit error with exit status 2."""
    assert process.returncode == 2, (process.returncode, process.stdout[-2000:], process.stderr[-2000:])
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("onebit: ") and "Traceback" not in process.stderr, process.stderr[-2000:]
    return lines[-1]
