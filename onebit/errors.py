"""The one exception type that every stage raises for bad input, and how commands report it.

A leaf module (imports nothing of onebit) so every stage may use it without importing a later stage.
"""
from __future__ import annotations

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

    return wrapper
