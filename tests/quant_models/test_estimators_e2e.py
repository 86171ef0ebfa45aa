"""End to end per method on a tiny run: the training CLI writes model.pt, the checkpoint reloads, the
collapse makes it plain binary, Brevitas exports QONNX, and QONNX execution gives the trained model's
integer scores on every test image (the full FINN build of such checkpoints is `python
export/to_finn.py model.pt`, run by hand for the report: 0 mismatches on all levels)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from export.collapse import collapse, integer_scores
from export.qonnx import export_qonnx, run_qonnx
from quant_models.checkpoint import load_checkpoint
from quant_models.data import load_dataset
from quant_models.train import main as train_main

AUXILIARY = ("generator", "scale_factor", "latent", "g_prev", "temperature", "theta", "ede", "embed")


@pytest.mark.parametrize("method", ["irnet", "binaryduo", "rbonn", "hyper", "hyper:linear=hyper"])
def test_cli_trained_method_exports_bit_exact(method: str, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    method, _, hparam = method.partition(":")
    rc = train_main(["--model", "tfc", "--estimator", method, *(["--hparam", hparam] if hparam else []),
                     "--epochs", "2", "--limit-train", "600",
                     "--limit-test", "200", "--arch", "hidden=[32,32]", "--quiet", "--out", str(out)])
    assert rc == 0 and out.exists()
    model, meta = load_checkpoint(out)
    assert meta["estimator"]["name"] == method
    plain, _ = collapse(model, meta)
    test = load_dataset("fashion-mnist", "test").head(500)
    trained = integer_scores(model, test.images)
    assert np.array_equal(trained, integer_scores(plain, test.images))
    path = export_qonnx(plain, meta, tmp_path / "model_qonnx.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.curve.png", "model.pt", "model_qonnx.onnx"]
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert ops & {"BipolarQuant", "Quant"}  # ordinary binary quant nodes
    names = " ".join([i.name for i in graph.initializer] + [n.name for n in graph.node]).lower()
    assert not any(word in names for word in AUXILIARY), names
    assert np.array_equal(run_qonnx(path, test.images, batch_size=500).round().astype(np.int64), trained)
    if method == "binaryduo":
        # the recorded arch is the decoupled one (2C' binary channels per block)
        assert model.arch["binaryduo"] == "decoupled" and all(w % 2 == 0 for w in model.arch["hidden"])
