"""Reference ties of an imported model (hw/check/ties.py, docs/verification.md "Reference ties").

Brevitas' bnn_pynq TFC_1W1A with random BatchNorm statistics (mean N(0, 8), var U(0.5, 50)) whose first
BatchNorm thresholds are whole even numbers, values the first layer's accumulator reaches: there the float32
reference's pre-activation and FINN's streamlined threshold round to either side of the tie. The build
passes with those images counted as explained by reference ties (N > 0), `onebit validate` compares the
accelerator model exactly with the tie-resolved reference; one threshold of the HW-layer graph moved by
one (a genuine error of the integer design) still fails, unexplained.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import quant_models.compat  # noqa: F401  (Brevitas on torch 2.13)

SAMPLES = 200


def _tied_tfc(path: Path) -> Path:
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    net, _ = model_with_cfg("tfc_1w1a", pretrained=False)
    gen = torch.Generator().manual_seed(0)
    norms = [m for m in net.modules() if getattr(m, "running_mean", None) is not None and m.running_mean.numel() > 1]
    with torch.no_grad():
        for norm in norms:
            n = norm.running_mean.numel()
            norm.running_mean.copy_(torch.randn(n, generator=gen) * 8)
            norm.running_var.copy_(torch.rand(n, generator=gen) * 49.5 + 0.5)
        # ties in the first BatchNorm: its threshold mean - beta sqrt(var + eps) / gamma set to even integers t,
        # values its accumulator reaches (784 inputs of +-1); float32 puts the reference's pre-activation at t
        # and FINN's streamlined threshold within rounding of t, on either side
        first = norms[0]
        n = first.running_mean.numel()
        t = 2.0 * torch.randint(-6, 7, (n,), generator=gen)
        first.weight.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
        first.bias.copy_(-(t - first.running_mean) * first.weight / torch.sqrt(first.running_var + first.eps))
    net.eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        export_qonnx(net, torch.rand(1, 1, 28, 28), export_path=str(path))
    path.with_name(path.name + ".data").unlink(missing_ok=True)
    return path


@pytest.fixture(scope="module")
def tied_build(tmp_path_factory) -> Path:
    from export.to_finn import main as to_finn_main

    folder = tmp_path_factory.mktemp("ties")
    model = _tied_tfc(folder / "TFC_1W1A_ties.onnx")
    out = folder / "build"
    code = to_finn_main([str(model), "--input-scale", "1/255", "--dataset", "fashion-mnist", "--out", str(out),
                         "--verify-samples", str(SAMPLES), "--python-samples", str(SAMPLES), "--no-progress"])
    assert code == 0, (out / "report.md").read_text() if (out / "report.md").exists() else code
    return out


@pytest.mark.slow
def test_reference_ties_are_explained_and_counted(tied_build: Path, capsys) -> None:
    from hw.check.validate import main as validate_main

    verification = json.loads((tied_build / "report.json").read_text())["verification"]
    assert verification["ok"]
    levels = verification["levels"]
    for name in ("finn_streamlined", "finn_hw_layers"):
        level = levels[name]
        assert level["status"] == "passed" and level["unexplained_mismatches"] == 0, level
        # the float reference differs on these images, all of them explained, none hidden
        assert level["explained_by_reference_ties"] == level["integer_mismatches"] > 0, level
        tie = level["first_reference_tie"]
        assert abs(tie["design_accumulator_minus_threshold"]) <= 1e-3
        assert abs(tie["reference_pre_activation"] / tie["reference_scale"]) <= 1e-3
    table = (tied_build / "validation" / "mismatches.md").read_text()
    assert "explained by reference ties" in table
    # the accelerator model is compared exactly with the reference whose ties the design broke its way
    capsys.readouterr()
    assert validate_main([str(tied_build), "--backend", "model", "--limit", str(SAMPLES), "--levels", "none"]) == 0
    validation = json.loads((tied_build / "validation" / "validation.json").read_text())
    assert validation["mismatches"] == 0 and validation["reference_ties"]["images"] > 0
    assert "reference ties (not mismatches)" in capsys.readouterr().out


def _score_affine(build: Path) -> dict:
    from qonnx.core.modelwrapper import ModelWrapper

    from hw.finn.build import SCORE_AFFINE_KEY

    return json.loads(ModelWrapper(str(build / "finn" / "step_hw_codegen.onnx")).get_metadata_prop(SCORE_AFFINE_KEY))


@pytest.mark.slow
def test_a_threshold_off_by_one_in_the_integer_design_is_not_a_tie(tied_build: Path, tmp_path: Path) -> None:
    """The tie's own threshold in the HW-layer graph moved by one popcount, away from the tie: the design now
    decides against the float reference a whole accumulator step from any tie, which nothing explains."""
    from qonnx.core.modelwrapper import ModelWrapper

    from export.qonnx_import import read_import_record
    from hw.boards import get_board
    from hw.check.imported import verify_imported_build
    from hw.finn.build import BuildResult
    from hw.finn.env import tool_status
    from hw.finn.folding import target_fps
    from quant_models.data import load_dataset

    verification = json.loads((tied_build / "report.json").read_text())["verification"]
    tie = verification["levels"]["finn_hw_layers"]["first_reference_tie"]
    work = tmp_path / "copy"
    shutil.copytree(tied_build, work, ignore=shutil.ignore_patterns("hw", "intermediate_models", "deploy*"))
    path = work / "finn" / "step_create_dataflow_partition.onnx"
    model = ModelWrapper(str(path))
    mvau = [n for n in model.graph.node if n.op_type.startswith("MVAU")][tie["activation"] - 1]  # 0: the input
    thresholds = model.get_initializer(mvau.input[2]).copy()
    channel = tie["element"][-1]
    # the design decided +1 at the tie (threshold on it): -1 makes it decide +1 one step below too; else +1
    thresholds[channel] += -1 if tie["design_decides_plus_one"] else 1
    model.set_initializer(mvau.input[2], thresholds)
    model.save(str(path))
    record = read_import_record(work)
    test = load_dataset("fashion-mnist", "test").head(SAMPLES)
    result = BuildResult(work, get_board("Pynq-Z1"), target_fps(10000), [], {}, [], tool_status(),
                         work / "finn" / "step_hw_codegen.onnx", _score_affine(work))
    mutated = verify_imported_build(result, record, test.images, test.labels, "fashion-mnist", progress=False,
                                    hardware_levels=[], python_samples=SAMPLES)
    hw_layers = mutated["levels"]["finn_hw_layers"]
    assert not mutated["ok"] and "finn_hw_layers" in mutated["failed_levels"]
    assert hw_layers["status"] == "failed" and hw_layers["unexplained_mismatches"] > 0, hw_layers
    # the streamlined graph, untouched, still agrees with the tie-resolved reference
    streamlined = mutated["levels"]["finn_streamlined"]
    assert streamlined["status"] == "passed" and streamlined["explained_by_reference_ties"] > 0
