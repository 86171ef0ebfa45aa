"""onebit: train 1-bit networks, export them to FINN, build and validate streaming accelerators.

This package is two rooms. Its modules (errors.py, atomic.py) are the ground every stage imports and
import nothing of the project; onebit/cli/ (the `onebit` command and the demo) is the top, which imports
the stages and is imported by none. Keeping them apart keeps every import arrow pointing one way
(tests/test_layout.py).
"""

__version__ = "0.2.0"  # pyproject.toml reads it from here (one place); `onebit --version`, report.json
