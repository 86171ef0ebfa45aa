"""Session fixtures shared across test folders: tiny-trained onebit builds (TFC-w1a1, CNV-w1a1).

Trained for a fraction of an epoch on Fashion-MNIST and built with FINN up to code generation once per
session (about a minute each), so every level (PyTorch, FINN graphs, accelerator model, driver) is
compared on a real build folder. Owner: accelerator engineer (issue #4); kept small on purpose.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

# The hardware levels (Verilator per RTL node, FINN cppsim, the whole RTL accelerator) run by default in
# `onebit build`. The builds that stand for what a user gets run them at their defaults, whatever the setup
# installed: the tfc_build fixture below, tests/hw/test_verification_truth.py (an --input-bits 1 TFC with a
# Thresholding_rtl node, and one failing mutation per level), test_build.py's CNV, and the QONNX imports
# (tests/export/test_qonnx_import.py). The many other builds (folding presets, methods, reliability) use
# none, so the suite stays fast.
os.environ.setdefault("ONEBIT_LEVELS", "none")
DEFAULT_LEVELS_ENV = "ONEBIT_LEVELS"


def _train(out: Path, model: str, extra: list[str]) -> Path:
    from quant_models.train import main as train_main

    checkpoint = out / f"{model}.pt"
    args = ["--model", model, "--dataset", "fashion-mnist", "--epochs", "1", "--limit-test", "200",
            "--seed", "0", "--out", str(checkpoint), "--quiet", *extra]
    assert train_main(args) == 0
    return checkpoint


def _build(checkpoint: Path, out_dir: Path) -> Path:
    import quant_models.compat  # noqa: F401
    from export.collapse import collapse
    from export.qonnx import export_qonnx
    from hw.boards import get_board
    from hw.finn.build import build_accelerator
    from hw.pipeline import finish_build_folder
    from hw.finn.folding import target_fps
    from quant_models.checkpoint import load_checkpoint

    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(checkpoint, out_dir / "model.pt")
    trained, meta = load_checkpoint(checkpoint)
    plain, _ = collapse(trained, meta)
    qonnx_path = export_qonnx(plain, meta, out_dir / "model_qonnx.onnx")
    result = build_accelerator(qonnx_path, out_dir, get_board("Pynq-Z1"), target_fps(10000), progress=False)
    finish_build_folder(result)
    return out_dir


def _pipeline(checkpoint: Path, out_dir: Path) -> Path:
    """A finished build folder (report.json, integrity record, deployment package): what `onebit build` makes."""
    from hw.pipeline import main as build_main

    with pytest.MonkeyPatch.context() as patch:  # the default levels, as a user's build runs them
        patch.delenv(DEFAULT_LEVELS_ENV, raising=False)
        assert build_main([str(checkpoint), "--out", str(out_dir), "--verify-samples", "20", "--node-samples", "10",
                           "--no-progress"]) == 0
    return out_dir


@pytest.fixture(scope="session")
def tfc_build(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tfc")
    return _pipeline(_train(root, "tfc", ["--limit-train", "2000"]), root / "build")


@pytest.fixture(scope="session")
def cnv_build(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cnv")
    # Narrow channels keep the session fixture near a minute; the structure is CNV's (6 conv, 2 pools, 3 FC).
    arch = ["--arch", "channels=[16,16,32,32,64,64]", "--arch", "fc=[64,64]"]
    return _build(_train(root, "cnv", ["--limit-train", "500", *arch]), root / "build")


# A small `--mvau rtl` folding of the TFC fixture, shared by every test that builds that checkpoint with onebit's
# RTL nodes (tests/hw/rtl/test_rtl_accelerator.py, test_verification_truth.py, test_vivado_contract.py): the same
# nodes and weights give the same Verilator and yosys cache keys ($ONEBIT_CACHE), so a fresh machine compiles and
# synthesizes them once for the suite, in seconds, where auto-fold's widest layer (PE 32 x SIMD 16) takes minutes.
# Neighbouring PE / SIMD differ, so the stitched design needs width converters both ways (2 -> 4, 4 -> 1,
# 1 -> 2 elements per beat); MVAU_hls_2 (64 x 64, PE = SIMD = 1) is the bottleneck.
TFC_RTL_FOLDING = {"MVAU_hls_0": (2, 7), "MVAU_hls_1": (4, 4), "MVAU_hls_2": (1, 1), "MVAU_hls_3": (5, 2)}


@pytest.fixture(scope="session")
def tfc_rtl_folding(tmp_path_factory) -> Path:
    """TFC_RTL_FOLDING as a FINN folding file (`--folding FILE`)."""
    path = tmp_path_factory.mktemp("tfc_rtl_folding") / "folding.json"
    path.write_text(json.dumps({name: {"PE": pe, "SIMD": simd} for name, (pe, simd) in TFC_RTL_FOLDING.items()}))
    return path


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    """Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`): the tests of one module stay on one worker,
    so a module-scoped build is made once; a module that marks itself `xdist_group("ray")` (it starts local Ray
    instances) shares that group with the other such modules, so no two Ray instances run at once."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
