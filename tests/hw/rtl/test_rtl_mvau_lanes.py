"""onebit_mvau's integer x bipolar lanes where a weight word is wider than 64 bits: the first layer of an
auto-folded narrow CNV (UINT8 pixels, MW 9, PE 16 x SIMD 9 = a 144-bit word) had lane 7 (bits 63..71)
off by one on every input under Verilator 5.006 (popcount(~w) of that lane), which the whole-accelerator
simulation showed as 35 of 100 CNV images differing from the accelerator model."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator not installed (tools/setup_env.sh)")


@pytest.mark.parametrize("pe", [16, 8])
def test_every_lane_of_a_wide_weight_word_sums_exactly(pe):
    from hw.rtl.layout import MVAUConfig
    from hw.rtl.nodes import RTLMvau

    rng = np.random.default_rng(pe)
    weights = rng.choice([-1.0, 1.0], (9, 16))
    cfg = MVAUConfig(9, 16, pe, 9, "UINT8", "BIPOLAR", "INT16", no_activation=True, name=f"lanes_pe{pe}")
    x = rng.integers(0, 256, (64, 9))
    got = RTLMvau(cfg, weights).simulate(x).outputs
    wrong = np.argwhere(got != x @ weights)
    assert len(wrong) == 0, f"lanes {sorted(set(wrong[:, 1].tolist()))} differ, e.g. {got[tuple(wrong[0])]} vs " \
                            f"{(x @ weights)[tuple(wrong[0])]}"
