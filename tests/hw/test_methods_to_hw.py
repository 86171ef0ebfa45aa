"""Every training method, end to end on a tiny run: training CLI -> export/to_finn.py (FINN build and
verification at every level) -> `onebit validate` on the accelerator model, with 0 integer mismatches.

The widths are small so that the four methods x two topologies stay near two minutes; the structure is
each topology's (TFC: FC blocks; CNV: 6 convs with 2 max-pools, then FC), so the method-specific export
paths (IR-Net's power-of-two scales, BinaryDuo's decoupled channels, RBONN's float scales, Hyper's
generated weights) all go through FINN's streamlining and HW conversion. bench/methods_hw.py runs the
same commands at full width on the whole test set.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.to_finn import main as to_finn_main
from hw.check.validate import main as validate_main
from quant_models.train import main as train_main

METHODS = ["irnet", "binaryduo", "rbonn", "hyper"]
TINY = {
    "tfc": (["--arch", "hidden=[32,32]", "--limit-train", "1000"], 300),
    "cnv": (["--arch", "channels=[8,8,16,16,16,16]", "--arch", "fc=[16,16]", "--limit-train", "300"], 20),
}


# Hyper-BinaryNet's linear layers in both forms: the authors' (default: plain latent weights, on TFC and on
# CNV's FC layers) and onebit's HyperLinear extension (linear=hyper; TFC is all linear)
CASES = [(method, model) for method in METHODS for model in ("tfc", "cnv")] + [("hyper:linear=hyper", "tfc")]


@pytest.mark.parametrize("method,model", CASES)
def test_method_trains_builds_and_validates_bit_exact(method: str, model: str, tmp_path: Path, capsys) -> None:
    arch, samples = TINY[model]
    checkpoint, build = tmp_path / "model.pt", tmp_path / "build"
    method, _, hparam = method.partition(":")
    arch = [*arch, *(["--hparam", hparam] if hparam else [])]
    assert train_main(["--model", model, "--estimator", method, "--epochs", "1", "--limit-test", "100",
                       "--seed", "0", "--quiet", *arch, "--out", str(checkpoint)]) == 0
    assert to_finn_main([str(checkpoint), "--out", str(build), "--verify-samples", str(samples),
                         "--python-samples", "0", "--no-progress"]) == 0  # every level on every sample
    # FINN's own chatter goes to the build log, not over the user's report
    assert "standalone_thresholds" not in capsys.readouterr().err
    assert "standalone_thresholds" in (build / "build.log").read_text()
    report = json.loads((build / "report.json").read_text())
    assert report["checkpoint"]["estimator"]["name"] == method
    verification = report["verification"]
    assert verification["ok"] and verification["samples"] == samples
    levels = verification["levels"]
    assert {"qonnx", "finn_streamlined", "finn_hw_layers"} <= set(levels)
    for name, level in levels.items():
        assert level["executed"], f"{name}: {level.get('reason')}"
        assert level["samples"] == samples and level["integer_mismatches"] == 0, name
    # the HW graph really is FINN's XNOR-popcount form: binary MVAUs, no float MatMul left
    ops = {layer["op_type"] for layer in report["layers"]}
    assert ops and all(op.startswith(("MVAU", "ConvolutionInputGenerator", "StreamingMaxPool", "Pool", "Thresholding",
                                      "LabelSelect", "FMPadding", "StreamingDataWidthConverter",
                                      "StreamingFIFO", "IODMA")) for op in ops), ops  # IODMA: the cost model's I/O rows
    capsys.readouterr()
    assert validate_main([str(build), "--backend", "model", "--limit", str(samples)]) == 0
    validation = json.loads((build / "validation" / "validation.json").read_text())
    assert validation["samples"] == samples and validation["mismatches"] == 0
