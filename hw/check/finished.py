"""Before `onebit validate` trusts a build folder: it is finished, unchanged since the build, its package intact.

* finished: report.json exists (the pipeline writes it last, hw/pipeline.py); an interrupted build has none.
* unchanged: report.json's "integrity" lists the sha256 of the files validation reads (model.pt, the
  QONNX model, finn/*.onnx, driver/*) and of the generated hardware the hardware levels simulate and
  Vivado receives (HDL/HLS sources and init files in hw/code_gen_ipgen_<node>_*/); one that differs or is
  missing stops validation with its name (and, for generated hardware, its node).
* package intact: deploy/manifest.json (hw/deploy.py) is checked file by file (hw/driver/integrity.py, the
  same function the board runs), and its own sha256 against the one report.json recorded.
Every path read from these files stays inside the build folder (onebit.buildfolder.inside).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hw.driver.integrity import PackageIntegrityError, verify_package
from onebit.buildfolder import BuildFolderError, inside, integrity_record, sha256_file, verify_integrity
from onebit.errors import OnebitError

# The files whose sha256 a build records (relative glob patterns): what validation and the package read.
INTEGRITY_PATTERNS = ("model.pt", "model_qonnx.onnx", "model_imported.onnx", "finn/*.onnx", "driver/*", "driver/**/*.py",
                      "folding.json")
# the generated hardware of every node (the files rtl_nodes, cppsim and rtl_accelerator simulate, the files
# Vivado receives): HDL, HLS C++ and Tcl sources and init files, top level of each code-gen folder
GENERATED_SUFFIXES = ("v", "sv", "vh", "svh", "dat", "cpp", "h", "hpp", "tcl")
GENERATED_PATTERNS = tuple(f"hw/code_gen_ipgen_*/*.{suffix}" for suffix in GENERATED_SUFFIXES) + (
    "hw/onebit_rtl_sv/*.sv",)  # onebit's shared RTL sources, one copy per build (hw/rtl/custom_op.py)
_CODE_GEN_FOLDER = re.compile(r"^hw/code_gen_ipgen_(?P<node>.+)_[A-Za-z0-9_]{8}/")


def build_integrity(build_dir: str | Path) -> dict[str, str]:
    """sha256 of the build's files that validation reads (stored in report.json by the pipeline)."""
    return integrity_record(build_dir, INTEGRITY_PATTERNS + GENERATED_PATTERNS)


def node_of(relative: str) -> str | None:
    """The node whose code-gen folder holds a build file (hw/code_gen_ipgen_<node>_<8 chars>/...), else None."""
    match = _CODE_GEN_FOLDER.match(relative)
    return match.group("node") if match else None


def _check_generated(build_dir: Path, record: dict[str, str]) -> None:
    """The generated hardware first, so that a changed file is refused naming its node."""
    for relative, digest in sorted(record.items()):
        node = node_of(relative)
        if node is None:
            continue
        path = inside(build_dir, relative)
        state = "is missing" if not path.is_file() else ("changed" if sha256_file(path) != digest else None)
        if state:
            raise BuildFolderError(
                f"integrity: {path} of node {node} (generated hardware: what the levels rtl_nodes, cppsim and "
                f"rtl_accelerator simulate and Vivado receives) {state} since the build (report.json's integrity "
                "record); validation would not test the build's design: rerun `onebit build`")


def stopped_message(build_dir: str | Path) -> str | None:
    """For a build stopped on request (--stop-after, hw/finn/steps.py): what it is and how to continue."""
    from hw.finn.steps import read_record

    record = read_record(build_dir)
    if not record or not record.get("stopped_after") or (Path(build_dir) / "report.json").is_file():
        return None
    steps = (record.get("fingerprint") or {}).get("steps") or []
    stopped = record["stopped_after"]
    following = steps[steps.index(stopped) + 1] if stopped in steps[:-1] else None
    how = (f"continue with `onebit build --config {Path(build_dir) / 'onebit_options.json'} --start-from {following}`"
           if following else "rerun `onebit build`")
    return f"{build_dir}: the build was stopped after {stopped} (--stop-after), so it is not finished; {how}"


def finished_report(build_dir: str | Path) -> dict[str, Any]:
    """report.json of a finished build, or OnebitError saying the build did not finish."""
    build_dir = Path(build_dir)
    path = build_dir / "report.json"
    if not path.is_file():
        raise OnebitError(stopped_message(build_dir) or
                          f"{build_dir}: no report.json, so the build did not finish (interrupted or failed); "
                          f"rerun `onebit build` with --out {build_dir}")
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise OnebitError(f"{path} is unreadable ({error}); rerun `onebit build`") from None
    if not isinstance(report, dict) or report.get("format") != "onebit-build-report":
        raise OnebitError(f"{path} is not a onebit build report; rerun `onebit build`")
    return report


def check_build_files(build_dir: str | Path, report: dict[str, Any]) -> dict[str, Any]:
    """Verify the build's recorded sha256s, and that its graphs name only domains onebit supports (before any
    qonnx call could import one: export/onnx_domains.py); what every command reading or writing a finished
    build checks first (validate, `python -m hw.deploy`)."""
    from export.onnx_domains import BUILD_DOMAINS, MODEL_DOMAINS, check_domains

    build_dir = Path(build_dir)
    checked: dict[str, Any] = {}
    record = report.get("integrity")
    if isinstance(record, dict) and record:
        generated = {relative: digest for relative, digest in record.items() if node_of(relative)}
        # (no code-gen folder at all: FINN's environment set-up may have made an empty hw/ since the copy)
        if generated and not any((build_dir / relative).parent.is_dir() for relative in generated):
            # a copy without hw/ (what the accelerator model and the board need is elsewhere): nothing there can
            # be simulated with changed files; a hardware level asked to run fails on the missing files
            record = {relative: digest for relative, digest in record.items() if relative not in generated}
            checked["generated_hardware_files"] = "absent: no hw/ in this folder, the hardware levels cannot run"
        else:
            _check_generated(build_dir, generated)
            checked["generated_hardware_files"] = len(generated)
        verify_integrity(build_dir, record, "report.json's integrity record")
        checked["build_files"] = len(record)
    else:
        checked["build_files"] = "not recorded (built by an older onebit)"
    for graph in sorted(build_dir.glob("finn/*.onnx")) + [build_dir / "model_qonnx.onnx"]:
        if graph.is_file():
            check_domains(graph, BUILD_DOMAINS)
    if (build_dir / "model_imported.onnx").is_file():
        check_domains(build_dir / "model_imported.onnx", MODEL_DOMAINS)
    return checked


def check_build_integrity(build_dir: str | Path, report: dict[str, Any]) -> dict[str, Any]:
    """Verify the build's recorded sha256s and its deployment package; returns what was checked."""
    build_dir = Path(build_dir)
    checked = check_build_files(build_dir, report)
    deploy = build_dir / "deploy"
    if deploy.is_dir():
        try:
            manifest = verify_package(deploy)
        except PackageIntegrityError as error:
            raise OnebitError(f"deployment package: {error}") from None
        recorded = (report.get("deploy") or {}).get("manifest_sha256")
        if recorded and sha256_file(deploy / "manifest.json") != recorded:
            raise BuildFolderError(f"{deploy / 'manifest.json'} differs from the one report.json recorded; the "
                                   "package was remade or edited after the build: rerun `onebit build`")
        checked["deploy_files"] = len(manifest["files"])
    return checked


__all__ = ["GENERATED_PATTERNS", "INTEGRITY_PATTERNS", "build_integrity", "check_build_files", "check_build_integrity",
           "finished_report", "inside", "node_of", "stopped_message"]
