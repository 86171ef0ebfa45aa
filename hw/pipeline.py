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
from onebit import faults, interrupts
from onebit.atomic import write_atomic
from onebit.buildfolder import BuildFolder
from onebit.errors import OnebitError, cli_errors

# Top-level entries a build writes (FINN's own extras are adopted when they appear); onebit/buildfolder.py
# refuses to start when one of them exists and is not onebit's. A rebuild removes REPLACED first: they
# describe the previous build (its report, validation results and deployment package).
OUTPUTS = ("model.pt", "model_qonnx.onnx", "finn", "hw", "report", "build.log", "folding.json", "skipped.txt",
           "driver", "validation", "report.json", "report.md", "resources.png", "deploy", "deploy.zip",
           "intermediate_models", "template_specialize_layers_config.json", "import.json")
REPLACED = ("report.json", "report.md", "validation", "deploy", "deploy.zip", "import.json")
DEFAULT_PYTHON_SAMPLES = 200  # keeps a CNV build's FINN Python levels near half a minute on 2 cores


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
        # result.final_model is the dataflow child also after ZynqBuild (hw/finn/partition.py); its parent
        # is checked against FINN's own driver shapes.
        extras["io_description"] = str(write_io_description(
            ModelWrapper(str(result.final_model)), driver_dir, accel_clk_mhz=result.board.clock_mhz,
            hw_model=result.final_model.relative_to(result.out_dir).as_posix(),
            partitioned_parent=result.extras.get("partitioned_parent_model")))
    package = Path(__file__).resolve().parent / "driver"
    if package.is_dir() and any(package.glob("*.py")):
        extras["driver"] = str(copy_driver_package(package, result.out_dir / "driver"))
    result.extras.update(extras)
    return extras


def copy_driver_package(package: Path, target: Path) -> Path:
    """onebit's driver package into the build's driver/, each file atomically (a full disk left a 0-byte
    accelerator.py, issue 23)."""
    target.mkdir(exist_ok=True)
    for item in sorted(package.rglob("*")):
        if "__pycache__" in item.relative_to(package).parts or not item.is_file():
            continue
        (target / item.relative_to(package)).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target / item.relative_to(package), lambda tmp, item=item: shutil.copy2(item, tmp))
    return target


# ---------------------------------------------------------------------------------------------------
# command line: the whole pipeline

def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a model.pt written by onebit (quant_models.train), or a "
                        "QONNX model.onnx (Brevitas export_qonnx, QONNX zoo) with its input declared")
    parser.add_argument("--board", default="Pynq-Z1", help="board preset (default Pynq-Z1; see hw/boards.py)")
    parser.add_argument("--out", type=Path, default=None, help="build folder (default build/<checkpoint name>)")
    add_folding_arguments(parser)
    parser.add_argument("--mvau", choices=("hls", "rtl"), default="hls",
                        help="matrix-vector and max-pool nodes: FINN's HLS (default) or onebit's own RTL (hw/rtl), "
                             "which Verilator simulates as a whole accelerator and yosys sizes without Xilinx tools")
    parser.add_argument("--verify-samples", type=int, default=0, metavar="N",
                        help="test images verified at the PyTorch levels (default 0 = the whole test set)")
    parser.add_argument("--python-samples", type=int, default=DEFAULT_PYTHON_SAMPLES, metavar="M",
                        help="of those, the first M verified by qonnx's and FINN's Python execution (slow: "
                        f"~0.1-0.3 s per CNV image; default {DEFAULT_PYTHON_SAMPLES}, 0 = all N)")
    parser.add_argument("--data-root", default=None,
                        help="dataset folder for verification (default: the one recorded at training, else as "
                             "quant_models.data resolves it)")
    parser.add_argument("--levels", default=None, metavar="A,B",
                        help="hardware levels after the Python levels: rtl_nodes (Verilator), cppsim (FINN cppsim, "
                             "needs finn-hlslib), rtl_accelerator (--mvau rtl builds), all or none (default: every "
                             "level whose tools are found)")
    parser.add_argument("--node-samples", type=int, default=100, metavar="N",
                        help="test images through every generated node in the hardware levels (default 100)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    from export.input_declaration import add_import_arguments

    add_import_arguments(parser)  # --dataset, and --input-scale/-offset/-shape/-layout, --sidecar for .onnx


def run_pipeline(args: argparse.Namespace) -> int:
    """checkpoint -> collapse -> QONNX -> FINN build -> verification -> report; returns the exit code."""
    from export.input_declaration import is_qonnx_path, refuse_import_options
    from hw.report import print_summary
    from quant_models.checkpoint import load_checkpoint
    from quant_models.custom_data import with_dataset

    if is_qonnx_path(args.checkpoint):
        return run_imported_pipeline(args)
    refuse_import_options(args)
    board = get_board(args.board)
    folding = spec_from_args(args)
    if args.verify_samples < 0:
        raise OnebitError(f"--verify-samples must be >= 0 (0 = whole test set), got {args.verify_samples}")
    if args.python_samples < 0:
        raise OnebitError(f"--python-samples must be >= 0 (0 = every verified image), got {args.python_samples}")
    args.hardware_levels = _hardware_levels(args)  # a bad --levels fails now, not after the FINN build
    trained, meta = load_checkpoint(args.checkpoint)
    meta = with_dataset(meta, getattr(args, "dataset", None))  # --dataset: verify on other data
    if getattr(args, "data_root", None):
        meta["dataset"] = {**(meta.get("dataset") or {}), "root": str(Path(args.data_root).expanduser().resolve())}
    from hw.check.verify import load_test_set

    load_test_set(meta, 1)  # an unknown dataset or missing files fail now, not after the FINN build
    out_dir = (args.out or Path("build") / Path(args.checkpoint).stem).resolve()
    with BuildFolder(out_dir, "onebit build") as folder:  # writable, locked, dead runs' temporaries gone
        folder.claim(OUTPUTS, replace=REPLACED)  # refuses, before anything changes, if a file is not onebit's
        from hw.deploy import remove_deployment_package

        remove_deployment_package(out_dir)  # the previous build's package (keeps a FINN bitstream)
        folder.remove(REPLACED)  # its report (report.json marks a finished build) and validation results
        report = _build(args, folder, trained, meta, board, folding)
    print_summary(report)
    return 0 if report["verification"]["ok"] else 1


def _build(args: argparse.Namespace, folder: BuildFolder, trained, meta: dict[str, Any], board, folding) -> dict[str, Any]:
    from export.collapse import collapse
    from export.qonnx import export_qonnx
    from hw.check.finished import build_integrity
    from hw.check.torch_levels import start_torch_levels
    from hw.check.verify import verify_build
    from hw.deploy import make_deployment_package, remove_deployment_package
    from hw.report import write_report, write_report_json

    out_dir = folder.path
    before = folder.entries()
    started = time.perf_counter()
    if not (out_dir / "model.pt").exists() or not (out_dir / "model.pt").samefile(args.checkpoint):
        write_atomic(out_dir / "model.pt", lambda tmp: shutil.copy2(args.checkpoint, tmp))
    plain, collapse_report = collapse(trained, meta)
    torch_levels = start_torch_levels(trained, out_dir / "model.pt", meta, args.verify_samples)
    try:
        qonnx_path = export_qonnx(plain, meta, out_dir / "model_qonnx.onnx")
        faults.point("build:after_qonnx")
        result = build_accelerator(qonnx_path, out_dir, board, folding, progress=not args.no_progress,
                                   mvau=getattr(args, "mvau", "hls"))
        finish_build_folder(result)
        faults.point("build:after_finn")
        verification = verify_build(trained, plain, meta, result, samples=args.verify_samples,
                                    progress=not args.no_progress, python_samples=args.python_samples,
                                    hardware_levels=args.hardware_levels, node_samples=args.node_samples,
                                    torch_levels=torch_levels)
    finally:
        if torch_levels is not None:
            torch_levels.close()
    collapse_report.update(verification.pop("collapse_check", {}))
    report = write_report(result, meta, collapse_report, verification,
                          seconds=time.perf_counter() - started, marker=False)
    report["integrity"] = build_integrity(out_dir)  # sha256 of what validation reads (hw/check/finished.py)
    faults.point("build:before_deploy")
    if verification["ok"]:  # after the report: the board README quotes its accuracy and FPS
        make_deployment_package(out_dir, report=report, progress=not args.no_progress,
                                data_root=(meta.get("dataset") or {}).get("root"))
    else:  # a package whose expected outputs the accelerator does not reproduce would mislead
        remove_deployment_package(out_dir)
    folder.adopt_new(before)
    folder.record()
    interrupts.check()
    faults.point("build:before_report_json")
    write_report_json(out_dir, report)  # last: its presence marks a finished build
    return report


def run_imported_pipeline(args: argparse.Namespace) -> int:
    """A QONNX model from elsewhere: declared pre-processing merged in front, score tail recorded
    (export/qonnx_import.py) -> the same FINN build -> every level against the QONNX reference
    (hw/check/imported.py) -> report -> deployment package."""
    from export.input_declaration import declare_input
    from export.qonnx_import import prepare_import, write_import_record
    from hw.check.imported import verify_imported_build
    from hw.check.verify import load_test_set
    from hw.deploy import make_deployment_package, remove_deployment_package
    from hw.check.finished import build_integrity
    from hw.report import print_summary, write_report, write_report_json
    from quant_models.custom_data import normalize_spec

    board = get_board(args.board)
    folding = spec_from_args(args)
    if args.verify_samples < 0:
        raise OnebitError(f"--verify-samples must be >= 0 (0 = whole test set), got {args.verify_samples}")
    if args.python_samples < 0:  # checked for a checkpoint, was ignored for a model.onnx (issue 23)
        raise OnebitError(f"--python-samples must be >= 0 (0 = every verified image), got {args.python_samples}")
    hardware_levels = _hardware_levels(args)
    decl, sidecar = declare_input(args.checkpoint, args.input_scale, args.input_offset, args.input_shape,
                                  args.input_layout, args.sidecar)
    dataset = args.dataset or sidecar.get("dataset")
    if not dataset:
        raise OnebitError(f"{args.checkpoint}: no dataset to verify on; pass --dataset (mnist, fashion-mnist, "
                          "cifar10, folder:PATH, npz:PATH) or put \"dataset\" in the sidecar")
    meta = {"arch": {"name": f"imported {Path(args.checkpoint).name}"}, "estimator": None,
            "dataset": {"name": normalize_spec(dataset)}}
    images, labels, dataset_name = load_test_set(meta, args.verify_samples)  # bad data fails before the build
    out_dir = (args.out or Path("build") / Path(args.checkpoint).stem).resolve()
    with BuildFolder(out_dir, "onebit build") as folder:  # the same folder rules as a checkpoint's build
        folder.claim(OUTPUTS, replace=REPLACED)
        remove_deployment_package(out_dir)
        folder.remove(REPLACED)  # import.json marks the folder as an imported model's build: written anew below
        before = folder.entries()
        started = time.perf_counter()
        record = prepare_import(args.checkpoint, decl, out_dir)
        record["dataset"] = meta["dataset"]["name"]
        if list(images.shape[1:]) != record["input"]["image_shape"]:
            raise OnebitError(f"dataset {dataset_name} has images {list(images.shape[1:])}, the model takes "
                              f"{record['input']['image_shape']} (C,H,W); pass --dataset of that shape or --input-shape")
        result = build_accelerator(out_dir / "model_qonnx.onnx", out_dir, board, folding,
                                   progress=not args.no_progress, mvau=getattr(args, "mvau", "hls"))
        record["score_layer_alpha"] = result.score_affine.get("alpha")
        write_import_record(out_dir, record)
        finish_build_folder(result)
        verification = verify_imported_build(result, record, images, labels, dataset_name,
                                             progress=not args.no_progress, hardware_levels=hardware_levels,
                                             node_samples=args.node_samples)
        report = write_report(result, meta, {"import": record}, verification,
                              seconds=time.perf_counter() - started, marker=False)
        report["integrity"] = build_integrity(out_dir)
        if verification["ok"]:
            make_deployment_package(out_dir, report=report, progress=not args.no_progress)
        folder.adopt_new(before)
        folder.record()
        interrupts.check()
        write_report_json(out_dir, report)  # last: its presence marks a finished build
    print_summary(report)
    return 0 if verification["ok"] else 1


def _hardware_levels(args: argparse.Namespace) -> list[str] | None:
    from hw.check.levels import parse_levels
    from hw.check.verify import LEVELS

    if getattr(args, "node_samples", 100) < 1:
        raise OnebitError(f"--node-samples must be >= 1, got {args.node_samples}")
    try:
        chosen = parse_levels(getattr(args, "levels", None), LEVELS)
    except ValueError as error:
        raise OnebitError(f"--levels: {error}") from None
    if chosen is None:
        from hw.check.levels import default_levels

        default_levels()  # a bad $ONEBIT_LEVELS fails now, not after the FINN build
    return chosen


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onebit build", description="FINN build of a onebit checkpoint for a board, with bit-exact verification")
    add_pipeline_arguments(parser)
    interrupts.install()  # a Ctrl-C during the heavy imports must not be swallowed (onebit/interrupts.py)
    return run_pipeline(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
