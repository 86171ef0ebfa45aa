"""`onebit validate BUILD_DIR`: a test set through software inference and through the accelerator, compared.

Software: the build's checkpoint (model.pt) collapsed to its integer form (export.collapse) in PyTorch,
giving the class scores z of every image. Accelerator: the board (pynq, the bitfile in the build) when run
on a PYNQ board, the bit-exact accelerator model (hw/check/accel_model.py) elsewhere, both through the same
driver path (hw/driver). Reports both accuracies, the number of samples whose integer scores differ and
the first of them, a confusion matrix PNG and images/s under BUILD_DIR/validation/. Exit status 1 on any
mismatch, 2 on bad input. Then the hardware levels (hw/check/levels.py: rtl_nodes = every RTL node's
Verilog in Verilator, cppsim = every HLS node in FINN's C++ simulation where finn-hlslib is found) on the
first --node-samples images, selectable with --levels.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from hw.check.verify import confusion_matrix, plot_confusion
from onebit.atomic import write_text_atomic
from onebit.errors import OnebitError, cli_errors
from onebit.invocation import program_name

# What each selectable hardware level executes (`--levels` help; tests check it names every level).
LEVEL_HELP = {
    "rtl_nodes": "rtl_nodes (every FINN *_rtl node in Verilator)",
    "cppsim": "cppsim (every *_hls node in FINN's C++ simulation; needs finn-hlslib)",
    "rtl_accelerator": "rtl_accelerator (the whole --mvau rtl accelerator in Verilator)",
}


def on_pynq_board() -> bool:
    """True where pynq finds an FPGA device (a PYNQ board image), False elsewhere."""
    import warnings

    try:
        # Off a board pynq's probe warns "No devices found, is the XRT environment sourced?": that is the
        # answer to this question, not something an x86 user must act on.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pynq

            return len(pynq.Device.devices) > 0
    except Exception:  # pynq missing, or its device probing fails off-board
        return False


def check_build_dir(build_dir: Path) -> None:
    if build_dir.is_file():
        raise OnebitError(f"{build_dir} is a file, not a build folder: validate takes the folder `onebit build` wrote "
                          f"(`onebit build {build_dir} --out build/{build_dir.stem}`, then `onebit validate "
                          f"build/{build_dir.stem}`)")
    if not build_dir.is_dir():
        raise OnebitError(f"{build_dir}: no such build folder; run `onebit build model.pt --out {build_dir}` first")
    from hw.check.finished import stopped_message

    if (stopped := stopped_message(build_dir)) is not None:  # --stop-after: say how to continue
        raise OnebitError(stopped)
    if not (build_dir / "driver" / "io.json").is_file():
        raise OnebitError(f"{build_dir}: no driver/io.json (the I/O description); the build did not finish, "
                          "rerun `onebit build`")
    if not (build_dir / "model.pt").is_file() and not (build_dir / "import.json").is_file():
        raise OnebitError(f"{build_dir}: no model.pt (the checkpoint the build came from) nor import.json (an "
                          "imported model.onnx's record); copy it there or rerun `onebit build`")


def software_scores(build_dir: Path, images: np.ndarray, with_trained: bool = False):
    """Integer class scores z of the collapsed checkpoint in PyTorch (and of the trained model, if asked; None
    for an imported model, whose reference is the QONNX model itself)."""
    from hw.check.imported import is_imported_build, reference_scores

    if is_imported_build(build_dir):
        reference = reference_scores(build_dir, images)
        return (reference, None) if with_trained else reference
    import quant_models.compat  # noqa: F401  (Brevitas on torch 2.13)
    from export.collapse import collapse, integer_scores
    from quant_models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(build_dir / "model.pt")
    plain, _ = collapse(model, meta)
    if with_trained:
        return integer_scores(plain, images), integer_scores(model, images)
    return integer_scores(plain, images)


def _threshold_distances(build_dir: Path) -> np.ndarray:
    """How close the checkpoint's BatchNorm thresholds come to integers (the collapse drift explanation)."""
    import quant_models.compat  # noqa: F401  (Brevitas on torch 2.13)
    from export.collapse import threshold_distances
    from quant_models.checkpoint import load_checkpoint

    return threshold_distances(load_checkpoint(build_dir / "model.pt")[0])


def run_build_levels(build_dir: Path, images: np.ndarray, names: list[str] | None, node_samples: int | None,
                     progress: bool, reference: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """The hardware levels on a finished build folder (FINN's scratch: the build's hw/, as during the build).

    `reference`: the software scores of `images`, which a level that outputs class scores is compared with.
    """
    from types import SimpleNamespace

    from hw.check.accel_model import final_model_path
    from hw.check.verify import run_hardware_levels
    from hw.finn.env import prepare_finn

    io_json = build_dir / "driver" / "io.json"
    hw_model = json.loads(io_json.read_text()).get("hw_model") if io_json.is_file() else None
    final = final_model_path(build_dir, hw_model)  # the same rule as the accelerator model: never by mtime
    if not final.is_file():
        raise OnebitError(f"{build_dir}: no final FINN model ({final.name}); rerun `onebit build`")
    build = SimpleNamespace(out_dir=build_dir, final_model=final,
                            step_model=lambda step: build_dir / "finn" / f"{step}.onnx")
    prepare_finn(build_dir / "hw")
    return run_hardware_levels(build, images, names, node_samples, progress, reference)


def make_accelerator(build_dir: Path, backend: str, batch_size: int | None, accel_model=None):
    """The driver for a build: board or accelerator model (explicit; 'auto' picks by the machine)."""
    from hw.driver import Accelerator, DriverError, IOSpec

    try:
        spec = IOSpec.load(build_dir / "driver" / "io.json")
        if backend == "auto":
            backend = "board" if on_pynq_board() else "model"
        if backend == "model" and accel_model is None:
            from hw.check.accel_model import AcceleratorModel

            accel_model = AcceleratorModel.from_build(build_dir)
        bitfile = None
        if backend == "board" and spec.bitfile:
            from onebit.buildfolder import inside  # io.json is user-editable: never a path out of the build

            bitfile = inside(build_dir, f"deploy/{spec.bitfile}")
            bitfile = bitfile if bitfile.is_file() else inside(build_dir, f"driver/{spec.bitfile}")
        return Accelerator(spec, backend=backend, model=accel_model, bitfile=bitfile, batch_size=batch_size)
    except DriverError as error:
        raise OnebitError(str(error)) from None


def validate_build(build_dir: str | Path, dataset: str | None = None, limit: int | None = None,
                   backend: str = "auto", batch_size: int | None = None, cppsim: bool = False,
                   data_root: str | None = None, accel_model=None, progress: bool = True,
                   write: bool = True, levels: list[str] | None = None,
                   node_samples: int | None = None) -> dict[str, Any]:
    """Run the comparison and return the report (also written to BUILD_DIR/validation/ when `write`).

    Only a finished build whose files match their recorded sha256 is validated; with `write` the folder
    is locked and checked writable before any work (onebit/buildfolder.py). `levels`/`node_samples`: the
    hardware levels (hw/check/levels.py) run on the build after the accelerator comparison.
    """
    from hw.check.finished import check_build_integrity, finished_report
    from onebit.buildfolder import BuildFolder

    build_dir = Path(build_dir)
    check_build_dir(build_dir)
    build_report = finished_report(build_dir)  # an interrupted build is not validated
    integrity = check_build_integrity(build_dir, build_report)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise OnebitError(f"--limit must be a whole number >= 1, got {limit!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise OnebitError(f"--batch-size must be a whole number >= 1, got {batch_size!r}")
    folder = BuildFolder(build_dir, "onebit validate", create=False, option="BUILD_DIR") if write else None
    if folder is not None:  # writable, not in use, its validation/ onebit's: checked before any work
        folder.open()
    try:
        if folder is not None:
            folder.claim(["validation"])
        report = _validate(build_dir, dataset, limit, backend, batch_size, cppsim, data_root, accel_model,
                           progress, write, {"integrity": integrity,
                                             "build_verification": build_verification(build_report)},
                           levels, node_samples,
                           default_root=((build_report.get("checkpoint") or {}).get("dataset") or {}).get("root"))
        if folder is not None:
            folder.record(["validation"])
        return report
    finally:
        if folder is not None:
            folder.release()


def build_verification(build_report: dict[str, Any]) -> dict[str, Any]:
    """What the build's own verification (report.json, written by `onebit build`) concluded."""
    ver = build_report.get("verification") or {}
    levels = ver.get("levels") or {}
    from hw.check.verdict import level_status

    failed = ver.get("failed_levels")
    if failed is None:  # a report written before levels had a status
        failed = [lv for lv, e in levels.items() if lv not in ("pytorch_trained", "pytorch_collapsed")
                  and level_status(e) == "failed"]
    return {"ok": bool(ver.get("ok", True)) and not failed, "first_divergent_level": ver.get("first_divergent_level"),
            "failed_levels": list(failed)}


def _validate(build_dir: Path, dataset: str | None, limit: int | None, backend: str, batch_size: int | None,
              cppsim: bool, data_root: str | None, accel_model, progress: bool, write: bool,
              extra: dict[str, Any], levels: list[str] | None = None, node_samples: int | None = None,
              default_root: str | None = None) -> dict[str, Any]:
    from hw.check.imported import build_meta
    from hw.check.verdict import collapse_drift, compare, judge
    from quant_models.data import load_dataset

    meta = build_meta(build_dir)  # the checkpoint's meta, or an imported model's record
    name = dataset or meta.get("dataset", {}).get("name")
    if not name:
        raise OnebitError(f"{build_dir}/model.pt names no dataset; pass --dataset")
    if data_root is None and not dataset:  # where training (or the build's --data-root) found it
        data_root = (meta.get("dataset") or {}).get("root") or default_root
    data = load_dataset(name, "test", data_root)
    from quant_models.custom_data import content_warning

    warning = None if dataset else content_warning(data, meta["dataset"].get("sha256"))
    if warning:
        print(warning)
    images, labels = data.images, data.labels
    if limit is not None:
        images, labels = images[:limit], labels[:limit]

    accelerator = make_accelerator(build_dir, backend, batch_size, accel_model)
    if tuple(images.shape[1:]) != accelerator.spec.image_shape:
        raise OnebitError(f"dataset {name} has images {images.shape[1:]}, the accelerator takes "
                          f"{accelerator.spec.image_shape}; pass the dataset the model was trained on")
    from quant_models.custom_data import check_classes_fit

    check_classes_fit(data.labels, accelerator.spec.num_classes, name)

    t0 = time.perf_counter()
    z_sw, z_trained = software_scores(build_dir, images, with_trained=True)
    sw_seconds = time.perf_counter() - t0

    chunks = range(0, len(images), accelerator.batch_size)
    if progress:
        from onebit.progress import bar as progress_bar

        chunks = progress_bar(chunks, desc=f"accelerator ({accelerator.backend})", unit="batch", leave=True)
    t0 = time.perf_counter()
    z_hw = np.concatenate([accelerator.predict(images[s:s + accelerator.batch_size]).scores for s in chunks])
    hw_seconds = time.perf_counter() - t0

    if z_sw.shape != z_hw.shape:
        raise OnebitError(f"software scores {z_sw.shape} and accelerator scores {z_hw.shape} differ in shape; "
                          "the build does not belong to this checkpoint")
    mismatched = np.flatnonzero(np.any(z_sw != z_hw, axis=1))
    reference_ties, z_float = None, z_sw
    if "import" in meta and len(mismatched):  # the float reference's near-ties, broken as the design breaks them
        from hw.check.imported import tie_resolved_reference

        z_sw, analysed = tie_resolved_reference(build_dir, meta["import"], images, z_sw, mismatched)
        tied = [i for i, e in sorted(analysed.items()) if e["z"] is not None and e["ties"]]
        reference_ties = {"images": len(tied), "first": tied[:10],
                          "how": "the float reference with its sign-activation near-ties broken the integer design's "
                                 "way (hw/check/ties.py); the accelerator is compared with it exactly"}
        mismatched = np.flatnonzero(np.any(z_sw != z_hw, axis=1))
    pred_sw, pred_hw = z_sw.argmax(axis=1), z_hw.argmax(axis=1)
    k = z_hw.shape[1]
    # the same rule as `onebit build` (hw/check/verdict.py): the collapsed model is the reference
    verdict = judge({"pytorch_collapsed": compare(z_sw, z_sw), "accelerator": compare(z_sw, z_hw)})
    report: dict[str, Any] = {
        "build": str(build_dir), "dataset": name, "samples": int(len(images)),
        "backend": accelerator.backend,
        "software": ("QONNX reference: the imported model on the declared float input" if "import" in meta
                     else "PyTorch, collapsed checkpoint"),
        "accelerator": ("PYNQ board (bitfile)" if accelerator.backend == "board"
                        else "bit-exact accelerator model (no board)"),
        "software_accuracy": float(np.mean(z_float.argmax(axis=1) == labels)),
        "accelerator_accuracy": float(np.mean(pred_hw == labels)),
        "mismatches": int(len(mismatched)),
        "first_mismatches": [int(i) for i in mismatched[:10]],
        **({"reference_ties": reference_ties} if reference_ties else {}),
        "argmax_disagreements": int(np.sum(pred_sw != pred_hw)),
        "software_images_per_s": float(len(images) / sw_seconds),
        "accelerator_images_per_s": float(len(images) / hw_seconds),
        "range_violations": dict(getattr(accelerator.model, "range_violations", {}) or {}),
        "confusion_matrix": confusion_matrix(labels, pred_hw, k).tolist(),
        "ok": verdict["ok"], "compared_against": verdict["reference"],
        # an imported model has no trained PyTorch model: no collapse to drift from
        "collapse_drift": (collapse_drift(z_trained, z_sw, labels, _threshold_distances(build_dir))
                           if z_trained is not None else None), **extra,
    }
    if cppsim:  # the older flag: cppsim in addition to the selected levels
        from hw.check.levels import default_levels

        levels = list(dict.fromkeys([*(default_levels() if levels is None else levels), "cppsim"]))
    if levels is None or levels:
        report["levels"] = run_build_levels(build_dir, images, levels, node_samples, progress, z_sw)
        report["level_mismatches"] = sum(e.get("integer_mismatches", 0) for e in report["levels"].values()
                                         if e.get("executed"))
        level_verdict = judge(report["levels"])
        report["failed_levels"], report["skipped_levels"] = level_verdict["failed_levels"], level_verdict["skipped_levels"]
        report["ok"] = report["ok"] and level_verdict["ok"]
    if not (report.get("build_verification") or {}).get("ok", True):
        report["ok"] = False  # this run may agree, but the build itself was not verified: say so, fail
    if write:
        out = build_dir / "validation"
        out.mkdir(exist_ok=True)
        classes = list(getattr(data, "classes", [])) or [str(i) for i in range(k)]
        plot_confusion(np.array(report["confusion_matrix"]), classes[:k],
                       f"{name} test, {report['accelerator']}\naccuracy {report['accelerator_accuracy']:.2%}, "
                       f"{report['mismatches']} mismatches vs software", out / "confusion.png")
        write_text_atomic(out / "validation.json", json.dumps(report, indent=2))
    return report


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"validation of {r['build']} on {r['samples']} {r['dataset']} test images",
        f"  accelerator: {r['accelerator']}",
        f"  software ({r.get('software', 'PyTorch, collapsed checkpoint')}) accuracy: {r['software_accuracy']:.2%}  "
        f"({r['software_images_per_s']:.0f} images/s)",
        f"  accelerator accuracy: {r['accelerator_accuracy']:.2%}  ({r['accelerator_images_per_s']:.0f} images/s)",
        f"  integer score mismatches: {r['mismatches']}" + (f" (first at {r['first_mismatches']})" if r["mismatches"] else ""),
    ]
    from hw.check.verdict import describe_level, drift_line

    if (r.get("reference_ties") or {}).get("images"):
        ties = r["reference_ties"]
        lines.append(f"  reference ties (not mismatches): on {ties['images']} images {ties['first']} the float "
                     "reference sits on a tie of a sign activation; compared with it broken the integer design's way")
    if drift_line(r.get("collapse_drift") or {}):
        lines.append(f"  {drift_line(r['collapse_drift'])}")
    for name, e in (r.get("levels") or {}).items():
        lines.append(f"  {name}: {describe_level(e)}")
    if r["range_violations"]:
        lines.append(f"  values outside their FINN datatype (the hardware would wrap them): {r['range_violations']}")
    built = r.get("build_verification") or {}
    if not built.get("ok", True):
        lines.append(f"  THE BUILD'S OWN VERIFICATION FAILED (report.json): first divergent level "
                     f"{built.get('first_divergent_level')}, failed levels {built.get('failed_levels')}; this build "
                     "is not verified whatever this run shows: fix the cause and rerun `onebit build`")
    lines.append(f"  verdict: {'passed' if r['ok'] else 'FAILED'}"
                 + (f" (failed levels: {', '.join(r['failed_levels'])})" if r.get("failed_levels") else "")
                 + (f"; skipped: {', '.join(r['skipped_levels'])}" if r.get("skipped_levels") else ""))
    return "\n".join(lines)


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=program_name("onebit validate"), description=__doc__.splitlines()[0])
    parser.add_argument("build_dir", type=Path, help="a build folder written by `onebit build`")
    parser.add_argument("--dataset", help="test set: mnist, fashion-mnist, cifar10, folder:PATH, npz:PATH "
                        "(default: the checkpoint's dataset, or the imported model's)")
    parser.add_argument("--data-root", help="dataset folder (default: as quant_models.data resolves it)")
    parser.add_argument("--limit", type=int, help="first N test images only")
    parser.add_argument("--backend", choices=("auto", "board", "model"), default="auto",
                        help="board (PYNQ), model (bit-exact accelerator model) or auto (board where one is)")
    parser.add_argument("--batch-size", type=int, help="images per DMA transfer (default: io.json's)")
    # The older spelling of `--levels ...,cppsim`: kept working, not listed (one way to ask for a level).
    parser.add_argument("--cppsim", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--levels", default=None, metavar="A,B",
                        help="hardware levels: " + ", ".join(LEVEL_HELP.values()) + ", all or none "
                             "(default: every level whose tools are found; $ONEBIT_LEVELS)")
    parser.add_argument("--node-samples", type=int, default=100, metavar="N",
                        help="test images through every generated node in the hardware levels (default 100)")
    args = parser.parse_args(argv)
    from hw.check.levels import parse_levels
    from hw.check.verify import LEVELS

    if args.node_samples < 1:
        raise OnebitError(f"--node-samples must be >= 1, got {args.node_samples}")
    try:
        levels = parse_levels(args.levels, LEVELS)
    except ValueError as error:
        raise OnebitError(f"--levels: {error}") from None
    report = validate_build(args.build_dir, args.dataset, args.limit, args.backend, args.batch_size,
                            args.cppsim, args.data_root, progress=not args.no_progress, levels=levels,
                            node_samples=args.node_samples)
    print(format_report(report))
    print(f"  written: {args.build_dir / 'validation'}/validation.json, confusion.png")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
