"""onebit's messages through `logging`: on the console as plain lines, and in the build folder's log.

Every stage logs to `logging.getLogger("onebit.<stage>")` (`get_logger`). `say(text)` is for the lines a
person reads on the console (the build summary, what was written where): it prints them and records them in
the log. `build_log(path)` adds the build folder's log file (build.log, beside FINN's own lines) for the
duration of a build, so the file tells the whole story with timestamps; `configure_console(verbose)` shows
debug messages on the console with `onebit -v`. Ground module: imports nothing of the project.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator

ROOT = "onebit"
_PRINTED = "onebit_printed"  # a record whose text say() already printed: the console handler skips it


def get_logger(name: str) -> logging.Logger:
    """The logger of one stage, under onebit's root logger (`onebit.<name>`)."""
    return logging.getLogger(f"{ROOT}.{name}" if name and name != ROOT else ROOT)


class _ConsoleHandler(logging.Handler):
    """Writes to the current sys.stderr at emit time (pytest's capture and redirect_stderr swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, _PRINTED, False):
            return
        try:
            print(f"onebit: {self.format(record)}", file=sys.stderr, flush=True)
        except Exception:  # a closed stream must not turn a log line into a crash
            self.handleError(record)


def _root() -> logging.Logger:
    logger = logging.getLogger(ROOT)
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        handler = _ConsoleHandler(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)  # handlers decide what they show
        logger.propagate = False
    return logger


def configure_console(verbose: bool = False) -> None:
    """Warnings on the console always, debug and info messages too with `verbose` (`onebit -v`)."""
    for handler in _root().handlers:
        if isinstance(handler, _ConsoleHandler):
            handler.setLevel(logging.DEBUG if verbose else logging.WARNING)


def say(text: str, logger: logging.Logger | None = None) -> None:
    """A line for the person at the console (stdout), recorded in the build log as well."""
    print(text, flush=True)
    _root()
    for line in text.splitlines() or [""]:
        (logger or logging.getLogger(ROOT)).info(line, extra={_PRINTED: True})


@contextlib.contextmanager
def build_log(path: str | Path) -> Iterator[logging.Handler]:
    """onebit's messages (every level, timestamped) appended to `path` while the block runs."""
    logger = _root()
    handler = logging.FileHandler(path, mode="a", encoding="utf-8", delay=True)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(name)s] %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        handler.close()
