"""`onebit build`: the whole pipeline of one build folder, stage after stage.

checkpoint -> collapse (export/) -> QONNX (export/) -> FINN build (hw/finn/) -> driver/io.json and the
board-side package -> every verification level (hw/check/) -> report.md/report.json (hw/report.py) ->
deployment package (hw/deploy.py). This module is the top of hw/: it imports the rooms below it, none of
them imports it (tests/test_layout.py keeps it so).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python hw/pipeline.py ...` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hw.boards import get_board
from hw.finn.build import BuildResult, build_accelerator
from hw.finn.folding import add_folding_arguments, spec_from_args
from onebit.atomic import write_atomic
from onebit.errors import OnebitError, cli_errors


def finish_build_folder(result: BuildResult) -> dict[str, Any]:
    """The accelerator engineer's hooks: driver/io.json from the final model, the board-side package."""
    extras: dict[str, Any] = {}
    try:
        from hw.finn.io_description import write_io_description  # provided by hw/io_description.py
    except ImportError:
        extras["io_description"] = "not written: hw/io_description.py is not available in this checkout"
    else:
        from qonnx.core.modelwrapper import ModelWrapper

        driver_dir = result.out_dir / "driver"
        driver_dir.mkdir(exist_ok=True)
        extras["io_description"] = str(write_io_description(ModelWrapper(str(result.final_model)), driver_dir))
    package = Path(__file__).resolve().parent / "driver"
    if package.is_dir() and any(package.glob("*.py")):
        target = result.out_dir / "driver"
        target.mkdir(exist_ok=True)
        for item in package.iterdir():
            if item.name == "__pycache__":
                continue
            if item.is_dir():
                shutil.copytree(item, target / item.name, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(item, target / item.name)
        extras["driver"] = str(target)
    result.extras.update(extras)
    return extras


# ---------------------------------------------------------------------------------------------------
# command line: the whole pipeline

def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a model.pt written by onebit (quant_models.train)")
    parser.add_argument("--board", default="Pynq-Z1", help="board preset (default Pynq-Z1; see hw/boards.py)")
    parser.add_argument("--out", type=Path, default=None, help="build folder (default build/<checkpoint name>)")
    add_folding_arguments(parser)
    parser.add_argument("--verify-samples", type=int, default=1000, metavar="N",
                        help="test images verified at every level (default 1000; 0 = whole test set)")
    parser.add_argument("--levels", default=None, metavar="A,B",
                        help="hardware levels after the Python levels: rtl_nodes (Verilator), cppsim (FINN cppsim, "
                             "needs finn-hlslib), all or none (default: every level whose tools are found)")
    parser.add_argument("--node-samples", type=int, default=100, metavar="N",
                        help="test images through every generated node in the hardware levels (default 100; at most "
                             "--verify-samples)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_pipeline(args: argparse.Namespace) -> int:
    """checkpoint -> collapse -> QONNX -> FINN build -> verification -> report; returns the exit code."""
    from export.collapse import collapse
    from export.qonnx import export_qonnx
    from hw.report import print_summary, write_report
    from hw.check.verify import verify_build
    from quant_models.checkpoint import load_checkpoint

    board = get_board(args.board)
    folding = spec_from_args(args)
    if args.verify_samples < 0:
        raise OnebitError(f"--verify-samples must be >= 0 (0 = whole test set), got {args.verify_samples}")
    hardware_levels = _hardware_levels(args)
    trained, meta = load_checkpoint(args.checkpoint)
    out_dir = (args.out or Path("build") / Path(args.checkpoint).stem).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("report.json", "report.md"):  # report.json marks a finished build: never keep an old one
        (out_dir / stale).unlink(missing_ok=True)
    shutil.rmtree(out_dir / "validation", ignore_errors=True)  # `onebit validate` results of the old build
    from hw.deploy import remove_deployment_package

    remove_deployment_package(out_dir)  # nor the previous build's deployment package
    started = time.perf_counter()
    write_atomic(out_dir / "model.pt", lambda tmp: shutil.copy2(args.checkpoint, tmp))
    plain, collapse_report = collapse(trained, meta)
    qonnx_path = export_qonnx(plain, meta, out_dir / "model_qonnx.onnx")
    result = build_accelerator(qonnx_path, out_dir, board, folding, progress=not args.no_progress)
    finish_build_folder(result)
    verification = verify_build(trained, plain, meta, result, samples=args.verify_samples,
                                progress=not args.no_progress, hardware_levels=hardware_levels,
                                node_samples=args.node_samples)
    collapse_report.update(verification.pop("collapse_check", {}))
    report = write_report(result, meta, collapse_report, verification,
                          seconds=time.perf_counter() - started)
    from hw.deploy import make_deployment_package

    if verification["ok"]:  # after the report: the board README quotes its accuracy and FPS
        make_deployment_package(out_dir, report=report, progress=not args.no_progress)
    else:  # a package whose expected outputs the accelerator does not reproduce would mislead
        remove_deployment_package(out_dir)
    print_summary(report)
    return 0 if verification["ok"] else 1


def _hardware_levels(args: argparse.Namespace) -> list[str] | None:
    from hw.check.levels import parse_levels
    from hw.check.verify import LEVELS

    if getattr(args, "node_samples", 100) < 1:
        raise OnebitError(f"--node-samples must be >= 1, got {args.node_samples}")
    try:
        return parse_levels(getattr(args, "levels", None), LEVELS)
    except ValueError as error:
        raise OnebitError(f"--levels: {error}") from None


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onebit build", description="FINN build of a onebit checkpoint for a board, with bit-exact verification")
    add_pipeline_arguments(parser)
    return run_pipeline(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
