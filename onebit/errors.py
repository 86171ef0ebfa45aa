"""The one exception type that every stage raises for bad input, and how commands report it (and the
filesystem errors a user can fix: disk full, read-only, permissions, as one line too).

A leaf module (imports nothing of onebit) so every stage may use it without importing a later stage.
"""
from __future__ import annotations

import errno
import functools
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


def friendly_os_error(error: OSError) -> str | None:
    """One line for a filesystem error the user can fix (disk full, read-only, permissions), else None."""
    if error.errno not in _FIXABLE:
        return None
    where = f" {error.filename}" if error.filename else ""
    return (f"cannot write{where}: {error.strerror}; {_FIXABLE[error.errno]} and rerun "
            "(nothing half-written was left; finished files were kept)")
