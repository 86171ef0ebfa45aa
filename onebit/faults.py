"""Fault injection for the reliability tests: `ONEBIT_FAULT=<point>:<SIGNAL>[,...]` kills the process there.

Long commands call `point("build:after_finn")` etc. at the moments where an interruption is most
harmful (tests/test_reliability_faults.py lists them). Unset (always, outside the tests) a point costs
one environment lookup and does nothing. SIGKILL is the power cut (nothing runs after it), SIGINT the
user's Ctrl-C (the command's cleanup runs).
"""
from __future__ import annotations

import os
import signal

ENV = "ONEBIT_FAULT"


def point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        where, _, signame = item.strip().rpartition(":")
        if where == name:
            # Python runs the SIGINT handler (KeyboardInterrupt) at the next bytecode, i.e. right here
            os.kill(os.getpid(), getattr(signal, signame or "SIGKILL"))
