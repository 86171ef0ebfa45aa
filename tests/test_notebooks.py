"""The board notebooks (notebooks/*.ipynb) executed headless with nbclient on a real tiny build.

They run as a board user runs them: from the deployment package hw/deploy.py makes (deploy/notebooks/,
default BUILD_DIR "..", backend "auto" which is the accelerator model off-board), with the package's
validation set as the software reference. One more run takes the reference from the checkpoint (no
validation set), one proves the validation notebook fails on a single wrong integer, one that the board
backend stops with a clear message where no bitstream exists. Any failing cell fails the test.
"""
from __future__ import annotations

import ast
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("1_classify.ipynb", "2_validate.ipynb", "3_throughput.ipynb")
SAMPLES = 64  # validation set size and ONEBIT_N: small, CI runs them small


def _linked_build(tfc_build: Path, root: Path) -> Path:
    """A build folder whose entries link to the session build's, so a deployment package can be written
    next to them without touching the shared fixture."""
    build = root / "build"
    build.mkdir(parents=True)
    for entry in tfc_build.iterdir():
        if entry.name not in ("deploy", "deploy.zip", "report.json", "validation"):
            (build / entry.name).symlink_to(entry)
    # A minimal report (the session build's own is left out with its package); the package needs the board name.
    (build / "report.json").write_text(json.dumps({"board": {"name": "Pynq-Z1"}}))
    return build


def _deploy(tfc_build: Path, root: Path) -> Path:
    import quant_models.compat  # noqa: F401  (the package's expected outputs come from Brevitas layers)
    from hw.deploy import make_deployment_package

    return make_deployment_package(_linked_build(tfc_build, root), samples=SAMPLES, progress=False)


async def _execute(path: Path, cwd: Path, env: dict[str, str]) -> nbformat.NotebookNode | CellExecutionError:
    """Run one notebook in a fresh kernel with its own environment; the executed notebook, or the cell error."""
    notebook = nbformat.read(path, as_version=4)
    kernel_env = {k: v for k, v in os.environ.items() if not k.startswith("ONEBIT_") and k != "MPLBACKEND"}
    kernel_env.update(env)  # MPLBACKEND unset: the kernel's inline backend puts the plots in the outputs
    try:
        await NotebookClient(notebook, timeout=180, kernel_name="python3",
                             resources={"metadata": {"path": str(cwd)}}).async_execute(env=kernel_env)
    except CellExecutionError as error:
        return error
    return notebook


@pytest.fixture(scope="module")
def runs(tfc_build, tmp_path_factory) -> dict[str, Any]:
    """Every notebook run of this module, executed concurrently (one kernel each: they are independent and
    mostly wait on imports, so two cores finish them in about half the time)."""
    root = tmp_path_factory.mktemp("notebooks")
    deployed = _deploy(tfc_build, root / "good")
    # A package whose stored reference differs from the accelerator in one integer of one sample.
    broken = _deploy(tfc_build, root / "broken")
    path = broken / "validation" / "validation_set.npz"
    with np.load(path) as stored:
        data = {key: stored[key] for key in stored.files}
    data["scores"][5, 3] += 2  # as a flipped weight bit changes one class score by 2
    np.savez_compressed(path, **data)

    # As on the board: opened from deploy/notebooks with the default BUILD_DIR ".."; "auto" is the model here.
    jobs = {name: (deployed / "notebooks" / name, deployed / "notebooks", {"ONEBIT_N": str(SAMPLES)})
            for name in NAMES}
    # A build folder without its deployment package (the session build has one: linked without it).
    jobs["checkpoint"] = (NOTEBOOKS / "2_validate.ipynb", root, {
        "ONEBIT_BUILD_DIR": str(_linked_build(tfc_build, root / "plain")), "ONEBIT_BACKEND": "model",
        "ONEBIT_N": "40", "ONEBIT_BATCH_SIZE": "16"})
    jobs["mismatch"] = (broken / "notebooks" / "2_validate.ipynb", broken / "notebooks", {"ONEBIT_N": str(SAMPLES)})
    jobs["board"] = (deployed / "notebooks" / "1_classify.ipynb", deployed / "notebooks", {"ONEBIT_BACKEND": "board"})

    async def run_all() -> list:
        return await asyncio.gather(*(_execute(*job) for job in jobs.values()))

    results: dict[str, Any] = dict(zip(jobs, asyncio.run(run_all())))
    results["deployed"] = deployed
    return results


def _ok(runs: dict[str, Any], key: str) -> nbformat.NotebookNode:
    result = runs[key]
    if isinstance(result, CellExecutionError):
        pytest.fail(f"{key}: a cell failed:\n{result}")
    return result


def _text(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def _pngs(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []))


def test_committed_notebooks_have_no_outputs_and_match_their_generator():
    for name in NAMES:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert code, name
        for cell in code:
            assert cell.outputs == [] and cell.execution_count is None, f"{name} has committed outputs"
        assert "parameters" in code[0].metadata.get("tags", []), f"{name}: first code cell is not the parameters"
    result = subprocess.run([sys.executable, str(NOTEBOOKS / "make_notebooks.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_notebooks_run_from_the_deployment_package(runs):
    deployed = runs["deployed"]
    assert sorted(p.name for p in (deployed / "notebooks").glob("*.ipynb")) == list(NAMES)
    for name in NAMES:
        notebook = _ok(runs, name)
        assert "backend: model" in _text(notebook), name
        assert _pngs(notebook) >= 1, f"{name} shows no plot"
    validate = _text(runs["2_validate.ipynb"])
    assert f"samples:                     {SAMPLES}" in validate
    assert "validation set of the package" in validate
    assert "integer score mismatches:    0" in validate
    assert f"bit-exact: all {SAMPLES} samples" in validate
    # The notebook's software accuracy is that of the package's stored reference, recomputed here.
    with np.load(deployed / "validation" / "validation_set.npz") as data:
        software = float(np.mean(data["classes"][:SAMPLES] == data["labels"][:SAMPLES]))
    assert f"software accuracy:           {software:.2%}" in validate
    assert "   <- predicted" in _text(runs["1_classify.ipynb"])
    throughput = "\n" + _text(runs["3_throughput.ipynb"])
    for batch in (1, 2, 4, 8, 16, 32, 64):
        assert f"\n{batch:6d} " in throughput, f"batch size {batch} missing"


def test_validate_notebook_without_validation_set_uses_the_checkpoint(runs):
    text = _text(_ok(runs, "checkpoint"))
    assert "the checkpoint in PyTorch on 40 test images" in text
    assert "integer score mismatches:    0" in text and "batch size 16" in text


def test_validate_notebook_fails_on_one_wrong_integer(runs):
    failure = runs["mismatch"]
    assert isinstance(failure, CellExecutionError), "the validation notebook passed a wrong reference"
    assert f"1 of {SAMPLES} samples differ from the software reference (first at [5])" in str(failure)


def test_board_backend_in_a_notebook_says_what_is_missing(runs):
    # This package has no bitstream (no Vivado here): the board backend stops with the driver's message.
    failure = runs["board"]
    assert isinstance(failure, CellExecutionError)
    assert "names no bitfile" in str(failure) and "backend='model'" in str(failure)


BOARD_MODULES = {"os", "sys", "time", "json", "warnings", "pathlib", "numpy", "matplotlib", "pynq", "driver"}


def _off_board_only(chain: list) -> bool:
    """True if the node under this chain of (parent If, field) runs only off the board: in the body of
    `if backend == "model":` or in the else branch of `if backend == "board": ...`."""
    for node, field in chain:
        test = ast.unparse(node.test)
        if (field == "body" and test == "backend == 'model'") or (field == "orelse" and test == "backend == 'board'"):
            return True
    return False


def test_board_path_of_the_notebooks_imports_no_torch_or_build_tools():
    # On a PYNQ image there is no torch, FINN or onebit checkout: every other import must sit in a branch
    # that only runs off the board (the model backend, or the no-validation-set fallback).
    for name in NAMES:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type != "code":
                continue

            def visit(node, chain):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                    for module in modules:
                        if module.split(".")[0] not in BOARD_MODULES:
                            assert _off_board_only(chain), f"{name}: `{ast.unparse(node)}` runs on the board"
                for field, value in ast.iter_fields(node):
                    for child in value if isinstance(value, list) else [value]:
                        if isinstance(child, ast.AST):
                            visit(child, chain + [(node, field)] if isinstance(node, ast.If) else chain)

            visit(ast.parse(cell.source), [])
