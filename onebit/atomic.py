"""Atomic file writes, for every stage: an artifact is either complete or absent, never half-written.

A writer fills a hidden temporary file beside the target, which then replaces the target in one rename;
if the writer fails, the temporary is removed and the old target (if any) is untouched. The temporary is
made by `tempfile.mkstemp` (mode 0600), so it gets the mode a plain `open` would give the file before the
rename: build folders and results stay readable by other users and containers. Its name carries the
writer's pid (`.<name>.<pid>.<random>.tmp<suffix>`) and it is recorded in a journal (onebit/temporaries.py),
so a temporary left by a killed process is removed by the next run, and nothing that only looks like one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from onebit import faults, temporaries


def set_default_permissions(path: str | os.PathLike) -> None:
    """Give a file made by `tempfile.mkstemp` the mode (0666 & ~umask) a plain `open` would give it."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` to fill a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    # the target's suffix is kept last, so writers that infer a format from it (matplotlib) still can; the
    # pid in the name lets the next run remove what a killed one left (onebit/buildfolder.py)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=f".tmp{path.suffix}",
                                   dir=path.parent)
    os.close(handle)
    try:
        temporaries.note(tmp)  # only a recorded temporary is ever removed as a killed run's (issue 23)
        write(Path(tmp))
        set_default_permissions(tmp)
        faults.point(f"atomic:{path.name}")  # reliability tests: a kill with the temporary written
        os.replace(tmp, path)
    except OSError as error:  # the user knows the target, not the hidden temporary: name the target
        if error.filename2 == tmp:
            error.filename2 = str(path)
        elif error.filename == tmp:
            error.filename = str(path)
        raise
    finally:
        Path(tmp).unlink(missing_ok=True)
        temporaries.forget(tmp)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def save_figure_atomic(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(fig)
