"""Progress for long work: a tqdm bar on a terminal, plain periodic lines anywhere else.

Why not tqdm alone: off a terminal (`make demo > log`, CI, a notebook's captured output) tqdm still redraws
with carriage returns and cursor-up escapes, so a log file fills with hundreds of kilobytes of redraws for a
few dozen useful lines. tqdm's own `disable=None` (bars only on a TTY) leaves a log with no progress at all;
a plain line every `PLAIN_INTERVAL_S` seconds (and at the end) is what a person reading the log wants.

`bar(...)` takes the tqdm arguments onebit uses (iterable or total, desc, unit, leave) and returns an object
with tqdm's iteration, `update`, `set_postfix_str`, `set_postfix`, `close` and context-manager API.
`enabled=False` (`--no-progress`) prints nothing at all, on a terminal too. `ONEBIT_PROGRESS=plain|bar|off`
forces one form (tests, or a terminal recording).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator, TextIO

PLAIN_INTERVAL_S = 30.0
_FORMS = ("bar", "plain", "off")


def _form(file: TextIO, enabled: bool) -> str:
    if not enabled:
        return "off"
    forced = os.environ.get("ONEBIT_PROGRESS", "").strip().lower()
    if forced in _FORMS:
        return forced
    try:
        return "bar" if file.isatty() else "plain"
    except (AttributeError, ValueError):  # a closed or exotic stream: no redraws into it
        return "plain"


class PlainProgress:
    """tqdm's interface, written as one plain line per interval (and one at the end if anything moved)."""

    def __init__(self, iterable: Iterable[Any] | None, total: int | None, desc: str, unit: str, file: TextIO,
                 quiet: bool, interval_s: float) -> None:
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total, self.desc, self.unit, self.file = total, desc, unit, file
        self.quiet, self.interval_s = quiet, interval_s
        self.n = 0
        self.postfix = ""
        self.started = self.last_line = time.monotonic()
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.quiet and now - self.last_line >= self.interval_s:
            self.last_line = now
            self._line(now)

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{key}={value}" for key, value in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def write(self, text: str, file: TextIO | None = None) -> None:
        print(text, file=file or self.file, flush=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # One closing line when the work lasted long enough to have shown progress lines: a log then says
        # when each long stage ended; short stages stay silent.
        if not self.quiet and self.n and time.monotonic() - self.started >= self.interval_s:
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        percent = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done} {self.unit}{percent}, {now - self.started:.0f} s{postfix}", file=self.file,
              flush=True)


def bar(iterable: Iterable[Any] | None = None, *, desc: str = "", total: int | None = None, unit: str = "it",
        enabled: bool = True, leave: bool = False, file: TextIO | None = None,
        interval_s: float = PLAIN_INTERVAL_S) -> Any:
    """A progress bar on a terminal, plain lines in a log, nothing with `enabled=False`."""
    stream = file if file is not None else sys.stderr
    form = _form(stream, enabled)
    if form == "bar":
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, file=stream)
    return PlainProgress(iterable, total, desc, unit, stream, quiet=form == "off", interval_s=interval_s)


def write(text: str, file: TextIO | None = None) -> None:
    """A line that does not tear a bar on a terminal (tqdm.write) and is a plain line elsewhere."""
    stream = file if file is not None else sys.stderr
    if _form(stream, True) == "bar":
        from tqdm import tqdm

        tqdm.write(text, file=stream)
    else:
        print(text, file=stream, flush=True)
