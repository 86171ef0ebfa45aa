"""What the user typed to start this command, for usage lines and messages.

The `onebit` dispatcher (onebit/cli) sets `invoked_as` to "onebit <command>" before it calls a stage's
`main`; run directly (`python -m quant_models.train`, `python export/to_finn.py`), a stage keeps its own
name. Ground module: imports nothing of the project, so every stage may use it.
"""
from __future__ import annotations

invoked_as: str | None = None


def program_name(default: str) -> str:
    """The name for argparse's `prog=`: the `onebit` subcommand when dispatched through it, else `default`."""
    return invoked_as or default
