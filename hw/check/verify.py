"""Bit-exact verification of every level of a build on the same test images (docs/design.md §4).

Levels, in pipeline order, each reduced to the class scores z (int64, N x classes):
  pytorch_trained    the trained model's score-layer accumulators (OnebitNet.integer_scores)
  pytorch_collapsed  the same for the collapsed plain model (export/collapse.py)
  qonnx              model_qonnx.onnx executed by qonnx's execute_onnx (output z as float)
  finn_streamlined   finn/step_streamline.onnx by FINN's execute_onnx (XNOR-popcount + thresholds; z)
  finn_hw_layers     finn/step_create_dataflow_partition.onnx, the HW-layer graph before specialization,
                     by FINN's Python execution; it outputs the popcounts p, mapped exactly z = 2p - n
Every float output must be an exact integer (else that is reported as a mismatch on that sample). A level
that cannot run is reported with the reason. Every level is compared with the collapsed integer model and
the first that differs is named; the trained model's differences are collapse drift, reported apart and
never failing the build (hw/check/verdict.py: the one rule `onebit validate` applies too).
The PyTorch levels run on all the given images; the Python-execution levels (qonnx, FINN) on the first
`python_samples` of them (0 = all): each level states how many images it compared. Then the levels that
execute hardware code (hw/check/levels.py: rtl_nodes, cppsim, rtl_accelerator) on the first `node_samples`
images, each with per-node rows; any mismatch there also fails the build.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from hw.check.host_input import NAME as HOST_INPUT, check_host_input
from hw.check.levels import host_input
from hw.check.python_exec import chunked, execute_padded, fast_python_execution, parallel_map  # noqa: F401
from hw.check.verdict import (REFERENCE, collapse_drift, compare, error_entry, first_line,  # noqa: F401 (compare)
                              judge, level_status, ties_note, with_status)
from onebit.atomic import save_figure_atomic, write_text_atomic
from onebit.errors import OnebitError

LEVELS = ("pytorch_trained", "pytorch_collapsed", "qonnx", "finn_streamlined", "finn_hw_layers")
PYTHON_LEVELS = ("qonnx", "finn_streamlined", "finn_hw_layers")  # qonnx's/FINN's per-node Python execution
MAX_LISTED = 20


class VerificationError(OnebitError):
    """Verification could not start (no test set, bad sample count)."""


def load_test_set(meta: dict[str, Any], samples: int):
    """(images uint8 N x C x H x W, labels) of the checkpoint's dataset test split; samples=0 -> all."""
    from quant_models.data import load_dataset

    dataset = meta.get("dataset", {}) or {}
    name = dataset.get("name")
    if not name:
        raise VerificationError("the checkpoint does not name its dataset; cannot pick verification images")
    test = load_dataset(name, "test", dataset.get("root"))
    from quant_models.custom_data import content_warning

    warning = content_warning(test, dataset.get("sha256"))
    if warning:
        import sys

        print(warning, file=sys.stderr)
    in_shape = (meta.get("arch") or {}).get("in_shape")
    if in_shape and list(test.images.shape[1:]) != list(in_shape):
        raise VerificationError(f"dataset {name} has images {list(test.images.shape[1:])}, the model takes "
                                f"{list(in_shape)}; pass a dataset of that image shape")
    from quant_models.custom_data import check_classes_fit

    check_classes_fit(test.labels, (meta.get("arch") or {}).get("num_classes"), name)
    if samples:
        test = test.head(samples)
    return test.images, test.labels, name


def _as_integers(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 values, per-sample flag 'all entries were exact integers')."""
    values = np.asarray(values, dtype=np.float64)
    rounded = np.rint(values)
    exact = np.all(rounded == values, axis=tuple(range(1, values.ndim)))
    return rounded.astype(np.int64), exact


def _set_batch(model, batch: int):
    from qonnx.transformation.base import Transformation

    class SetBatch(Transformation):
        def apply(self, model):
            weights = {init.name for init in model.graph.initializer}
            for value in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
                dims = value.type.tensor_type.shape.dim
                if dims and value.name not in weights:
                    dims[0].dim_value = batch
            for node in model.graph.node:
                if node.op_type == "Im2Col":  # qonnx's Im2Col carries its input shape as "(1,H,W,C)"
                    for attribute in node.attribute:
                        if attribute.name == "input_shape" and attribute.s.startswith(b"(1,"):
                            attribute.s = f"({batch},".encode() + attribute.s[3:]
                if node.op_type == "Reshape" and node.domain in ("", "ai.onnx"):
                    target = model.get_initializer(node.input[1])
                    if target is not None and target.size and target[0] in (1, -1) and len(target) > 1:
                        fixed = target.copy()
                        fixed[0] = batch
                        model.set_initializer(node.input[1], fixed)
            return model, False

    return model.transform(SetBatch())


def graph_input(model, x: np.ndarray) -> np.ndarray:
    """Images (N x C x H x W pixels) as the input of a FINN graph `model` (its batch-1 shape but N)."""
    in_shape = model.get_tensor_shape(model.graph.input[0].name)
    x = host_input(model, x)  # bit-packed input: the host's threshold (hw/driver/input_packing.py)
    # The HW-layer graph of a CNN reads NHWC (FINN's streamliner moves the NCHW->NHWC transpose in
    # front of the dataflow partition, i.e. to the host); MLP graphs read the NCHW flatten.
    if x.ndim == 4 and len(in_shape) == 4 and list(in_shape[1:]) == [x.shape[2], x.shape[3], x.shape[1]] \
            and list(in_shape[1:]) != list(x.shape[1:]):
        x = x.transpose(0, 2, 3, 1)
    return x.reshape(len(x), *in_shape[1:]).astype(np.float32)


def _graph_runner(path: Path, batch: int):
    """A function images -> outputs for the graph at `path` (FINN execute_onnx), batched where possible."""
    from finn.core.onnx_exec import execute_onnx
    from qonnx.core.modelwrapper import ModelWrapper

    single = ModelWrapper(str(path))
    in_name, out_name = single.graph.input[0].name, single.graph.output[0].name

    def shaped(x: np.ndarray) -> np.ndarray:
        return graph_input(single, x)

    def run_single(x: np.ndarray) -> np.ndarray:
        return np.concatenate([execute_onnx(single, {in_name: shaped(x[i:i + 1])})[out_name] for i in range(len(x))])

    batched = None
    if batch > 1:
        try:
            batched = _batched_graph_model(single, batch)
        except Exception:
            batched = None

    def run_batched(x: np.ndarray) -> np.ndarray:
        return execute_padded(batched, x, batch, shaped)

    return run_single, (run_batched if batched is not None else None)


def _batched_graph_model(model, batch: int):
    """A copy of a batch-1 FINN graph for batch `batch`, or None if its ops fix the batch at 1.

    Every tensor is batch-first; MVAU/Thresholding nodes carry the batch as numInputVectors[0]; ops with
    other shape attributes (sliding windows, pools) are not batched and make this return None.
    """
    from qonnx.custom_op.registry import getCustomOp

    model = _set_batch(model, batch)
    for node in model.graph.node:
        if node.domain.startswith("finn.custom_op.fpgadataflow"):
            inst = getCustomOp(node)
            try:
                vectors = list(inst.get_nodeattr("numInputVectors"))
            except Exception:
                return None
            if len(vectors) != 1:
                return None
            inst.set_nodeattr("numInputVectors", [batch])
    return model


def run_graph(path: Path, images: np.ndarray, batch: int = 500, progress: bool = False) -> tuple[np.ndarray, str]:
    """Outputs of the ONNX graph at `path` on `images`, and how it ran ("batched N" or "per sample").

    A batched copy is used only after it reproduced the batch-1 graph on the first samples exactly.
    """
    run_single, run_batched = _graph_runner(path, batch)
    probe = images[: min(4, len(images))]
    if run_batched is not None:
        try:
            if np.array_equal(run_batched(probe), run_single(probe)):
                return chunked(run_batched, images, batch * 4, progress, path.stem), f"batched {batch}"
        except Exception:
            pass
    workers = min(os.cpu_count() or 1, 4)
    if workers > 1 and len(images) >= 100:
        return parallel_map(run_single, images, workers, progress, path.stem), f"per sample, {workers} processes"
    return chunked(run_single, images, 50, progress, path.stem), "per sample"


def verify_build(trained, plain, meta: dict[str, Any], build, samples: int = 0, progress: bool = True,
                 images: np.ndarray | None = None, labels: np.ndarray | None = None,
                 python_samples: int | None = None, hardware_levels: list[str] | None = None,
                 node_samples: int | None = None, torch_levels=None) -> dict[str, Any]:
    """Run every level on the same images; returns the verification dict (also written to validation/).

    The Python-execution levels (PYTHON_LEVELS) see the first `python_samples` images (None: the same as
    the others, 0: all of them); every level records how many it compared.
    hardware_levels: names from hw.check.levels.LEVEL_MODULES (None = their defaults, [] = none).
    torch_levels: a hw.check.torch_levels.PendingTorchLevels started before the build, or None.
    """
    from export.collapse import integer_scores, scores_batch, threshold_distances
    from export.qonnx import run_qonnx

    if images is None:
        images, labels, dataset = load_test_set(meta, samples)
    else:
        dataset = (meta.get("dataset") or {}).get("name", "given images")
    affine = build.score_affine
    levels: dict[str, dict[str, Any]] = {}
    scores: dict[str, np.ndarray] = {}

    def record(level: str, started: float, values: np.ndarray | None, how: str, error: str | None = None):
        seconds = time.perf_counter() - started
        if error is not None:  # the level could not run: a failure, never a skip
            levels[level] = error_entry(error, how, seconds)
            return
        entry: dict[str, Any] = {"seconds": round(seconds, 2), "how": how}
        z, exact = _as_integers(values)
        scores[level] = z
        entry.update({"executed": True, **compare(scores.get(REFERENCE, z)[:len(z)], z, exact)})
        if labels is not None:
            entry["accuracy"] = float(np.mean(z.argmax(1) == labels[:len(z)]))
        levels[level] = with_status(entry)

    ready = torch_levels.result(images) if torch_levels is not None else None
    for level, model, note in (("pytorch_collapsed", plain, ""), ("pytorch_trained", trained, " (collapse drift only)")):
        started = time.perf_counter()
        if ready is not None:  # computed by a second process during the FINN build (hw/check/torch_levels.py)
            values, seconds = ready[level]
            record(level, started, values,
                   f"torch, batched {scores_batch(model)}, in a second process during the FINN build{note}")
            levels[level]["seconds"] = round(seconds, 2)
        else:
            record(level, started, integer_scores(model, images), f"torch, batched {scores_batch(model)}{note}")
    levels = {level: levels[level] for level in ("pytorch_trained", "pytorch_collapsed")}  # table order
    started = time.perf_counter()
    try:  # bit-packed input: the driver's DMA bytes against the trained model's first-layer input
        host = check_host_input(trained, build.out_dir, images)
    except Exception as error:  # the driver cannot make the DMA bytes: a failure, never a skip
        message = first_line(error)
        host = {"executed": True, "samples": int(len(images)), "integer_mismatches": int(len(images)),
                "argmax_mismatches": 0, "first_mismatches": [], "seconds": round(time.perf_counter() - started, 2),
                "how": f"failed: the driver's input packing raised {message}"}
    if host is not None:
        levels[HOST_INPUT] = host

    n_python = len(images) if python_samples is None or python_samples == 0 else min(int(python_samples), len(images))
    python_images = images[:n_python]
    started = time.perf_counter()
    try:
        with fast_python_execution():
            record("qonnx", started, run_qonnx(build.out_dir / "model_qonnx.onnx", python_images),
                   "qonnx execute_onnx, batched 1000")
    except Exception as error:  # a level that cannot run is a failure, reported, not fatal
        record("qonnx", started, None, "", first_line(error))

    for level, step in (("finn_streamlined", "step_streamline"), ("finn_hw_layers", "step_create_dataflow_partition")):
        started = time.perf_counter()
        path = build.step_model(step)
        if not path.exists():
            record(level, started, None, "", f"{path.name} was not produced by the build")
            continue
        try:
            with fast_python_execution():
                values, how = run_graph(path, python_images, progress=progress)
            if level == "finn_hw_layers" and affine.get("form") == "popcount":
                values = 2 * np.rint(values) - affine["n"]  # exact: p is an integer count
                how += "; z = 2p - n"
            record(level, started, values, f"FINN execute_onnx (python), {how}")
        except Exception as error:
            record(level, started, None, "", first_line(error))

    levels.update(run_hardware_levels(build, images, hardware_levels, node_samples, progress, scores.get(REFERENCE)))
    verdict = judge(levels)  # every level in the order it ran, against the collapsed model
    first_divergent = verdict["first_divergent_level"]
    not_executed = [lv for lv in levels if not levels[lv].get("executed")]
    result = {
        "dataset": dataset, "samples": int(len(images)), "python_samples": int(n_python),
        "compared_against": REFERENCE,
        "score_form": "z = sum(w*a) over +-1 weights and activations (the score layer's accumulator)",
        "levels": levels, "first_divergent_level": first_divergent, "not_executed": not_executed,
        "failed_levels": verdict["failed_levels"], "skipped_levels": verdict["skipped_levels"],
        "ok": verdict["ok"],
        "collapse_drift": collapse_drift(scores["pytorch_trained"], scores[REFERENCE], labels,
                                         threshold_distances(trained)),
        "collapse_check": {"trained_vs_collapsed_integer_mismatches": levels["pytorch_trained"]["integer_mismatches"],
                           "trained_vs_collapsed_argmax_mismatches": levels["pytorch_trained"]["argmax_mismatches"]},
    }
    _write_validation(build.out_dir, result, scores, labels, (meta.get("dataset") or {}).get("classes"))
    return result


def run_hardware_levels(build, images: np.ndarray, names: list[str] | None, node_samples: int | None,
                        progress: bool, reference: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """The hardware levels (hw/check/levels.py) on the first `node_samples` images; their report entries.

    A level that returns class scores is compared with `reference` (the collapsed integer model) like the others.
    """
    from hw.check.levels import DEFAULT_NODE_SAMPLES, LevelContext, default_levels, run_level

    names = default_levels() if names is None else names
    if not names:
        return {}
    count = min(len(images), DEFAULT_NODE_SAMPLES if node_samples is None else node_samples)
    context = LevelContext(build_dir=build.out_dir, final_model=build.final_model,
                           hw_layers_model=build.step_model("step_create_dataflow_partition"),
                           images=images[:count], progress=progress)
    entries = {}
    for name in names:
        entry = run_level(name, context)
        level_scores = entry.pop("scores", None)
        if level_scores is not None and reference is not None:
            z, exact = _as_integers(level_scores)
            entry.update(compare(reference[:count], z, exact))
        entries[name] = with_status(entry)
    return entries


def mismatch_table(levels: dict[str, dict[str, Any]]) -> list[str]:
    """The per-level verification table (Markdown rows), for validation/mismatches.md and report.md."""
    rows = ["| level | outcome | samples | integer mismatches | argmax mismatches | first mismatching indices | how |",
            "|---|---|---|---|---|---|---|"]
    for level, e in levels.items():  # in the order they ran (pipeline order; imported models have their own)
        status = level_status(e)
        if e.get("executed"):
            argmax = "-" if e["argmax_mismatches"] is None else e["argmax_mismatches"]
            rows.append(f"| {level} | {status} | {e['samples']} | {e['integer_mismatches']}{ties_note(e)} | {argmax} | "
                        f"{e['first_mismatches'][:8]} | {e['how']} ({e['seconds']} s) |")
        elif status == "failed":  # the design could not be run: its first error line
            rows.append(f"| {level} | **failed**: {_cell(e.get('error') or e.get('reason'))} | | | | | |")
        else:
            rows.append(f"| {level} | {_cell(e.get('reason'))} | | | | | |")
    from hw.check.levels import node_table

    return rows + node_table(levels)


def _cell(text) -> str:
    """A Markdown table cell: one line, no column separators."""
    return str(text or "").replace("|", "/").replace("\n", " ")


def _write_validation(out_dir: Path, result: dict[str, Any], scores: dict[str, np.ndarray], labels,
                      classes: list[str] | None) -> None:
    write_validation(out_dir, result, scores.get(REFERENCE), labels, "collapsed integer model", classes)


def write_validation(out_dir: Path, result: dict[str, Any], reference: np.ndarray | None, labels,
                     title: str, classes: list[str] | None = None) -> None:
    """validation/: the per-level table, the verification dict and the reference's confusion matrix
    (confusion.png, with the dataset's class names; `onebit validate` redraws the same file for the
    accelerator's answers)."""
    folder = Path(out_dir) / "validation"
    folder.mkdir(exist_ok=True)
    write_text_atomic(folder / "mismatches.md", "\n".join(mismatch_table(result["levels"])) + "\n")
    write_text_atomic(folder / "verification.json",
                      json.dumps({k: v for k, v in result.items() if k != "collapse_check"}, indent=2))
    if labels is not None and reference is not None:
        predicted = reference.argmax(1)
        k = int(max(labels.max(), predicted.max())) + 1
        matrix = confusion_matrix(labels, predicted, k)
        names = [str(c) for c in classes][:k] if classes and len(classes) >= k else [str(c) for c in range(k)]
        plot_confusion(matrix, names,
                       f"{title} (accuracy {np.trace(matrix) / matrix.sum():.2%})", folder / "confusion.png")


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """k x k counts: row = true class, column = predicted class."""
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def plot_confusion(matrix: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    """The confusion matrix as an annotated heat map PNG (atomic write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=6,
                color="white" if value > matrix.max() / 2 else "black")
    fig.colorbar(image)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
