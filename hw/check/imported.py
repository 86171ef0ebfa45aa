"""Verification of a build of a QONNX model from elsewhere (export/qonnx_import.py), and its software side.

The reference is the user's own model (`model_imported.onnx`, after qonnx cleanup) executed by qonnx on the
declared float input (scale * pixel + offset, in the model's layout). Every level is reduced to the score
layer's integer accumulator z and compared with it on every sample:

  qonnx_reference   the user's model on the declared float input; z = s / alpha, s = the score layer's
                    output (the tensor before the argmax-preserving score tail), alpha = its scale
  qonnx             the build's model_qonnx.onnx (pre-processing merged in front, tail cut) on raw pixels
  finn_streamlined  finn/step_streamline.onnx; z = output / alpha
  finn_hw_layers    finn/step_create_dataflow_partition.onnx; z = 2p - n, exact
The Python-execution levels (qonnx and the FINN graphs) see the first `python_samples` images, as in a
checkpoint's build (hw/check/verify.py); the reference sees them all.

A float level's z must lie within 1e-3 of an integer (else it is counted as a mismatch on that sample).
An image where qonnx or a FINN graph differs from the float reference only because the reference sits on a
near-tie of a sign activation (hw/check/ties.py) is counted as `explained_by_reference_ties`, beside the
`unexplained_mismatches` that fail the level; the hardware levels' class scores are compared exactly with the
reference whose ties are broken the integer design's way. `onebit validate` compares the accelerator model (or the
board) with the same reference (reference_scores), its ties resolved the same way.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from export.qonnx_import import REFERENCE_FILE, declared_input, read_import_record
from hw.check.verdict import error_entry, first_line, level_status, with_status
from hw.check.verify import compare, run_graph, run_hardware_levels, write_validation
from onebit.errors import OnebitError

INTEGER_TOLERANCE = 1e-3
REFERENCE_LEVEL = "qonnx_reference"


def is_imported_build(build_dir: str | Path) -> bool:
    return (Path(build_dir) / "import.json").is_file()


def build_meta(build_dir: str | Path) -> dict[str, Any]:
    """What a build folder was made from: the checkpoint's meta, or for an imported model its record."""
    record = read_import_record(build_dir)
    if record is None:
        from quant_models.checkpoint import read_checkpoint

        return read_checkpoint(Path(build_dir) / "model.pt")
    return {"arch": {"name": f"imported {Path(record['model']).name}"}, "estimator": None,
            "dataset": {"name": record.get("dataset")}, "import": record}


def near_integers(values: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, float]:
    """(int64 z, per-sample 'every entry within tolerance of an integer', largest distance) of values/scale."""
    z = np.asarray(values, dtype=np.float64) / float(scale)
    rounded = np.rint(z)
    distance = np.abs(z - rounded)
    exact = np.all(distance <= INTEGER_TOLERANCE, axis=tuple(range(1, z.ndim)))
    return rounded.astype(np.int64), exact, float(distance.max()) if distance.size else 0.0


def _run_with_tail_input(model_path: Path, x: np.ndarray, tail_input: str, batch: int = 100):
    """(graph output y, tensor `tail_input`) of a QONNX model on float input x, batched (qonnx execute_onnx)."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from export.qonnx import _with_batch

    model = ModelWrapper(str(model_path))
    out_name = model.graph.output[0].name
    if tail_input != out_name:
        shape = model.get_tensor_shape(tail_input) or model.get_tensor_shape(out_name)
        model.graph.output.append(helper.make_tensor_value_info(tail_input, 1, shape))
    batch = max(1, min(batch, len(x)))
    model = _with_batch(model, batch)
    in_name = model.graph.input[0].name
    ys, ss = [], []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
        out = execute_onnx(model, {in_name: chunk})
        ys.append(out[out_name][:n])
        ss.append(out[tail_input][:n])
    return np.concatenate(ys), np.concatenate(ss)


def reference_outputs(build_dir: str | Path, images: np.ndarray,
                      record: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(y, s): the user's model's output and its score layer's output on the declared input of `images`."""
    record = record or read_import_record(build_dir)
    x = declared_input(images, record)
    return _run_with_tail_input(Path(build_dir) / REFERENCE_FILE, x, record["score_tail"]["input_tensor"])


def score_alpha(record: dict[str, Any]) -> float:
    alpha = record.get("score_layer_alpha")
    if not alpha:
        raise OnebitError("import.json has no score_layer_alpha (the build did not finish); rerun "
                          "`onebit build model.onnx`")
    return float(alpha)


def reference_scores(build_dir: str | Path, images: np.ndarray) -> np.ndarray:
    """The reference's integer scores z (what `onebit validate` compares the accelerator with)."""
    record = read_import_record(build_dir)
    _, s = reference_outputs(build_dir, images, record)
    z, exact, distance = near_integers(s, score_alpha(record))
    if not exact.all():
        raise OnebitError(f"the reference's score layer output is not alpha * integer on {int((~exact).sum())} "
                          f"images (off by up to {distance:.3g}); the model is not a binary score layer")
    return z


def verify_imported_build(build, record: dict[str, Any], images: np.ndarray, labels: np.ndarray | None,
                          dataset: str, progress: bool = True, hardware_levels: list[str] | None = None,
                          node_samples: int | None = None, python_samples: int | None = None) -> dict[str, Any]:
    """Every level against the QONNX reference on the same images; written to validation/ like verify_build.
    The Python-execution levels see the first `python_samples` images (None or 0: all), as in verify_build.
    The hardware levels (hw/check/levels.py) run as for a checkpoint's build, compared with the reference."""
    from export.qonnx import run_qonnx

    affine = build.score_affine
    alpha = float(affine.get("alpha") or 0.0)
    if not alpha > 0:
        raise OnebitError("the build recorded no score-layer scale (alpha); its last step did not run")
    levels: dict[str, dict[str, Any]] = {}
    scores: dict[str, np.ndarray] = {}
    exacts: dict[str, np.ndarray] = {}

    def record_level(level: str, started: float, values, how: str, scale: float = 1.0, error: str | None = None):
        seconds = time.perf_counter() - started
        if error is not None:  # the level could not run: a failure, never a skip
            levels[level] = error_entry(error, how, seconds)
            return
        entry: dict[str, Any] = {"seconds": round(seconds, 2), "how": how}
        z, exact, distance = near_integers(values, scale)
        scores[level], exacts[level] = z, exact
        entry.update({"executed": True, **compare(scores.get(REFERENCE_LEVEL, z)[:len(z)], z, exact),
                      "max_distance_from_integer": distance})
        if labels is not None:
            entry["accuracy"] = float(np.mean(z.argmax(1) == labels[:len(z)]))
        levels[level] = with_status(entry)


    started = time.perf_counter()
    y, s = reference_outputs(build.out_dir, images, record)
    record_level(REFERENCE_LEVEL, started, s, "qonnx execute_onnx of model_imported.onnx on the declared float "
                 f"input ({record['input']['scale_text']} * pixel {record['input']['offset']:+g}); z = s / alpha", alpha)
    # The tail must not change the winner: the class y picks has the top z (ties in z are ties, whatever
    # float noise the reference's own summation order adds).
    z_ref = scores[REFERENCE_LEVEL]
    tail_changes = int(np.sum(z_ref[np.arange(len(z_ref)), np.argmax(y, 1)] != z_ref.max(1)))
    levels[REFERENCE_LEVEL]["score_tail_argmax_changes"] = tail_changes

    n_python = len(images) if not python_samples else min(int(python_samples), len(images))
    python_images = images[:n_python]
    started = time.perf_counter()
    try:
        record_level("qonnx", started, run_qonnx(build.out_dir / "model_qonnx.onnx", python_images, batch_size=100),
                     "qonnx execute_onnx of model_qonnx.onnx (pre-processing merged, tail cut) on raw pixels", alpha)
    except Exception as error:  # a level that cannot run is reported, not fatal
        record_level("qonnx", started, None, "", error=first_line(error))
    for level, step in (("finn_streamlined", "step_streamline"), ("finn_hw_layers", "step_create_dataflow_partition")):
        started = time.perf_counter()
        path = build.step_model(step)
        if not path.exists():
            record_level(level, started, None, "", error=f"{path.name} was not produced by the build")
            continue
        try:
            values, how = run_graph(path, python_images, progress=progress)
            if level == "finn_hw_layers" and affine.get("form") == "popcount":
                values, how, scale = 2 * np.rint(values) - affine["n"], how + "; z = 2p - n", 1.0
            else:
                scale, how = alpha, how + "; z = output / alpha"
            record_level(level, started, values, f"FINN execute_onnx (python), {how}", scale)
        except Exception as error:
            record_level(level, started, None, "", error=first_line(error))

    z_design = resolve_reference_ties(build.out_dir, record, images, z_ref, levels, scores, exacts)
    levels.update(run_hardware_levels(build, images, hardware_levels, node_samples, progress, z_design))
    compared = [lv for lv in levels if lv != REFERENCE_LEVEL]
    failed_levels = [lv for lv in compared if level_status(levels[lv]) == "failed"]
    first_divergent = failed_levels[0] if failed_levels else None
    if not levels[REFERENCE_LEVEL]["executed"] or levels[REFERENCE_LEVEL]["non_integer_outputs"]:
        first_divergent = first_divergent or REFERENCE_LEVEL
        failed_levels = [REFERENCE_LEVEL, *failed_levels]
    not_executed = [lv for lv in levels if not levels[lv].get("executed")]
    tail = record["score_tail"]
    result = {
        "dataset": dataset, "samples": int(len(images)), "python_samples": int(n_python),
        "compared_against": REFERENCE_LEVEL,
        "score_form": f"z = s / alpha, alpha = {alpha:.6g} (the score layer's scale); on the accelerator z = 2p - n",
        "score_tail": {**tail, "float_form_from_z": f"y = {tail['scale'] * alpha:.6g} * z {tail['offset']:+.6g}",
                       "argmax_changes_measured": tail_changes},
        "levels": levels, "first_divergent_level": first_divergent, "not_executed": not_executed,
        "failed_levels": failed_levels,
        "skipped_levels": [lv for lv in compared if level_status(levels[lv]) == "skipped"],
        "ok": first_divergent is None and tail_changes == 0,
    }
    write_validation(build.out_dir, result, scores.get(REFERENCE_LEVEL), labels, "imported model")
    return result


def resolve_reference_ties(build_dir: Path, record: dict[str, Any], images: np.ndarray, z_ref: np.ndarray,
                           levels: dict[str, dict[str, Any]], scores: dict[str, np.ndarray],
                           exacts: dict[str, np.ndarray]) -> np.ndarray:
    """Split each float-compared level's mismatches into those explained by reference near-ties and the
    unexplained ones (which alone fail it); returns the reference with the explained images' ties broken the
    integer design's way, the exact reference of the levels after the integer design."""
    from hw.check.ties import TIE_EPSILON

    compared = [lv for lv in ("qonnx", "finn_streamlined", "finn_hw_layers") if lv in scores]
    wrong = {lv: np.any(scores[lv] != z_ref[:len(scores[lv])], axis=1) | ~exacts[lv] for lv in compared}
    # an explained image gets the integer design's answer, the streamlined graph's: only the images where that
    # graph differs from the reference can be explained (any other level's other differences cannot)
    design_level = "finn_streamlined" if "finn_streamlined" in wrong else None
    candidates = sorted({int(i) for lv in ([design_level] if design_level else compared)
                         for i in np.flatnonzero(wrong[lv])})
    z_design, explained = tie_resolved_reference(build_dir, record, images, z_ref, candidates)
    tied = [i for i, e in explained.items() if e["z"] is not None and e["ties"]]
    for lv in compared:
        n = len(scores[lv])
        ok = np.zeros(n, dtype=bool)
        for i in tied:
            if i < n:
                ok[i] = bool(exacts[lv][i] and np.array_equal(scores[lv][i], z_design[i]))
        unexplained = wrong[lv] & ~ok
        entry = levels[lv]
        entry.update({"explained_by_reference_ties": int((wrong[lv] & ok).sum()),
                      "unexplained_mismatches": int(unexplained.sum()),
                      "first_explained_by_reference_ties": [int(i) for i in np.flatnonzero(wrong[lv] & ok)[:20]],
                      "first_unexplained_mismatches": [int(i) for i in np.flatnonzero(unexplained)[:20]],
                      "reference_tie_epsilon": TIE_EPSILON,
                      "reference_tie_images_analysed": f"{len(explained)} of {len(candidates)}",
                      "status": "failed" if unexplained.any() else "passed"})
        if entry["first_explained_by_reference_ties"]:  # its numbers: the design's v - T, the reference's x
            i = entry["first_explained_by_reference_ties"][0]
            entry["first_reference_tie"] = {"image": i, "tied_elements": explained[i]["ties"],
                                            **(explained[i].get("first_tie") or {})}
        reasons = [explained[i]["unexplained"] for i in np.flatnonzero(unexplained)
                   if i in explained and explained[i]["unexplained"]]
        if reasons:
            entry["first_unexplained_reason"] = reasons[0]
    return z_design


def tie_resolved_reference(build_dir: str | Path, record: dict[str, Any], images: np.ndarray, z_ref: np.ndarray,
                           candidates) -> tuple[np.ndarray, dict[int, dict[str, Any]]]:
    """(the reference scores with every `candidates` image whose float reference sits on near-ties of its sign
    activations replaced by the answer with those ties broken the integer design's way, the analysis of each
    candidate: hw/check/ties.py)."""
    from hw.check.ties import explain_ties
    from hw.check.verify import graph_input

    z_design = z_ref.copy()
    candidates = [int(i) for i in candidates]
    if not candidates or not (Path(build_dir) / "finn" / "step_streamline.onnx").is_file():
        return z_design, {}
    explained = explain_ties(build_dir, record, images, np.array(candidates), graph_input)
    for i, e in explained.items():
        if e["z"] is not None and e["ties"]:
            z_design[i] = e["z"]
    return z_design, explained
