"""onebit: train 1-bit networks, export them to FINN, build and validate streaming accelerators.

This package is two rooms. Its modules (errors.py, atomic.py) are the ground every stage imports and
import nothing of the project; onebit/cli/ (the `onebit` command and the demo) is the top, which imports
the stages and is imported by none. Keeping them apart keeps every import arrow pointing one way
(tests/test_layout.py).

The Python API of a build is re-exported here lazily (PEP 562), so `import onebit` stays as light as the
ground it is: `from onebit import build, BuildOptions` loads hw/options.py and hw/pipeline.py on first use.
This is the package's public facade, the one arrow from the ground to the top that tests/test_layout.py
allows (only inside `__getattr__`, never at import).
"""
from __future__ import annotations

from typing import Any

__all__ = ["build", "BuildOptions", "__version__"]
__version__ = "0.2.0"  # pyproject.toml reads it from here (one place); `onebit --version`, build logs


def __getattr__(name: str) -> Any:
    if name == "BuildOptions":
        from hw.options import BuildOptions

        return BuildOptions
    if name == "build":
        from hw.pipeline import build

        return build
    raise AttributeError(f"module 'onebit' has no attribute {name!r}")
