"""The board notebooks (notebooks/*.ipynb) executed headless with nbclient on a real tiny build.

They run as a board user runs them: from the deployment package hw/deploy.py makes (deploy/notebooks/,
default BUILD_DIR "..", backend "auto" which is the accelerator model off-board), with the package's
validation set as the software reference. One more run takes the reference from the checkpoint (no
validation set), one proves the validation notebook fails on a single wrong integer, one that the board
backend stops with a clear message where no bitstream exists. Any failing cell fails the test.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

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
    # The fixture build has no report (conftest stops after the driver); the package needs the board name.
    (build / "report.json").write_text(json.dumps({"board": {"name": "Pynq-Z1"}}))
    return build


@pytest.fixture(scope="module")
def deployed(tfc_build, tmp_path_factory) -> Path:
    import quant_models.compat  # noqa: F401  (the package's expected outputs come from Brevitas layers)
    from hw.deploy import make_deployment_package

    build = _linked_build(tfc_build, tmp_path_factory.mktemp("notebooks"))
    return make_deployment_package(build, samples=SAMPLES, progress=False)


def _run(path: Path, cwd: Path, monkeypatch, **env: str) -> nbformat.NotebookNode:
    for key in ("ONEBIT_BUILD_DIR", "ONEBIT_BACKEND", "ONEBIT_N", "ONEBIT_BATCH_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend puts plots in the outputs
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


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


def test_notebooks_run_from_the_deployment_package(deployed, monkeypatch):
    # As on the board: opened from deploy/notebooks, default parameters but for N; "auto" -> model here.
    assert sorted(p.name for p in (deployed / "notebooks").glob("*.ipynb")) == list(NAMES)
    runs = {name: _run(deployed / "notebooks" / name, deployed / "notebooks", monkeypatch, ONEBIT_N=str(SAMPLES))
            for name in NAMES}
    for name, notebook in runs.items():
        text = _text(notebook)
        assert "backend: model" in text, name
        assert _pngs(notebook) >= 1, f"{name} shows no plot"
    validate = _text(runs["2_validate.ipynb"])
    assert f"samples:                     {SAMPLES}" in validate
    assert "validation set of the package" in validate
    assert "integer score mismatches:    0" in validate
    assert f"bit-exact: all {SAMPLES} samples" in validate
    # The notebook's accuracies are those of the package's stored reference, recomputed here.
    with np.load(deployed / "validation" / "validation_set.npz") as data:
        software = float(np.mean(data["classes"][:SAMPLES] == data["labels"][:SAMPLES]))
    assert f"software accuracy:           {software:.2%}" in validate
    assert "   <- predicted" in _text(runs["1_classify.ipynb"])
    throughput = _text(runs["3_throughput.ipynb"])
    for batch in (1, 2, 4, 8, 16, 32, 64):
        assert f"\n{batch:6d} " in "\n" + throughput, f"batch size {batch} missing"


def test_validate_notebook_without_validation_set_uses_the_checkpoint(tfc_build, monkeypatch, tmp_path):
    notebook = _run(NOTEBOOKS / "2_validate.ipynb", tmp_path, monkeypatch, ONEBIT_BUILD_DIR=str(tfc_build),
                    ONEBIT_BACKEND="model", ONEBIT_N="40", ONEBIT_BATCH_SIZE="16")
    text = _text(notebook)
    assert "the checkpoint in PyTorch on 40 test images" in text
    assert "integer score mismatches:    0" in text and "batch size 16" in text


def test_validate_notebook_fails_on_one_wrong_integer(deployed, tfc_build, monkeypatch, tmp_path):
    build = _linked_build(tfc_build, tmp_path)
    package = build / "deploy"
    shutil.copytree(deployed, package)
    path = package / "validation" / "validation_set.npz"
    with np.load(path) as stored:
        data = {key: stored[key] for key in stored.files}
    data["scores"][5, 3] += 2  # one class score of one sample, as a one-bit weight flip would change it
    np.savez_compressed(path, **data)
    with pytest.raises(CellExecutionError) as failure:
        _run(package / "notebooks" / "2_validate.ipynb", package / "notebooks", monkeypatch, ONEBIT_N=str(SAMPLES))
    assert f"1 of {SAMPLES} samples differ from the software reference (first at [5])" in str(failure.value)


def test_board_backend_in_a_notebook_says_what_is_missing(deployed, monkeypatch):
    # This package has no bitstream (no Vivado here): the board backend must stop with the driver's message.
    with pytest.raises(CellExecutionError) as failure:
        _run(deployed / "notebooks" / "1_classify.ipynb", deployed / "notebooks", monkeypatch,
             ONEBIT_BACKEND="board")
    assert "names no bitfile" in str(failure.value) and "backend='model'" in str(failure.value)
