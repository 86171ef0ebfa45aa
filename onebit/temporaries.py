"""The temporaries onebit made, recorded, so that a dead run's litter is removed and nothing else ever is.

Every hidden temporary onebit creates (onebit/atomic.py's files, hw/deploy.py's folder and zip, the
writability probe) is appended to a journal, `.onebit-temporaries`, right after its creation: its path, its
writer's pid and that process' start time (a pid alone is reused, by every fresh container in particular).
The journal lies in the build folder this process holds (`hold`), else beside the temporary, and is removed
again when its last entry is. `clean(folder)` removes the listed temporaries whose writer no longer runs.

A file or folder that merely looks like a temporary (`.photos.tmp-4242`, `.thesis.tex.old-20240101`) is
the user's: it is in no journal, and no name pattern alone ever makes onebit remove anything (issue 23).
The name patterns stay as a second check, so an edited journal cannot point `clean` at report.md.
A leaf module: imports nothing of onebit.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

JOURNAL = ".onebit-temporaries"
# The names of onebit's temporaries, each with the pid of its writer.
TEMPORARY_PATTERNS = (
    re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]{8}\.tmp"),  # onebit/atomic.py write_atomic
    re.compile(r"^\.(?P<target>.+)\.(?:tmp|old)-(?P<pid>\d+)$"),            # hw/deploy.py's folder and zip
    re.compile(r"^\.onebit-probe-(?P<pid>\d+)(?:-[A-Za-z0-9_]+)?$"),      # writability probe
)
_held: list[Path] = []  # build folders this process holds (onebit/buildfolder.py): their journal is the root's


def pid_alive(pid: int) -> bool:
    """True when process `pid` runs on this machine (a zombie, killed but not yet reaped, counts as dead)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):  # not a pid this system can have (`.cache.old-99999999999`)
        return False
    try:  # Linux: state is the field after the parenthesised command name
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def start_time(pid: int) -> str | None:
    """The process' start time in clock ticks since boot (Linux), which tells a reused pid apart; else None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def hold(root: str | os.PathLike) -> None:
    _held.append(Path(os.path.abspath(root)))


def let_go(root: str | os.PathLike) -> None:
    root = Path(os.path.abspath(root))
    if root in _held:
        _held.remove(root)


def _journal_root(path: Path) -> Path:
    for root in reversed(_held):
        if root in path.parents:
            return root
    return path.parent


def note(path: str | os.PathLike) -> None:
    """Record a temporary this process has just created (raises OSError when the journal cannot be written)."""
    path = Path(os.path.abspath(path))
    root = _journal_root(path)
    entry = {"pid": os.getpid(), "start": start_time(os.getpid()), "path": path.relative_to(root).as_posix()}
    fd = os.open(root / JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def forget(path: str | os.PathLike) -> None:
    """Drop a temporary of this process from its journal (it was renamed into place or removed)."""
    path = Path(os.path.abspath(path))
    root = _journal_root(path)
    relative = path.relative_to(root).as_posix()
    entries = _read(root)
    kept = [e for e in entries if not (e["path"] == relative and e["pid"] == os.getpid())]
    if len(kept) != len(entries):
        try:
            _write(root, kept)
        except OSError:
            pass  # a stale entry names a path that is gone: harmless


def _read(root: Path) -> list[dict[str, Any]]:
    try:
        text = (root / JOURNAL).read_text(errors="replace")
    except OSError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill: its temporary (if any) stays, as litter, never a loss
        if (isinstance(entry, dict) and isinstance(entry.get("pid"), int) and isinstance(entry.get("path"), str)
                and (entry.get("start") is None or isinstance(entry.get("start"), str))):
            entries.append(entry)
    return entries


def _write(root: Path, entries: list[dict[str, Any]]) -> None:
    journal = root / JOURNAL
    if not entries:
        journal.unlink(missing_ok=True)
        return
    staging = root / f"{JOURNAL}.new-{os.getpid()}"
    staging.write_text("".join(json.dumps(e) + "\n" for e in entries))
    os.replace(staging, journal)


def _writer_alive(entry: dict[str, Any]) -> bool:
    if not pid_alive(entry["pid"]):
        return False
    return entry.get("start") is None or start_time(entry["pid"]) in (None, entry["start"])


def _recorded_target(root: Path, entry: dict[str, Any]) -> Path | None:
    """The journal entry's path when it is inside `root` and named as onebit names its temporaries."""
    relative = entry["path"]
    if not relative or os.path.isabs(relative):
        return None
    path = Path(os.path.normpath(root / relative))
    if root not in path.parents:
        return None
    for pattern in TEMPORARY_PATTERNS:
        match = pattern.match(path.name)
        if match and int(match.group("pid")) == entry["pid"]:
            return path
    return None


def clean(root: str | os.PathLike) -> list[Path]:
    """Remove the temporaries recorded in `root`'s journal whose writer no longer runs; returns them."""
    root = Path(os.path.abspath(root))
    entries = _read(root)
    if not entries:
        return []
    kept, removed = [], []
    for entry in entries:
        if _writer_alive(entry):
            kept.append(entry)
            continue
        path = _recorded_target(root, entry)
        if path is None or not (path.exists() or path.is_symlink()):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            kept.append(entry)
            continue
        removed.append(path)
    try:
        _write(root, kept)
    except OSError:
        pass
    return removed
