"""`onebit build`: the whole pipeline of one build folder, stage after stage.

checkpoint -> collapse (export/) -> QONNX (export/) -> FINN build (hw/finn/) -> driver/io.json and the
board-side package -> every verification level (hw/check/) -> report.md/report.json (hw/report.py) ->
deployment package (hw/deploy.py). This module is the top of hw/: it imports the rooms below it, none of
them imports it (tests/test_layout.py keeps it so).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shutil
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python hw/pipeline.py ...` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hw.boards import Board, get_board
from hw.finn.build import TOOL_STEPS, BuildResult, build_accelerator
from hw.finn.folding import spec_from_args
from hw.options import DEFAULT_PYTHON_SAMPLES, OPTIONS_FILE, BuildOptions, OptionsError, options_from_command_line, resolved
from onebit import __version__, faults, interrupts
from onebit.atomic import write_atomic, write_text_atomic
from onebit.buildfolder import BuildFolder, sha256_file
from onebit.errors import OnebitError, cli_errors
from onebit.invocation import program_name
from onebit.log import build_log, get_logger

LOG = get_logger("build")

# Top-level entries a build writes (FINN's own extras are adopted when they appear); onebit/buildfolder.py
# refuses to start when one of them exists and is not onebit's. A rebuild removes REPLACED first: they
# describe the previous build (its report, validation results and deployment package).
OUTPUTS = ("model.pt", "model_qonnx.onnx", "finn", "hw", "report", "build.log", "folding.json", "skipped.txt",
           "driver", "validation", "report.json", "report.md", "resources.png", "deploy", "deploy.zip",
           "intermediate_models", "template_specialize_layers_config.json", "import.json", OPTIONS_FILE,
           "dataflow_build_config.json")
REPLACED = ("report.json", "report.md", "validation", "deploy", "deploy.zip", "import.json")
TOOL_STEP_NAMES = [name for name, _ in TOOL_STEPS]
__all__ = ["DEFAULT_PYTHON_SAMPLES", "BuildOptions", "build", "run_pipeline", "main"]


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
# the whole pipeline, from one BuildOptions (hw/options.py)

def add_pipeline_arguments(parser: argparse.ArgumentParser, suppress_defaults: bool = False) -> None:
    """Every BuildOptions field as a flag, plus --config FILE and --list-steps."""
    BuildOptions.add_arguments(parser, suppress_defaults=suppress_defaults)
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help=f"build options from FILE (a build folder's {OPTIONS_FILE}, or JSON/YAML with the same "
                             "keys); flags given here override its values")
    parser.add_argument("--list-steps", action="store_true",
                        help="print this build's step list (for --stop-after/--start-from) and exit")


def build(options: BuildOptions | str | Path, **overrides: Any) -> dict[str, Any]:
    """The Python API (`from onebit import build, BuildOptions`): build, verify, report; returns report.json's
    dict (report["artifacts"]["build_dir"] is the build folder), or for --stop-after a dict with "stopped_after",
    "next_step" and "build_dir". Raises OnebitError for bad input; a failed verification is report["verification"]["ok"]
    False (the report says where)."""
    if not isinstance(options, BuildOptions):
        options = BuildOptions(checkpoint=options)
    if overrides:
        options = options.replace(**overrides)
    from export.input_declaration import is_qonnx_path

    if options.checkpoint is None:
        raise OptionsError("no model given: BuildOptions(checkpoint='model.pt') (or a model.onnx)")
    options = resolved(options)
    return _run_imported(options) if is_qonnx_path(options.checkpoint) else _run_checkpoint(options)


def run_pipeline(options: BuildOptions | argparse.Namespace) -> int:
    """checkpoint -> collapse -> QONNX -> FINN build -> verification -> report; prints the summary, returns the
    exit code (0 also for a build stopped on request with --stop-after)."""
    from hw.report import print_summary

    if isinstance(options, argparse.Namespace):
        options = BuildOptions.from_namespace(options)
    report = build(options)
    if "stopped_after" in report:
        print(f"stopped after {report['stopped_after']} (--stop-after): the build is not finished (no report). "
              f"Continue with: {report['continue']}")
        return 0
    with build_log(Path(report["artifacts"]["build_dir"]) / "build.log"):  # the summary in the log too
        print_summary(report)
    return 0 if report["verification"]["ok"] else 1


def _board(options: BuildOptions) -> Board:
    """The board preset, at --clock-mhz where given: FINN's synthesis clock, folding, I/O bound and estimates."""
    board = get_board(options.board)
    return dataclasses.replace(board, clock_ns=1000.0 / options.clock_mhz) if options.clock_mhz else board


def _folding(options: BuildOptions):
    return spec_from_args(options)  # reads and checks a folding file; auto-fold's presence


def _start_build_folder(folder: BuildFolder, options: BuildOptions) -> None:
    """Claim what a build writes, remove the previous build's report and package, record the options."""
    folder.claim(OUTPUTS, replace=REPLACED)  # refuses, before anything changes, if a file is not onebit's
    from hw.deploy import remove_deployment_package

    remove_deployment_package(folder.path)  # the previous build's package (keeps a FINN bitstream)
    folder.remove(REPLACED)  # its report (report.json marks a finished build) and validation results
    if not options.start_from:  # a resume writes them once the saved steps are accepted (_record_options)
        _record_options(folder, options)


def _record_options(folder: BuildFolder, options: BuildOptions) -> None:
    write_text_atomic(folder.path / OPTIONS_FILE, options.to_json())
    folder.record([OPTIONS_FILE])


def _check_resumed_model(out_dir: Path, checkpoint_sha256: str) -> None:
    """Before model.pt is replaced: --start-from with another checkpoint than the saved steps were built from."""
    from hw.finn.steps import StepError, read_record

    built_from = ((read_record(out_dir) or {}).get("fingerprint") or {}).get("model_sha256")
    if built_from is not None and built_from != checkpoint_sha256:
        raise StepError(f"--start-from: the saved steps in {out_dir} were built from another model (sha256 of the "
                        "checkpoint differs); rerun without --start-from")


def _stopped(options: BuildOptions, folder: BuildFolder, before: set[str], result: BuildResult) -> dict[str, Any]:
    folder.adopt_new(before)
    folder.record()
    follow = (f"onebit build --config {options.out / OPTIONS_FILE} --start-from {result.extras['next_step']}")
    return {"stopped_after": result.extras["stopped_after"], "next_step": result.extras["next_step"],
            "build_dir": str(options.out), "continue": follow}


def _run_checkpoint(options: BuildOptions) -> dict[str, Any]:
    from export.input_declaration import refuse_import_options
    from quant_models.checkpoint import load_checkpoint
    from quant_models.custom_data import with_dataset

    refuse_import_options(options)
    board = _board(options)
    folding = _folding(options)
    hardware_levels = _hardware_levels(options)  # a bad --levels fails now, not after the FINN build
    trained, meta = load_checkpoint(options.checkpoint)
    arch = getattr(trained, "arch", {}) or {}
    if options.input_packing == "host" and (arch.get("input_bits") != 1 or arch.get("name") == "cnv"):
        raise OnebitError(f"--input-packing host needs a binary-input MLP (trained with --input-bits 1; TFC, SFC or "
                          f"LFC); {options.checkpoint} is a {arch.get('name')} with input_bits={arch.get('input_bits')}: "
                          "its accelerator reads the pixels, use --input-packing none or auto")
    meta = with_dataset(meta, options.dataset)  # --dataset: verify on other data
    if options.data_root:
        meta["dataset"] = {**(meta.get("dataset") or {}), "root": str(Path(options.data_root).expanduser().resolve())}
    from hw.check.verify import load_test_set

    load_test_set(meta, 1)  # an unknown dataset or missing files fail now, not after the FINN build
    with BuildFolder(options.out, "onebit build") as folder:  # writable, locked, dead runs' temporaries gone
        _start_build_folder(folder, options)
        with build_log(folder.path / "build.log"):  # onebit's messages beside FINN's, timestamped
            LOG.info("onebit %s build of %s for %s into %s", __version__, options.checkpoint, board.name, folder.path)
            return _build(options, folder, trained, meta, board, folding, hardware_levels)


def _build(options: BuildOptions, folder: BuildFolder, trained, meta: dict[str, Any], board, folding,
           hardware_levels: list[str] | None) -> dict[str, Any]:
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
    checkpoint_sha256 = sha256_file(options.checkpoint)
    if options.start_from:
        _check_resumed_model(out_dir, checkpoint_sha256)
    if not (out_dir / "model.pt").exists() or not (out_dir / "model.pt").samefile(options.checkpoint):
        write_atomic(out_dir / "model.pt", lambda tmp: shutil.copy2(options.checkpoint, tmp))
    LOG.info("collapse to binary weights and integer thresholds")
    plain, collapse_report = collapse(trained, meta)
    verifying = options.stop_after is None
    torch_levels = (start_torch_levels(trained, out_dir / "model.pt", meta, options.verify_samples)
                    if verifying else None)  # a CNN's PyTorch levels run in a second process during the FINN build
    try:
        qonnx_path = out_dir / "model_qonnx.onnx"
        if not options.start_from:  # a resumed build reuses the QONNX model its saved steps were built from
            export_qonnx(plain, meta, qonnx_path)
        elif not qonnx_path.is_file():
            raise OnebitError(f"--start-from: {qonnx_path} is missing; rerun without --start-from")
        faults.point("build:after_qonnx")
        LOG.info("FINN build (%s)", folding.describe())
        result = build_accelerator(qonnx_path, out_dir, board, folding, progress=not options.no_progress,
                                   mvau=options.mvau, start_from=options.start_from, stop_after=options.stop_after,
                                   fingerprint={"model_sha256": checkpoint_sha256,
                                                "input_packing": options.input_packing},
                                   input_packing=options.input_packing, fifo_sizing=options.fifo_sizing)
        if options.start_from:
            _record_options(folder, options)
        if "stopped_after" in result.extras:
            return _stopped(options, folder, before, result)
        finish_build_folder(result)
        faults.point("build:after_finn")
        LOG.info("FINN build done (%d steps run, %d skipped); verification", len(result.steps_run),
                 len(result.skipped))
        verification = verify_build(trained, plain, meta, result, samples=options.verify_samples,
                                    progress=not options.no_progress, python_samples=options.python_samples,
                                    hardware_levels=hardware_levels, node_samples=options.node_samples,
                                    torch_levels=torch_levels)
    finally:
        if torch_levels is not None:
            torch_levels.close()
    collapse_report.update(verification.pop("collapse_check", {}))
    _timing_gate(result, verification)
    report = write_report(result, meta, collapse_report, verification,
                          seconds=time.perf_counter() - started, marker=False,
                          compare_unpipelined=options.compare_unpipelined)
    report["options"] = options.values()
    report["integrity"] = build_integrity(out_dir)  # sha256 of what validation reads (hw/check/finished.py)
    faults.point("build:before_deploy")
    LOG.info("verification %s; first divergent level: %s", "passed" if verification["ok"] else "FAILED",
             verification.get("first_divergent_level") or "none")
    if verification["ok"]:  # after the report: the board README quotes its accuracy and FPS
        make_deployment_package(out_dir, report=report, progress=not options.no_progress,
                                data_root=(meta.get("dataset") or {}).get("root"))
    else:  # a package whose expected outputs the accelerator does not reproduce would mislead
        remove_deployment_package(out_dir)
    folder.adopt_new(before)
    folder.record()
    interrupts.check()
    faults.point("build:before_report_json")
    write_report_json(out_dir, report)  # last: its presence marks a finished build
    return report


def _run_imported(options: BuildOptions) -> dict[str, Any]:
    """A QONNX model from elsewhere: declared pre-processing merged in front, score tail recorded
    (export/qonnx_import.py) -> the same FINN build -> every level against the QONNX reference
    (hw/check/imported.py) -> report -> deployment package."""
    from export.input_declaration import declare_input
    from export.qonnx_import import prepare_import, write_import_record
    from hw.check.imported import verify_imported_build
    from hw.check.verify import load_test_set
    from hw.deploy import make_deployment_package
    from hw.check.finished import build_integrity
    from hw.report import write_report, write_report_json
    from quant_models.custom_data import normalize_spec

    board = _board(options)
    folding = _folding(options)
    hardware_levels = _hardware_levels(options)
    if options.input_packing == "host":
        raise OnebitError("--input-packing host is for onebit checkpoints (trained with --input-bits 1); an imported "
                          "QONNX model builds with the accelerator reading its pixels (--input-packing none)")
    decl, sidecar = declare_input(options.checkpoint, options.input_scale, options.input_offset, options.input_shape,
                                  options.input_layout, options.sidecar)
    dataset = options.dataset or sidecar.get("dataset")
    if not dataset:
        raise OnebitError(f"{options.checkpoint}: no dataset to verify on; pass --dataset (mnist, fashion-mnist, "
                          "cifar10, folder:PATH, npz:PATH) or put \"dataset\" in the sidecar")
    meta = {"arch": {"name": f"imported {Path(options.checkpoint).name}"}, "estimator": None,
            "dataset": {"name": normalize_spec(dataset)}}
    images, labels, dataset_name = load_test_set(meta, options.verify_samples)  # bad data fails before the build
    out_dir = options.out
    with BuildFolder(out_dir, "onebit build") as folder, contextlib.ExitStack() as stack:  # the same folder rules
        _start_build_folder(folder, options)  # import.json marks the folder as an imported model's build: written anew below
        stack.enter_context(build_log(out_dir / "build.log"))  # onebit's messages beside FINN's
        LOG.info("onebit %s build of the imported %s for %s into %s", __version__, options.checkpoint, board.name,
                 out_dir)
        before = folder.entries()
        started = time.perf_counter()
        record = prepare_import(options.checkpoint, decl, out_dir)
        record["dataset"] = meta["dataset"]["name"]
        if list(images.shape[1:]) != record["input"]["image_shape"]:
            raise OnebitError(f"dataset {dataset_name} has images {list(images.shape[1:])}, the model takes "
                              f"{record['input']['image_shape']} (C,H,W); pass --dataset of that shape or --input-shape")
        result = build_accelerator(out_dir / "model_qonnx.onnx", out_dir, board, folding,
                                   progress=not options.no_progress, mvau=options.mvau,
                                   start_from=options.start_from, stop_after=options.stop_after,
                                   fingerprint={"model_sha256": sha256_file(options.checkpoint)},
                                   input_packing="none", fifo_sizing=options.fifo_sizing)
        if options.start_from:
            _record_options(folder, options)
        if "stopped_after" in result.extras:
            return _stopped(options, folder, before, result)
        record["score_layer_alpha"] = result.score_affine.get("alpha")
        write_import_record(out_dir, record)
        finish_build_folder(result)
        verification = verify_imported_build(result, record, images, labels, dataset_name,
                                             progress=not options.no_progress, hardware_levels=hardware_levels,
                                             node_samples=options.node_samples,
                                             python_samples=options.python_samples)
        _timing_gate(result, verification)
        report = write_report(result, meta, {"import": record}, verification,
                              seconds=time.perf_counter() - started, marker=False,
                              compare_unpipelined=options.compare_unpipelined)
        report["options"] = options.values()
        report["integrity"] = build_integrity(out_dir)
        if verification["ok"]:
            make_deployment_package(out_dir, report=report, progress=not options.no_progress)
        folder.adopt_new(before)
        folder.record()
        interrupts.check()
        write_report_json(out_dir, report)  # last: its presence marks a finished build
    return report


def _timing_gate(result: BuildResult, verification: dict[str, Any]) -> None:
    """Where Vivado implemented the design: its routed timing (hw/finn/vivado_timing.py). Timing not met, or
    not known, fails the build like a mismatch does: no deployment package, a non-zero exit, the reason said."""
    from hw.finn.vivado_timing import bitstream_built, timing_verdict

    if not bitstream_built(result.steps_run):
        return
    timing = timing_verdict(result.out_dir, result.board.clock_mhz)
    verification["timing"] = timing
    if timing["status"] != "passed":
        verification["ok"] = False
        print(f"onebit build: {timing['message']}", file=sys.stderr)


def _hardware_levels(options: BuildOptions) -> list[str] | None:
    from hw.check.levels import parse_levels
    from hw.check.verify import LEVELS

    try:  # options are resolved(): a bad $ONEBIT_LEVELS was refused there, naming the variable
        return parse_levels(options.levels, LEVELS)
    except ValueError as error:
        raise OnebitError(f"--levels: {error}") from None


def list_steps(options: BuildOptions) -> str:
    """The step list a build with these options runs (folding choice, --mvau; tool steps marked)."""
    from hw.finn.build import ONEBIT_STEP_NAMES, build_steps
    from hw.finn.folding import FoldingSpec
    from hw.finn.steps import describe

    import tempfile

    from hw.finn.env import prepare_finn

    mode = "file" if options.folding else "target_fps" if options.target_fps else "auto"
    with tempfile.TemporaryDirectory(prefix="onebit-steps-") as scratch:
        prepare_finn(scratch)  # finn-plus' settings, which the tool probe reads
    steps, skipped = build_steps(FoldingSpec(mode, file=options.folding, target_fps=options.target_fps), options.mvau,
                                 fifo_sizing=options.fifo_sizing)
    needs = dict(TOOL_STEPS)
    not_here = {row["step"]: "needs " + ", ".join(needs[row["step"]]) + "; see skipped.txt" for row in skipped}
    ordered = [step for step in steps if step not in TOOL_STEP_NAMES] + TOOL_STEP_NAMES  # FINN's order
    return describe(ordered, set(ONEBIT_STEP_NAMES), not_here)


def command_line(prog: str, description: str, argv: list[str] | None) -> int:
    """`onebit build` / `onebit export` / `python export/to_finn.py`: argparse -> BuildOptions -> the pipeline."""
    parser = argparse.ArgumentParser(prog=program_name(prog), description=description)
    add_pipeline_arguments(parser, suppress_defaults=True)  # flags not given do not override --config's values
    interrupts.install()  # a Ctrl-C during the heavy imports must not be swallowed (onebit/interrupts.py)
    args = parser.parse_args(argv)
    if args.list_steps:
        if getattr(args, "checkpoint", None) is None and args.config is None:
            args.checkpoint = "model.pt"  # the step list does not depend on the model
        print(list_steps(options_from_command_line(args)))
        return 0
    return run_pipeline(options_from_command_line(args))


@cli_errors
def main(argv: list[str] | None = None) -> int:
    return command_line("onebit build", "FINN build of a onebit checkpoint (or a QONNX model.onnx) for a board, with "
                        "bit-exact verification", argv)


if __name__ == "__main__":
    raise SystemExit(main())
