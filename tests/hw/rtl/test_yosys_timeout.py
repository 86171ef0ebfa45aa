"""$ONEBIT_YOSYS_TIMEOUT bounds one yosys synthesis (hw/rtl/yosys.py): a run over it is an OnebitError naming
the node, nothing is cached, and a bad value is refused with what to set."""
from __future__ import annotations

import shutil

import pytest

from onebit.errors import OnebitError

pytestmark = pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys not installed (tools/setup_env.sh)")


def test_synthesis_over_the_limit_is_an_error_naming_the_node(tmp_path, monkeypatch):
    from hw.rtl.yosys import synthesize

    monkeypatch.setenv("ONEBIT_CACHE", str(tmp_path))
    monkeypatch.setenv("ONEBIT_YOSYS_TIMEOUT", "0.05")
    with pytest.raises(OnebitError, match=r"fifo_7: yosys synthesis of onebit_fifo did not finish within 0.05 s "
                                          r"\(ONEBIT_YOSYS_TIMEOUT\)"):
        synthesize("onebit_fifo", {"WIDTH": 8, "DEPTH": 16}, {}, "xc7", "fifo_7")
    assert not list(tmp_path.glob("yosys/*.json"))  # nothing cached: a later run without the limit synthesizes it
    monkeypatch.setenv("ONEBIT_YOSYS_TIMEOUT", "600")
    counts = synthesize("onebit_fifo", {"WIDTH": 8, "DEPTH": 16}, {}, "xc7", "fifo_7")
    assert counts.ff > 0 and len(list((tmp_path / "yosys").glob("*.json"))) == 1


@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_bad_limit_is_refused(value, monkeypatch):
    from hw.rtl.yosys import synthesis_timeout

    monkeypatch.setenv("ONEBIT_YOSYS_TIMEOUT", value)
    with pytest.raises(OnebitError, match="ONEBIT_YOSYS_TIMEOUT"):
        synthesis_timeout()
