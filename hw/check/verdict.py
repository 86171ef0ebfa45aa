"""One verdict for one build: the rule both `onebit build` (verify.py) and `onebit validate` apply.

The reference of every hardware level (QONNX, FINN's graphs, the accelerator model, the board) is the
collapsed integer model (export/collapse.py): that is what the accelerator is meant to compute, exactly,
and a level passes only with 0 integer mismatches against it.

The trained float model is not a reference. Its score-layer accumulators can differ from the collapsed
model's where a BatchNorm threshold T lies within float32 rounding of a reachable integer accumulator (not
exactly on it: the thresholds measured were 1e-7 .. 2e-4 away): float32 PyTorch may round
y = k (z - mu) + beta to the other side of 0 than the exact comparison z >= T, giving -1 where the collapse
gives +1 or +1 where it gives -1. Those samples are *collapse drift*: counted, listed by image index and
explained with the measured distances, but they do not fail the build, and both commands report the same
number on the same images.

Every other level passes, fails or is skipped (level_status): it fails on mismatches or on any error
running it; only a missing tool or dependency skips it, and a skip never changes the verdict. A node level on
a build with no node of its kind has "nothing to simulate": it verified nothing, so it neither passed nor
was skipped, and it does not change the verdict either.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from onebit.errors import first_line  # noqa: F401 (one definition, in the ground; the levels import it from here)

REFERENCE = "pytorch_collapsed"
TRAINED = "pytorch_trained"
MAX_LISTED = 20
DRIFT_EXPLANATION = ("the trained float32 model and the exact integer collapse differ only at near-ties, where a "
                     "BatchNorm threshold T lies within float32 rounding of a reachable integer accumulator z: PyTorch's float32 "
                     "y = k (z - mu) + beta can land on the other side of 0 than the exact comparison z >= T, in "
                     "both directions (-1 where the collapse gives +1, and +1 where it gives -1); the accelerator "
                     "follows the collapse")
NOTHING_TO_SIMULATE = "nothing to simulate"  # a node level's status on a build with no node of its kind
NEAR_TIE = 1e-3  # thresholds closer than this to an integer are counted in the drift explanation


def compare(reference: np.ndarray, scores: np.ndarray, exact: np.ndarray | None = None) -> dict[str, Any]:
    """Integer and argmax mismatches of `scores` against `reference` (samples x classes)."""
    exact = np.ones(len(reference), dtype=bool) if exact is None else exact
    wrong = np.any(scores != reference, axis=1) | ~exact
    argmax_wrong = scores.argmax(1) != reference.argmax(1)
    indices = np.flatnonzero(wrong)
    return {"samples": int(len(reference)), "integer_mismatches": int(wrong.sum()),
            "argmax_mismatches": int(argmax_wrong.sum()), "non_integer_outputs": int((~exact).sum()),
            "first_mismatches": [int(i) for i in indices[:MAX_LISTED]]}


def collapse_drift(trained: np.ndarray, collapsed: np.ndarray, labels: np.ndarray | None = None,
                   threshold_distances: np.ndarray | None = None) -> dict[str, Any]:
    """How the trained float model's integer scores differ from the collapsed model's (informational).

    threshold_distances: |T - round(T)| of the model's real BatchNorm thresholds (export.collapse
    threshold_distances): the explanation then says how close to an integer the nearest ones lie, measured."""
    wrong = np.flatnonzero(np.any(trained != collapsed, axis=1))
    drift: dict[str, Any] = {
        "samples": int(len(trained)), "integer_mismatches": int(len(wrong)),
        "argmax_mismatches": int(np.sum(trained.argmax(1) != collapsed.argmax(1))),
        "images": [int(i) for i in wrong[:MAX_LISTED]],
        "explanation": DRIFT_EXPLANATION if len(wrong) else "none: the trained and the collapsed model agree",
        "counts_against_the_build": False,
    }
    if threshold_distances is not None and len(threshold_distances):
        d = np.sort(np.asarray(threshold_distances, dtype=np.float64))
        near = d[d < NEAR_TIE]
        drift["nearest_threshold_distance"] = float(d[0])
        drift["thresholds_within_1e-3_of_an_integer"] = int(len(near))
        if len(wrong):
            drift["explanation"] += (f"; measured: of {len(d)} reachable thresholds the nearest lies {d[0]:.2g} from an "
                                     f"integer, {len(near)} lie within {NEAR_TIE:g}"
                                     + (f" ({near[0]:.2g} .. {near[-1]:.2g})" if len(near) else ""))
    if labels is not None:
        drift["trained_accuracy"] = float(np.mean(trained.argmax(1) == labels))
        drift["collapsed_accuracy"] = float(np.mean(collapsed.argmax(1) == labels))
    return drift


def level_status(entry: dict[str, Any]) -> str:
    """passed, failed, skipped or nothing to simulate (hw/check/levels.py): an entry that did not run and does
    not say it was skipped for a missing tool failed (an error running it), whatever wrote it."""
    status = entry.get("status")
    if status in ("passed", "failed", "skipped", NOTHING_TO_SIMULATE):
        return status
    if entry.get("executed", True):
        return "failed" if entry.get("integer_mismatches") else "passed"
    return "skipped" if str(entry.get("reason") or "").startswith("skipped") else "failed"


def with_status(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry with its `status` field set (levels written without one get it from level_status)."""
    entry["status"] = level_status(entry)
    return entry


def error_entry(error: str, how: str = "", seconds: float = 0.0) -> dict[str, Any]:
    """The report entry of a level that could not run its design (a failure, not a skip)."""
    return {"status": "failed", "executed": False, "error": error, "reason": f"failed: {error}", "how": how,
            "seconds": round(seconds, 2)}


def describe_level(entry: dict[str, Any]) -> str:
    """One line for a terminal: the outcome first (passed / FAILED / skipped / nothing to simulate), then counts,
    error or reason."""
    status = level_status(entry)
    if not entry.get("executed"):
        if status == "failed":
            return f"FAILED: {entry.get('error') or entry.get('reason')}"
        if status == NOTHING_TO_SIMULATE:
            return str(entry.get("reason") or NOTHING_TO_SIMULATE)
        reason = str(entry.get("reason") or "")
        return reason if reason.startswith("skipped") else f"skipped: {reason}"
    head = "passed" if status == "passed" else "FAILED"
    if entry.get("argmax_mismatches") is None:  # node levels: node outputs compared
        bad = [f"{n['node']} ({n['status']})" for n in entry.get("nodes") or [] if n.get("status") != "ok"]
        return (f"{head}: {entry['integer_mismatches']} mismatching node outputs on {entry['samples']} images "
                f"+ random inputs, {len(entry.get('nodes') or [])} nodes ({entry['seconds']} s)"
                + (f"; {', '.join(bad[:5])}" if bad else ""))
    return (f"{head}: {entry['integer_mismatches']} integer / {entry['argmax_mismatches']} argmax mismatches "
            f"on {entry['samples']} images{ties_note(entry)} ({entry['seconds']} s)")


def ties_note(entry: dict[str, Any]) -> str:
    """', explained by reference ties: N, unexplained: M' for a level compared with an imported model's float
    reference (hw/check/ties.py) that differs from it, else ''."""
    if not entry.get("explained_by_reference_ties") and not entry.get("unexplained_mismatches"):
        return ""
    return (f", explained by reference ties: {entry['explained_by_reference_ties']}, "
            f"unexplained: {entry['unexplained_mismatches']}")


def drift_line(drift: dict[str, Any]) -> str:
    """The terminal line of collapse drift (empty when there is none)."""
    if not drift.get("integer_mismatches"):
        return ""
    near = drift.get("nearest_threshold_distance")
    measured = f", nearest threshold {near:.2g} from an integer" if near is not None else ""
    return (f"collapse drift (pytorch_trained vs the collapsed model, not a failure): {drift['integer_mismatches']} "
            f"images {drift['images'][:10]}: BatchNorm thresholds within float32 rounding of an integer "
            f"accumulator (either direction{measured})")


def judge(levels: dict[str, dict[str, Any]], order: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """{"ok", "first_divergent_level", "failed_levels", "skipped_levels"} of levels compared against REFERENCE
    (the trained level never counts). A level fails on mismatches or on an error running it; skipped levels
    (a tool absent) are listed and do not change the verdict."""
    names = [name for name in (order or list(levels)) if name in levels]
    judged = [name for name in names if name not in (REFERENCE, TRAINED)]
    failed = [name for name in judged if level_status(levels[name]) == "failed"]
    skipped = [name for name in judged if level_status(levels[name]) == "skipped"]
    return {"ok": not failed, "first_divergent_level": failed[0] if failed else None, "failed_levels": failed,
            "skipped_levels": skipped, "reference": REFERENCE}
