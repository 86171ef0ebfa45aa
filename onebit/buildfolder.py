"""A build folder's housekeeping: what onebit wrote there, who is writing now, and what a dead run left.

Every command that writes into a build folder (`onebit build` / `export/to_finn.py`, `onebit validate`,
`python -m hw.deploy`) opens it through `BuildFolder`, which gives four guarantees:

* Nothing of the user's is removed or overwritten. `.onebit-build.json` (the folder manifest) lists the
  top-level entries onebit wrote, and for each finished stage the files inside them. Before a command
  writes or removes an entry it `claim`s it: an entry that exists but is not onebit's, or a file inside
  an entry to be replaced that onebit did not write, stops the command with a one-line error naming the
  file, before any work and before anything is removed.
* One writer at a time. `.onebit.lock` is created with O_EXCL and holds the writer's pid; a second
  command stops with an error naming that pid. The lock of a process that no longer runs (SIGKILL, power
  loss) is taken over.
* No litter, and no loss. Temporaries carry their writer's pid in their name (onebit/atomic.py,
  hw/deploy.py) and are recorded in the folder's journal (onebit/temporaries.py); `clean_stale_temporaries`
  removes the recorded ones of processes that no longer run when the next command opens the folder. A
  name that only looks like a temporary is the user's and stays (issue 23).
* Writability is checked before the work starts (a probe file), so a read-only folder or an `--out`
  that is a file fails in a second, not after minutes of work.

report.json remains the "finished" marker; the pipeline writes it last (hw/pipeline.py).
Imports nothing of onebit's stages (ground room, tests/test_layout.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from onebit import temporaries
from onebit.atomic import write_text_atomic
from onebit.errors import OnebitError
from onebit.temporaries import JOURNAL, TEMPORARY_PATTERNS, pid_alive  # noqa: F401 (re-exported)

MANIFEST = ".onebit-build.json"
LOCK = ".onebit.lock"
FORMAT = "onebit-build-folder"
VERSION = 1
# A lock file that is still empty this long after its creation belongs to a writer that died between
# creating and filling it (both happen in one call, microseconds apart).
EMPTY_LOCK_GRACE_S = 10.0


class BuildFolderError(OnebitError):
    """The build folder cannot be used: foreign files in the way, another writer, not writable."""


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inside(root: str | os.PathLike, relative: str) -> Path:
    """`root/relative`, refusing absolute paths and paths that climb out of `root` (`..`).

    The check is on the path as written (what a tampered io.json or report.json can say), not on where
    symlinks lead: a folder the user assembled from links to another build (as the notebooks' tests do)
    is theirs to make.
    """
    root = Path(os.path.abspath(root))
    if not isinstance(relative, str) or not relative or Path(relative).is_absolute():
        raise BuildFolderError(f"{root}: path {relative!r} must be relative to the build folder; rebuild it")
    target = Path(os.path.normpath(root / relative))
    if target != root and root not in target.parents:
        raise BuildFolderError(f"{root}: path {relative!r} leaves the build folder; refusing it (rebuild the folder)")
    return target


def _first_file(path: Path) -> Path | None:
    if not path.is_dir() or path.is_symlink():
        return path
    for item in sorted(path.rglob("*")):
        if item.is_file() or item.is_symlink():
            return item
    return None


def _files(path: Path, root: Path) -> list[str]:
    """Files of an entry (relative posix paths); Python's __pycache__ (regenerated on import) does not count."""
    if path.is_dir() and not path.is_symlink():
        return sorted(p.relative_to(root).as_posix() for p in path.rglob("*")
                      if (p.is_file() or p.is_symlink()) and "__pycache__" not in p.parts)
    return [path.relative_to(root).as_posix()] if path.exists() or path.is_symlink() else []


def remove_entry(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def busy_message(path: Path, holder: dict[str, Any], option: str = "--out") -> str:
    """Why `path` is locked, and how to clear a lock whose holder cannot be checked from here."""
    where = f"pid {holder.get('pid')}"
    host = holder.get("host")
    if host not in (None, socket.gethostname()):
        # a build SIGKILLed in a container (whose hostname is the container's) leaves such a lock forever
        return (f"{path} is in use by `{holder.get('command', 'onebit')}` ({where} on host {host}, since "
                f"{holder.get('started', '?')}), which this machine ({socket.gethostname()}) cannot check; if that "
                f"process no longer runs, clear the lock with `onebit unlock {path}` (or delete {path / LOCK}), "
                f"else wait for it or use another {option}")
    return (f"{path} is in use by `{holder.get('command', 'onebit')}` ({where}, since {holder.get('started', '?')}); "
            f"wait for it to finish or use another {option}")


def unlock(path: str | os.PathLike) -> str:
    """Remove the lock of `path` unless a live process on this machine holds it; returns what was done."""
    path = Path(path).expanduser().resolve()
    lock = path / LOCK
    if not path.is_dir():
        raise BuildFolderError(f"{path}: no such build folder")
    if not (lock.exists() or lock.is_symlink()):
        return f"{path} is not locked"
    try:
        holder = json.loads(lock.read_text())
        pid = int(holder["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        holder, pid = {}, None
    host = holder.get("host") if isinstance(holder, dict) else None
    if pid is not None and host in (None, socket.gethostname()) and pid_alive(pid):
        raise BuildFolderError(f"{path} is locked by `{holder.get('command', 'onebit')}` (pid {pid}), which is running "
                               f"on this machine; wait for it to finish or stop it (kill {pid}), then rerun")
    lock.unlink(missing_ok=True)
    who = f"pid {pid}{' on host ' + str(host) if host else ''}" if pid is not None else "unreadable holder"
    return f"removed the lock of {path} ({who})"


class BuildFolder:
    """One command's hold on a build folder: `with BuildFolder(path, "onebit build") as folder: ...`."""

    def __init__(self, path: str | os.PathLike, command: str, create: bool = True, option: str = "--out") -> None:
        self.path = Path(path).expanduser().resolve()
        self.command = command
        self.create = create
        self.option = option
        self.locked = False

    # -- opening ---------------------------------------------------------------------------------
    def __enter__(self) -> "BuildFolder":
        self.open()
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    def open(self) -> None:
        """Create (if asked) and probe the folder, take the lock, clean dead runs' temporaries."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise BuildFolderError(f"{self.option} {path} is a file, not a folder; choose a folder (it may not exist yet)")
        if not path.exists():
            if not self.create:
                raise BuildFolderError(f"{path}: no such build folder; run `onebit build model.pt --out {path}` first")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise BuildFolderError(f"cannot create {self.option} {path} ({error.strerror}); choose a writable "
                                       "folder") from None
        self.check_writable()
        self.lock()
        temporaries.hold(path)
        self.clean_stale_temporaries()

    def check_writable(self) -> None:
        """Write and remove a small probe file, so a read-only folder fails now rather than after the work."""
        probe = None
        try:
            # a fresh name (O_EXCL): a user's file that happens to be called like a probe is never truncated
            fd, name = tempfile.mkstemp(prefix=f".onebit-probe-{os.getpid()}-", dir=self.path)
            probe = Path(name)
            try:
                temporaries.note(probe)
                os.write(fd, b"onebit writability probe\n" * 16)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            raise BuildFolderError(f"{self.path} is not writable ({error.strerror}); make it writable or choose "
                                   f"another {self.option} (nothing was done)") from None
        finally:
            if probe is not None:
                try:
                    probe.unlink()
                except OSError:
                    pass
                temporaries.forget(probe)

    # -- the lock --------------------------------------------------------------------------------
    def lock(self) -> None:
        lock = self.path / LOCK
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        for _ in range(3):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder(lock)
                if holder is None:  # dead holder: take the lock over
                    try:
                        lock.unlink()
                    except FileNotFoundError:
                        pass
                    continue
                raise BuildFolderError(busy_message(self.path, holder, self.option))
            except OSError as error:
                raise BuildFolderError(f"cannot lock {self.path} ({error.strerror}); make it writable or choose "
                                       f"another {self.option}") from None
            with os.fdopen(fd, "w") as handle:
                handle.write(record)
            self.locked = True
            return
        raise BuildFolderError(f"cannot lock {self.path}: {lock} keeps reappearing; another onebit is starting there")

    @staticmethod
    def _holder(lock: Path) -> dict[str, Any] | None:
        """The lock's holder, or None when it is stale (its process is gone)."""
        try:
            text = lock.read_text()
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError:
            return {"pid": "?", "command": "unknown"}
        try:
            holder = json.loads(text)
            pid = int(holder["pid"])
        except (ValueError, KeyError, TypeError):
            # Empty or garbled: a writer died between creating and filling it, unless it is brand new.
            return None if age > EMPTY_LOCK_GRACE_S else {"pid": "?", "command": "onebit (starting)"}
        if holder.get("host") not in (None, socket.gethostname()):
            return holder  # another machine on a shared filesystem: cannot check, so never steal
        return holder if pid_alive(pid) else None

    def release(self) -> None:
        if not self.locked:
            return
        temporaries.let_go(self.path)
        lock = self.path / LOCK
        try:
            if json.loads(lock.read_text()).get("pid") == os.getpid():
                lock.unlink()
        except (OSError, ValueError):
            pass
        self.locked = False

    # -- temporaries of dead runs ------------------------------------------------------------------
    def clean_stale_temporaries(self) -> list[Path]:
        """Remove onebit temporaries (anywhere in the folder) whose writer no longer runs; returns them."""
        return clean_stale_temporaries(self.path)

    # -- ownership ---------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        path = self.path / MANIFEST
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("format") == FORMAT and isinstance(data.get("owned"), dict):
                    return data
            except (OSError, ValueError):
                pass
            raise BuildFolderError(f"{path} is damaged; remove it only if every file in {self.path} is onebit's, "
                                   "or build into another folder")
        return {"format": FORMAT, "version": VERSION, "owned": {}}

    def _save(self, manifest: dict[str, Any]) -> None:
        write_text_atomic(self.path / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")

    def claim(self, names: Iterable[str], replace: Iterable[str] = ()) -> None:
        """Mark top-level `names` as onebit's before writing them; entries in `replace` will be removed.

        Refuses (before anything changes) an existing entry onebit did not write, and, in an entry to be
        replaced, any file the last finished run did not record. Empty folders count as nobody's.
        """
        names, replace = list(dict.fromkeys(names)), set(replace)
        manifest = self.manifest()
        owned = manifest["owned"]
        for name in list(names) + sorted(replace - set(names)):
            path = self.path / name
            if not (path.exists() or path.is_symlink()):
                continue
            if name not in owned:
                first = _first_file(path)
                if first is None:
                    continue  # an empty folder: nothing to lose
                raise BuildFolderError(
                    f"{first} was not written by onebit (not in {MANIFEST}); onebit would "
                    f"{'remove' if name in replace else 'overwrite'} it: move it away or choose another {self.option}")
            recorded = owned[name].get("files")
            if name in replace and path.is_dir() and recorded is not None:
                foreign = sorted(set(_files(path, self.path)) - set(recorded))
                if foreign:
                    raise BuildFolderError(f"{self.path / foreign[0]} was not written by onebit (added to its "
                                           f"{name}/ after the last run); onebit would remove it: move it away first")
        for name in list(names) + sorted(replace):
            owned.setdefault(name, {"by": self.command, "files": None})
        self._save(manifest)

    def remove(self, names: Iterable[str]) -> None:
        """Remove claimed entries (claim them with `replace` first)."""
        owned = self.manifest()["owned"]
        for name in names:
            if name not in owned:
                raise BuildFolderError(f"internal: {name} was not claimed before removal")
            remove_entry(self.path / name)

    def adopt_new(self, before: set[str], skip: Iterable[str] = ()) -> None:
        """Claim every top-level entry that appeared since `before` (FINN's extra outputs)."""
        skip = set(skip) | {MANIFEST, LOCK, JOURNAL}
        new = [p.name for p in self.path.iterdir() if p.name not in before and p.name not in skip
               and not p.name.startswith(JOURNAL) and not any(pattern.match(p.name) for pattern in TEMPORARY_PATTERNS)]
        manifest = self.manifest()
        for name in new:
            manifest["owned"].setdefault(name, {"by": self.command, "files": None})
        self._save(manifest)

    def record(self, names: Iterable[str] | None = None) -> None:
        """Record the files now in owned entries (all owned entries if `names` is None): a finished stage."""
        manifest = self.manifest()
        owned = manifest["owned"]
        for name in (list(owned) if names is None else list(names)):
            path = self.path / name
            if name in owned:
                owned[name]["files"] = _files(path, self.path) if (path.exists() or path.is_symlink()) else []
        self._save(manifest)

    def entries(self) -> set[str]:
        return {p.name for p in self.path.iterdir()}


def clean_stale_temporaries(root: str | os.PathLike) -> list[Path]:
    """Remove the temporaries recorded in `root`'s journal whose writer no longer runs (onebit/temporaries.py).

    Only what onebit recorded: a walk that removed every name matching the temporaries' patterns deleted
    the user's `.photos.tmp-4242/` and `notes/.thesis.tex.old-20240101` (issue 23).
    """
    return temporaries.clean(root)


def clean_stale_temporaries_of(target: str | os.PathLike) -> list[Path]:
    """Remove the recorded temporaries that killed writers left beside `target` (a file; not recursive)."""
    return temporaries.clean(Path(target).expanduser().absolute().parent)


def integrity_record(root: str | os.PathLike, patterns: Iterable[str]) -> dict[str, str]:
    """sha256 of every file under `root` matching the glob `patterns` (relative posix paths -> digest)."""
    root = Path(root)
    files = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in files}


def verify_integrity(root: str | os.PathLike, record: dict[str, str], what: str) -> None:
    """BuildFolderError naming the first file of `record` that is missing or whose sha256 differs."""
    root = Path(root)
    for relative, digest in sorted(record.items()):
        path = inside(root, relative)
        if not path.is_file():
            raise BuildFolderError(f"{path} is missing but {what} lists it; the build folder was changed after "
                                   "the build: rebuild with `onebit build`")
        if sha256_file(path) != digest:
            raise BuildFolderError(f"{path} changed since the build (sha256 differs from {what}); "
                                   "rebuild with `onebit build` rather than edit a build's files")

