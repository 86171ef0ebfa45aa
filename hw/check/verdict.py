"""One verdict for one build: the rule both `onebit build` (verify.py) and `onebit validate` apply.

The reference of every hardware level (QONNX, FINN's graphs, the accelerator model, the board) is the
collapsed integer model (export/collapse.py): that is what the accelerator is meant to compute, exactly,
and a level passes only with 0 integer mismatches against it.

The trained float model is not a reference. Its score-layer accumulators can differ from the collapsed
model's where a BatchNorm threshold lands exactly on a reachable integer accumulator: float32 PyTorch may
round y = k (z - mu) + beta to a tiny negative number and give -1 where the exact integer collapse gives
sign(0) = +1. Those samples are *collapse drift*: counted, listed by image index and explained, but they
do not fail the build, and both commands report the same number on the same images.
"""
from __future__ import annotations

from typing import Any

import numpy as np

REFERENCE = "pytorch_collapsed"
TRAINED = "pytorch_trained"
MAX_LISTED = 20
DRIFT_EXPLANATION = ("the trained float32 model and the exact integer collapse differ only where a BatchNorm "
                     "threshold falls exactly on a reachable integer accumulator (a tie): float32 rounding gives "
                     "-1 there, the integer collapse sign(0) = +1; the accelerator follows the collapse")


def compare(reference: np.ndarray, scores: np.ndarray, exact: np.ndarray | None = None) -> dict[str, Any]:
    """Integer and argmax mismatches of `scores` against `reference` (samples x classes)."""
    exact = np.ones(len(reference), dtype=bool) if exact is None else exact
    wrong = np.any(scores != reference, axis=1) | ~exact
    argmax_wrong = scores.argmax(1) != reference.argmax(1)
    indices = np.flatnonzero(wrong)
    return {"samples": int(len(reference)), "integer_mismatches": int(wrong.sum()),
            "argmax_mismatches": int(argmax_wrong.sum()), "non_integer_outputs": int((~exact).sum()),
            "first_mismatches": [int(i) for i in indices[:MAX_LISTED]]}


def collapse_drift(trained: np.ndarray, collapsed: np.ndarray, labels: np.ndarray | None = None) -> dict[str, Any]:
    """How the trained float model's integer scores differ from the collapsed model's (informational)."""
    wrong = np.flatnonzero(np.any(trained != collapsed, axis=1))
    drift: dict[str, Any] = {
        "samples": int(len(trained)), "integer_mismatches": int(len(wrong)),
        "argmax_mismatches": int(np.sum(trained.argmax(1) != collapsed.argmax(1))),
        "images": [int(i) for i in wrong[:MAX_LISTED]],
        "explanation": DRIFT_EXPLANATION if len(wrong) else "none: the trained and the collapsed model agree",
        "counts_against_the_build": False,
    }
    if labels is not None:
        drift["trained_accuracy"] = float(np.mean(trained.argmax(1) == labels))
        drift["collapsed_accuracy"] = float(np.mean(collapsed.argmax(1) == labels))
    return drift


def judge(levels: dict[str, dict[str, Any]], order: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """{"ok", "first_divergent_level"} of levels compared against REFERENCE (the trained level never counts)."""
    names = [name for name in (order or list(levels)) if name in levels]
    first = next((name for name in names if name not in (REFERENCE, TRAINED) and levels[name].get("executed", True)
                  and levels[name].get("integer_mismatches")), None)
    return {"ok": first is None, "first_divergent_level": first, "reference": REFERENCE}
