"""The whole pipeline (`onebit build` / `python export/to_finn.py`) on real Fashion-MNIST models.

Uses the session checkpoints of tests/conftest.py (tiny-trained TFC and narrow CNV). Every level must
give the same integers on every verified sample; the tests also show that verification can fail.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hw.finn.build import FRONTEND_HEAD, FRONTEND_TAIL
from hw.check.verify import PYTHON_LEVELS
from hw.pipeline import DEFAULT_PYTHON_SAMPLES, main as build_main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tfc_pipeline(tfc_build: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pipeline") / "tfc"
    code = build_main([str(tfc_build / "model.pt"), "--out", str(out), "--verify-samples", "500", "--no-progress"])
    assert code == 0
    return out


def test_tfc_every_level_bit_exact(tfc_pipeline: Path) -> None:
    report = json.loads((tfc_pipeline / "report.json").read_text())
    levels = report["verification"]["levels"]
    assert set(levels) == {"pytorch_trained", "pytorch_collapsed", "qonnx", "finn_streamlined", "finn_hw_layers"}
    for name, level in levels.items():
        assert level["executed"], (name, level)
        # the Python-execution levels verify the default stated sample of the 500 images, each says how many
        assert level["samples"] == (DEFAULT_PYTHON_SAMPLES if name in PYTHON_LEVELS else 500), (name, level["samples"])
        assert level["integer_mismatches"] == 0 and level["argmax_mismatches"] == 0
    assert report["verification"]["python_samples"] == DEFAULT_PYTHON_SAMPLES
    assert report["verification"]["first_divergent_level"] is None
    assert 0.3 < report["accuracy"] <= 1.0  # a real (tiny) training run, far above chance


def test_tfc_build_folder_holds_every_step_and_the_report(tfc_pipeline: Path) -> None:
    for step in FRONTEND_HEAD + FRONTEND_TAIL + ["step_onebit_auto_fold"]:  # auto-fold: the default folding
        assert (tfc_pipeline / "finn" / f"{step}.onnx").is_file(), step
    report = json.loads((tfc_pipeline / "report.json").read_text())
    mvaus = [row for row in report["layers"] if row["op_type"].startswith("MVAU")]
    assert len(mvaus) == 4 and all(row["cycles"] > 0 and row["PE"] >= 1 and row["SIMD"] >= 1 for row in mvaus)
    assert report["bottleneck"]["cycles"] == max(row["cycles"] for row in report["layers"])
    assert report["estimate"]["fps"] == pytest.approx(100e6 / report["bottleneck"]["cycles"])
    assert report["accelerator_io"]["output"]["n"] == 64 and report["accelerator_io"]["output"]["to_scores"] == "z = 2*p - n"
    # The input identity threshold is gone: the first layer of the accelerator is the MVAU reading UINT8,
    # fed by the input DMA at the board's 64-bit AXI port: 784 bytes = 98 beats, the I/O bound.
    assert [row["op_type"] for row in report["layers"][:2]] == ["IODMA_hls", "MVAU_hls"]
    assert report["layers"][-1]["layer"] == "output DMA"
    assert report["io_bound"]["cycles"] == 98 and report["io_bound"]["port_bits"] == 64
    assert report["bottleneck"]["cycles"] >= 98
    assert report["folding"]["mode"] == "auto" and (tfc_pipeline / "autofold_path.png").stat().st_size > 1000
    skipped = (tfc_pipeline / "skipped.txt").read_text()
    import shutil as sh
    if not sh.which("vivado"):
        for step in ("step_hw_ipgen", "step_create_stitched_ip", "step_synthesize_bitfile"):
            assert step in skipped
        assert "Vivado" in skipped and "How to get them" in skipped
    assert list((tfc_pipeline / "hw").glob("code_gen_ipgen_MVAU_hls_0_*/top_MVAU_hls_0.cpp"))  # HLS code generated
    assert (tfc_pipeline / "report.md").read_text().startswith("# onebit build: tfc for Pynq-Z1")
    assert (tfc_pipeline / "resources.png").stat().st_size > 1000
    folding = json.loads((tfc_pipeline / "folding.json").read_text())
    assert folding["MVAU_hls_0"]["PE"] == mvaus[0]["PE"]


def test_verification_detects_a_corrupted_finn_graph(tfc_pipeline: Path, tmp_path: Path) -> None:
    """Flip one threshold in the streamlined graph: that level (and only from there) must report mismatches."""
    from qonnx.core.modelwrapper import ModelWrapper

    from export.collapse import collapse
    from hw.boards import get_board
    from hw.finn.build import BuildResult
    from hw.finn.env import tool_status
    from hw.finn.folding import target_fps
    from hw.check.verify import verify_build
    from quant_models.checkpoint import load_checkpoint

    work = tmp_path / "copy"
    shutil.copytree(tfc_pipeline, work, ignore=shutil.ignore_patterns("hw", "intermediate_models"))
    model = ModelWrapper(str(work / "finn" / "step_streamline.onnx"))
    node = next(n for n in model.graph.node if n.op_type == "MultiThreshold")
    thresholds = model.get_initializer(node.input[1]).copy()
    thresholds[:] = -1e6  # every channel of this layer always fires
    model.set_initializer(node.input[1], thresholds)
    model.save(str(work / "finn" / "step_streamline.onnx"))
    trained, meta = load_checkpoint(work / "model.pt")
    plain, _ = collapse(trained, meta)
    result = BuildResult(work, get_board("Pynq-Z1"), target_fps(10000), [], {}, [], tool_status(),
                         work / "finn" / "step_hw_codegen.onnx", {"form": "popcount", "n": 64})
    verification = verify_build(trained, plain, meta, result, samples=200, progress=False)
    assert not verification["ok"] and verification["first_divergent_level"] == "finn_streamlined"
    assert verification["levels"]["finn_streamlined"]["integer_mismatches"] > 0
    assert verification["levels"]["qonnx"]["integer_mismatches"] == 0


def test_cnv_every_level_bit_exact(cnv_build: Path, tmp_path: Path, monkeypatch) -> None:
    """The default levels a user gets (not the suite's ONEBIT_LEVELS=none): the hardware levels simulate
    the CNV's FINN RTL nodes (sliding windows, padding) on 5 images, the others compare all 100."""
    monkeypatch.delenv("ONEBIT_LEVELS", raising=False)
    out = tmp_path / "cnv"
    code = build_main([str(cnv_build / "model.pt"), "--out", str(out), "--verify-samples", "100", "--node-samples",
                       "5", "--no-progress"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    hardware = ("rtl_nodes", "cppsim", "rtl_accelerator")
    for name, level in report["verification"]["levels"].items():
        if level["status"] == "skipped":  # only a hardware level, only for a tool or design it lacks
            assert name in hardware and level["reason"].startswith("skipped: "), (name, level)
            continue
        samples = 5 if name in hardware else 100
        assert level["status"] == "passed" and level["samples"] == samples and level["integer_mismatches"] == 0, \
            (name, level)
    rtl = report["verification"]["levels"]["rtl_nodes"]
    if rtl["status"] == "passed":
        assert rtl["nodes"] and all(n["status"] == "ok" for n in rtl["nodes"]), rtl
    ops = {row["op_type"] for row in report["layers"]}
    assert any(op.startswith("ConvolutionInputGenerator") for op in ops) and any(op.startswith("MVAU") for op in ops)


def test_to_finn_runs_as_a_plain_script(tfc_build: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(REPO / "export" / "to_finn.py"), str(tfc_build / "model.pt"),
                          "--out", str(tmp_path / "script"), "--verify-samples", "50", "--no-progress"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "MVAU_hls_0" in out.stdout and "estimated" in out.stdout and "FPS" in out.stdout


# ---- bad input: one clear line, exit code 2 ------------------------------------------------------

def _run_main(argv: list[str], capsys) -> tuple[int, str]:
    code = build_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def test_missing_checkpoint(tmp_path: Path, capsys) -> None:
    code, message = _run_main([str(tmp_path / "nope.pt"), "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and message.startswith("onebit: ") and "nope.pt" in message and "no such file" in message


def test_not_a_checkpoint(tmp_path: Path, capsys) -> None:
    bogus = tmp_path / "notes.pt"
    bogus.write_text("these are not weights\n")
    code, message = _run_main([str(bogus), "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and "not a onebit checkpoint" in message
    assert not (tmp_path / "b" / "report.json").exists()


def test_unknown_architecture(tfc_build: Path, tmp_path: Path, capsys) -> None:
    data = torch.load(tfc_build / "model.pt", weights_only=True)
    data["arch"]["name"] = "resnet50"
    torch.save(data, tmp_path / "odd.pt")
    code, message = _run_main([str(tmp_path / "odd.pt"), "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and "unknown architecture" in message and "resnet50" in message


def test_state_dict_that_does_not_fit(tfc_build: Path, tmp_path: Path, capsys) -> None:
    data = torch.load(tfc_build / "model.pt", weights_only=True)
    key = next(k for k in data["state_dict"] if k.endswith("weight") and data["state_dict"][k].ndim == 2)
    data["state_dict"][key] = torch.zeros(3, 3)
    torch.save(data, tmp_path / "bad_shapes.pt")
    code, message = _run_main([str(tmp_path / "bad_shapes.pt"), "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and key in message


def test_unknown_board(tfc_build: Path, tmp_path: Path, capsys) -> None:
    code, message = _run_main([str(tfc_build / "model.pt"), "--board", "Arty-Z7", "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and "unknown board 'Arty-Z7'" in message and "Pynq-Z1" in message


def test_layer_that_cannot_become_binary_is_named(tfc_build: Path, tmp_path: Path, capsys) -> None:
    """A checkpoint trained with an estimator whose hidden activation is not binary (registered here)."""
    from quant_models.checkpoint import load_checkpoint, save_checkpoint
    from quant_models.estimators import ESTIMATORS, register_estimator
    from quant_models.estimators.ste import STEEstimator

    class HardtanhEstimator(STEEstimator):
        name = "test-hardtanh"

        def activation(self, channels: int, *, role: str):
            return torch.nn.Hardtanh() if role == "hidden" else super().activation(channels, role=role)

    register_estimator(HardtanhEstimator)
    try:
        from quant_models.topologies import build_model

        trained, meta = load_checkpoint(tfc_build / "model.pt")
        odd = build_model(trained.arch, HardtanhEstimator())
        odd.load_state_dict(trained.state_dict())
        save_checkpoint(tmp_path / "hardtanh.pt", odd, {k: meta.get(k, {}) for k in ("dataset", "training", "metrics")})
        # a previous build's results in the same folder must not survive a failed rebuild (written as a
        # previous onebit run does, recorded in the folder manifest: onebit removes only its own files)
        from onebit.buildfolder import BuildFolder

        with BuildFolder(tmp_path / "b", "onebit build") as previous:
            previous.claim(["validation", "report.json"])
            (tmp_path / "b" / "validation").mkdir(parents=True)
            (tmp_path / "b" / "validation" / "validation.json").write_text("{}")
            (tmp_path / "b" / "report.json").write_text("{}")
            previous.record()
        code, message = _run_main([str(tmp_path / "hardtanh.pt"), "--out", str(tmp_path / "b")], capsys)
    finally:
        ESTIMATORS.pop("test-hardtanh", None)
    assert code == 2 and "blocks.1.act" in message and "not a binary activation" in message
    assert not (tmp_path / "b" / "report.json").exists() and not (tmp_path / "b" / "validation").exists()


def test_report_warns_when_the_folding_does_not_fit_the_board(tfc_pipeline: Path) -> None:
    from hw.report import over_budget_warning, render_markdown

    report = json.loads((tfc_pipeline / "report.json").read_text())
    assert report["resources"]["fraction"]["LUT"] < 1.0
    assert over_budget_warning(report) is None
    assert "does not fit" not in render_markdown(report)
    report["resources"]["fraction"]["LUT"] = 1.925
    warning = over_budget_warning(report)
    assert warning is not None and report["board"]["name"] in warning and "LUT 192%" in warning
    assert "--auto-fold" in warning and warning in render_markdown(report)
