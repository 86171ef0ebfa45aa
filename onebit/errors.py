"""The one exception type that every stage raises for bad input, and how commands report it (and the
filesystem errors a user can fix: disk full, read-only, permissions, as one line too); `first_line`, the one
way any stage turns an error into the one line a report, a run record or a message shows.

A leaf module (imports nothing of onebit) so every stage may use it without importing a later stage.
"""
from __future__ import annotations

import errno
import functools
import shutil
import sys
from typing import Callable


class OnebitError(Exception):
    """Bad input or an impossible request: the message is one line saying what, where and what to do."""


def cli_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a command's `main` so an OnebitError becomes `onebit: <message>` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except OnebitError as error:
            print(f"onebit: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("onebit: interrupted", file=sys.stderr)
            return 130
        except shutil.Error as error:  # copytree collects its failures (a full disk mid-copy) in one list
            print(f"onebit: {copy_error_message(error)}", file=sys.stderr)
            return 2
        except OSError as error:  # disk full, read-only, permissions: the user can fix these
            message = friendly_os_error(error)
            if message is None:
                raise
            print(f"onebit: {message}", file=sys.stderr)
            return 2

    return wrapper


_FIXABLE = {errno.ENOSPC: "the disk is full: free space", errno.EDQUOT: "the disk quota is exceeded: free space",
            errno.EROFS: "the filesystem is read-only: choose a writable folder",
            errno.EACCES: "permission denied: fix the permissions or choose another folder",
            errno.EPERM: "operation not permitted: fix the permissions or choose another folder",
            errno.ENOTDIR: "a path component is a file, not a folder: choose another path"}


def first_line(error: BaseException | str) -> str:
    """`Type: first line` of an exception (`Type` alone when it has no message), or the first non-empty line of
    a text, at most 300 characters: what a report, a run record or a one-line message shows of an error."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if isinstance(error, BaseException):
        name = type(error).__name__
        return (f"{name}: {lines[0]}" if lines else name)[:300]
    return (lines[0] if lines else "")[:300]


def friendly_os_error(error: OSError) -> str | None:
    """One line for a filesystem error the user can fix (disk full, read-only, permissions), else None."""
    if error.errno not in _FIXABLE:
        return None
    # a copy (shutil's sendfile) names the source first and the file it could not write second
    written = error.filename2 if error.filename2 and error.errno in (errno.ENOSPC, errno.EDQUOT) else error.filename
    where = f" {written}" if written else ""
    return (f"cannot write{where}: {error.strerror}; {_FIXABLE[error.errno]} and rerun "
            "(nothing half-written was left; finished files were kept)")


def copy_error_message(error: shutil.Error) -> str:
    """One line for shutil.copytree's collected failures: the first file it could not copy, and why."""
    failures = error.args[0] if error.args and isinstance(error.args[0], list) else []
    if failures and isinstance(failures[0], tuple) and len(failures[0]) == 3:
        source, target, why = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        return (f"cannot copy {source} to {target}{more}: {why}; free space or fix the folder's permissions and "
                "rerun (nothing half-written was left; finished files were kept)")
    return f"a copy failed ({error}); free space or fix the folder's permissions and rerun"
