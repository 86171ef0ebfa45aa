"""Every training method through the whole toolchain, by the commands a user types (issue #3).

For TFC-w1a1 and CNV-w1a1 on Fashion-MNIST and for each method (ste, irnet, binaryduo, rbonn, hyper):

1. `python -m quant_models.train --model M --estimator E ...`            -> model.pt
2. `python export/to_finn.py model.pt --board Pynq-Z1 --verify-samples N` -> FINN build, integer scores
   compared on N test images at every level (PyTorch trained/collapsed, QONNX, streamlined FINN graph,
   HW-layer graph); TFC: the whole test set, CNV: 1,000 images (FINN's Python execution of the conv
   graph runs one image at a time, ~0.5 s each)
3. `onebit validate BUILD --backend model`                                -> the whole test set through
   PyTorch and the bit-exact accelerator model

and tabulates accuracy, mismatches per level and times as JSON + Markdown under bench/results/. The
short training runs are enough: the point is that each method's checkpoint collapses and reaches the
accelerator bit-exactly, not its accuracy (bench/estimators.py compares accuracy).

    python bench/methods_hw.py                       # both models, all methods (~1 h on 2 CPU cores)
    python bench/methods_hw.py --models tfc --methods irnet,hyper

A rerun skips the steps whose outputs exist in --work (default build/methods_hw).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from onebit.atomic import write_text_atomic  # noqa: E402
from onebit.errors import OnebitError, cli_errors  # noqa: E402

METHODS = ("ste", "irnet", "binaryduo", "rbonn", "hyper")
RESULTS = REPO / "bench" / "results"
# (training options, FINN-level verification samples; 0 = the whole test set)
SETTINGS: dict[str, tuple[list[str], int]] = {
    "tfc": (["--epochs", "5"], 0),
    "cnv": (["--epochs", "1", "--limit-train", "10000"], 1000),
}
LEVELS = ("pytorch_trained", "pytorch_collapsed", "qonnx", "finn_streamlined", "finn_hw_layers")


def _run(command: list[str], log: Path) -> float:
    """Run one CLI command (its output into `log`); returns its wall time, raises on a non-zero exit."""
    started = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise OnebitError(f"`{' '.join(command)}` exited {code}: {tail[0]} (full log {log})")
    return time.perf_counter() - started


def run_one(model: str, method: str, work: Path) -> dict[str, Any]:
    """Train, build and validate one (model, method); returns the row of the results table."""
    folder = work / f"{model}-{method}"
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint, build = folder / "model.pt", folder / "build"
    train_options, verify_samples = SETTINGS[model]
    python = sys.executable
    seconds: dict[str, float] = {}
    if not checkpoint.is_file():
        seconds["train"] = _run([python, "-m", "quant_models.train", "--model", model, "--estimator", method,
                                 "--dataset", "fashion-mnist", "--seed", "0", "--quiet", *train_options,
                                 "--out", str(checkpoint)], folder / "train.log")
    if not (build / "report.json").is_file():
        seconds["build_and_verify"] = _run(
            [python, "export/to_finn.py", str(checkpoint), "--board", "Pynq-Z1", "--out", str(build),
             "--verify-samples", str(verify_samples), "--no-progress"], folder / "build.log")
    if not (build / "validation" / "validation.json").is_file():
        seconds["validate"] = _run([python, "-m", "onebit", "validate", str(build), "--backend", "model"],
                                   folder / "validate.log")
    report = json.loads((build / "report.json").read_text())
    validation = json.loads((build / "validation" / "validation.json").read_text())
    levels = report["verification"]["levels"]
    return {
        "model": model, "method": method,
        "training": " ".join(train_options),
        "finn_samples": report["verification"]["samples"],
        "levels": {name: {key: levels[name].get(key) for key in ("executed", "integer_mismatches",
                                                                 "argmax_mismatches", "seconds", "reason")}
                   for name in LEVELS if name in levels},
        "accelerator_model": {key: validation[key] for key in ("samples", "mismatches", "software_accuracy",
                                                               "accelerator_accuracy", "accelerator_images_per_s")},
        "estimate_fps": report.get("estimate", {}).get("fps"),
        "seconds": seconds,
        "build": str(build.relative_to(REPO)) if build.is_relative_to(REPO) else str(build),
    }


def total_mismatches(row: dict[str, Any]) -> int:
    return (sum(int(level.get("integer_mismatches") or 0) for level in row["levels"].values())
            + int(row["accelerator_model"]["mismatches"]))


def write_reports(rows: list[dict[str, Any]], stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stem.with_suffix(".json"), json.dumps({"runs": rows}, indent=1))
    lines = [
        "# Every training method through FINN to the accelerator model",
        "",
        "Fashion-MNIST, Pynq-Z1 build (FINN target 10,000 FPS folding), seed 0. Each row ran the user's three "
        "commands: `python -m quant_models.train`, `python export/to_finn.py model.pt` and "
        "`onebit validate BUILD --backend model`. Cells are integer-score mismatches / images compared "
        "(argmax mismatches in brackets); a level that could not run says so.",
        "",
        "| model | method | training | test accuracy (all images) | PyTorch collapsed | QONNX | FINN streamlined | FINN HW layers "
        "| accelerator model | all levels |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = []
        for name in LEVELS[1:]:
            level = row["levels"].get(name)
            if not level or not level.get("executed"):
                cells.append(f"not run ({(level or {}).get('reason') or 'missing'})")
            else:
                cells.append(f"{level['integer_mismatches']} / {row['finn_samples']} ({level['argmax_mismatches']})")
        accel = row["accelerator_model"]
        cells.append(f"{accel['mismatches']} / {accel['samples']}")
        verdict = "bit-exact" if total_mismatches(row) == 0 else f"**{total_mismatches(row)} mismatches**"
        acc = f"{100 * accel['software_accuracy']:.2f}%"
        lines.append(f"| {row['model'].upper()}-w1a1 | {row['method']} | {row['training']} | {acc} | "
                     + " | ".join(cells) + f" | {verdict} |")
    write_text_atomic(stem.with_suffix(".md"), "\n".join(lines) + "\n")


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/methods_hw.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tfc,cnv", help="comma list of tfc,cnv")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of " + ", ".join(METHODS))
    parser.add_argument("--work", type=Path, default=REPO / "build" / "methods_hw")
    parser.add_argument("--out", type=Path, default=RESULTS / "methods_hw", help="result stem")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(models) - set(SETTINGS)) + sorted(set(methods) - set(METHODS))
    if unknown:
        raise OnebitError(f"unknown model/method {unknown}; models: {', '.join(SETTINGS)}; methods: {', '.join(METHODS)}")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    from tqdm import tqdm

    rows = []
    previous = {(r["model"], r["method"]): r for r in json.loads(args.out.with_suffix(".json").read_text())["runs"]} \
        if args.out.with_suffix(".json").is_file() else {}
    for model, method in tqdm([(m, e) for m in models for e in methods], desc="methods to hardware", unit="run"):
        rows.append(run_one(model, method, args.work))
        tqdm.write(f"{model} {method}: {total_mismatches(rows[-1])} mismatches", file=sys.stderr)
        merged = {**previous, **{(r["model"], r["method"]): r for r in rows}}
        write_reports(list(merged.values()), args.out)
    print(args.out.with_suffix(".md").read_text())
    return 1 if any(total_mismatches(r) for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
