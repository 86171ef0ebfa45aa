"""The extended RTL configuration sweep (tests marked rtl_sweep: every MVAU datapath and folding corner,
signed max pool, FIFO under stalls), deselected from `make test` because each configuration is its own
Verilator build (minutes cold). Run: python bench/rtl_sweep.py  (exit status = pytest's)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    raise SystemExit(pytest.main([str(root / "tests" / "hw" / "rtl"), "-q", "-p", "no:cacheprovider",
                                  "-m", "rtl_sweep or not rtl_sweep", *sys.argv[1:]]))
