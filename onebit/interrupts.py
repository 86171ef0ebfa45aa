"""Ctrl-C that cannot be lost: a SIGINT handler that remembers the interrupt as well as raising it.

Why: some libraries imported at start-up catch every exception while importing optional parts (a bare
`except:` in an import-time probe), which swallows the KeyboardInterrupt raised there; measured: SIGINT
about 7 s into `python -m quant_models.train` (while torch/Brevitas import) was lost and training ran to
the end, overwriting model.pt with exit status 0. With `install()` at the top of a command, the
interrupt is recorded in a flag when it arrives and `check()` (called after the imports and between
steps of long work) raises it again, so the command stops and writes nothing.
"""
from __future__ import annotations

import signal
import threading

_received = False


def _handler(signum, frame) -> None:  # noqa: ANN001
    global _received
    _received = True
    raise KeyboardInterrupt


def install() -> None:
    """Use the remembering handler for SIGINT (main thread only; a SIGINT the parent ignores stays ignored)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _handler):
        signal.signal(signal.SIGINT, _handler)


def received() -> bool:
    return _received


def check() -> None:
    """Raise KeyboardInterrupt if a SIGINT arrived since `install()`, even if something swallowed it."""
    if _received:
        raise KeyboardInterrupt
