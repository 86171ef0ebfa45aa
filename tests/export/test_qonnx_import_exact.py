"""Brevitas networks written outside onebit that used to build wrong or not at all (issues 28 and 20.5/20.6),
through `python export/to_finn.py model.onnx ...` at the default verification levels:

- a CNN whose torch.flatten follows a binary quantizer (torch 2.13 exports `Reshape(allowzero=1)`, opset 20):
  every Python level executed, 0 mismatches (the merge used to make it opset 11 with the attribute left in,
  so onnxruntime refused the qonnx and finn_streamlined levels and the build passed without them);
- the same with a 2-bit QuantReLU in the middle;
- a binary-input conv with padding=1 (a +-1 map padded with 0): refused before FINN, exit 2, naming the node;
- a signed 8-bit input quantizer `QuantIdentity(bit_width=8)` over UINT8 pixels, and a bnn_pynq TFC whose
  BatchNorm makes two neurons constant: thresholds clipped to the reachable range, bit-exact (FINN's
  step_minimize_bit_width_initial used to stop with a bare AssertionError);
- `--python-samples` honoured for an imported model, a negative one refused;
- README's export snippet runs as written in onebit's environment.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import quant_models.compat  # noqa: F401  (Brevitas on torch 2.13)
from export.qonnx_import import FINN_OPSET, ImportRefused, InputDeclaration, prepare_import

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from brevitas.export import export_qonnx
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
    from brevitas.quant import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst, Uint8ActPerTensorFloat

REPO = Path(__file__).resolve().parents[2]
BINARY = dict(bias=False, weight_quant=SignedBinaryWeightPerTensorConst)
PYTHON_LEVELS = ("qonnx_reference", "qonnx", "finn_streamlined", "finn_hw_layers")


class FlattenCNN(nn.Module):
    """28x28 -> conv 3x3 -> conv 3x3 (padding `pad`) -> max-pool -> torch.flatten -> linear; binary weights,
    binary activations (or a 2-bit QuantReLU after the second conv, then a binary linear layer)."""

    def __init__(self, pad: int = 0, mid_relu: bool = False) -> None:
        super().__init__()
        self.inp = QuantIdentity(act_quant=Uint8ActPerTensorFloat, max_val=1.0)
        self.c1, self.b1 = QuantConv2d(1, 8, 3, **BINARY), nn.BatchNorm2d(8)
        self.a1 = QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
        self.c2, self.b2 = QuantConv2d(8, 8, 3, padding=pad, **BINARY), nn.BatchNorm2d(8)
        self.a2 = QuantReLU(bit_width=2) if mid_relu else QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
        self.pool = nn.MaxPool2d(2)
        features = 8 * ((26 + 2 * pad - 2) // 2) ** 2
        self.mid = None
        if mid_relu:
            self.mid = nn.Sequential(QuantLinear(features, 16, **BINARY), nn.BatchNorm1d(16),
                                     QuantIdentity(act_quant=SignedBinaryActPerTensorConst))
            features = 16
        self.fc = QuantLinear(features, 10, **BINARY)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a1(self.b1(self.c1(self.inp(x))))
        x = torch.flatten(self.pool(self.a2(self.b2(self.c2(x)))), 1)
        return self.fc(self.mid(x) if self.mid is not None else x)


class PaddedBipolarCNN(nn.Module):
    """A +-1 map padded explicitly by F.pad with `value` before a binary conv."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.inp = QuantIdentity(act_quant=Uint8ActPerTensorFloat, max_val=1.0)
        self.c1, self.b1 = QuantConv2d(1, 8, 3, **BINARY), nn.BatchNorm2d(8)
        self.a1 = QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
        self.c2 = QuantConv2d(8, 8, 3, **BINARY)
        self.fc = QuantLinear(8 * 26 * 26, 10, **BINARY)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a1(self.b1(self.c1(self.inp(x))))
        x = self.c2(nn.functional.pad(x, (1, 1, 1, 1), value=self.value))
        return self.fc(torch.flatten(x, 1))


class Int8InputMLP(nn.Module):
    """The common input quantizer QuantIdentity(bit_width=8): Brevitas' signed Int8ActPerTensorFloat."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity(bit_width=8)
        self.fc1, self.b1 = QuantLinear(784, 64, **BINARY), nn.BatchNorm1d(64)
        self.a1 = QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
        self.fc2 = QuantLinear(64, 10, **BINARY)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.a1(self.b1(self.fc1(self.inp(torch.flatten(x, 1))))))


def _export(net: nn.Module, path: Path, shape: tuple[int, ...] = (1, 1, 28, 28)) -> Path:
    """BatchNorm statistics from [0, 1] inputs (as a trained model would have), then README's export."""
    torch.manual_seed(1)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(64, *shape[1:]))
    net.eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        export_qonnx(net, torch.rand(*shape), export_path=str(path))
    return path


def _build(model: Path, out: Path, monkeypatch, *extra: str) -> tuple[int, dict]:
    """`python export/to_finn.py model.onnx --input-scale 1/255 --dataset fashion-mnist` at the default levels."""
    from export.to_finn import main as to_finn_main

    monkeypatch.delenv("ONEBIT_LEVELS", raising=False)  # the levels a user gets (tests/conftest.py sets none)
    code = to_finn_main([str(model), "--input-scale", "1/255", "--dataset", "fashion-mnist", "--out", str(out),
                         "--no-progress", *extra])
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    return code, report


def _assert_exact(report: dict, python_samples: int, samples: int) -> None:
    verification = report["verification"]
    levels = verification["levels"]
    assert verification["ok"] and verification["first_divergent_level"] is None
    assert verification["python_samples"] == python_samples
    for name in PYTHON_LEVELS:
        level = levels[name]
        assert level["executed"], f"{name}: {level.get('reason')}"
        assert level["integer_mismatches"] == 0 and level["non_integer_outputs"] == 0, name
        assert level["samples"] == (samples if name == "qonnx_reference" else python_samples), name
    for name, level in levels.items():  # the hardware levels the setup installed: run, or skipped for a reason,
        skipped = level.get("status") == "skipped" or str(level.get("reason", "")).startswith("skipped")
        nothing = level.get("status") == "nothing to simulate"  # or no node of their kind in this build
        assert level.get("executed") or skipped or nothing, f"{name}: {level}"
        assert not level.get("integer_mismatches"), f"{name}: {level}"


@pytest.mark.slow
def test_flatten_after_a_binary_quantizer_runs_every_python_level(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    model = _export(FlattenCNN(), tmp_path / "flatten.onnx")
    exported = onnx.load(str(model))
    assert any(n.op_type == "Reshape" and any(a.name == "allowzero" and a.i == 1 for a in n.attribute)
               for n in exported.graph.node), "the exporter no longer writes Reshape(allowzero=1): the test is moot"
    code, report = _build(model, tmp_path / "b", monkeypatch, "--verify-samples", "60", "--python-samples", "40")
    assert code == 0, report.get("verification")
    _assert_exact(report, python_samples=40, samples=60)
    merged = onnx.load(str(tmp_path / "b" / "model_qonnx.onnx"))
    assert [o.version for o in merged.opset_import if o.domain in ("", "ai.onnx")] == [FINN_OPSET]
    assert not any(a.name == "allowzero" for n in merged.graph.node for a in n.attribute)


@pytest.mark.slow
def test_two_bit_relu_in_the_middle_still_builds_bit_exact(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    model = _export(FlattenCNN(mid_relu=True), tmp_path / "relu2.onnx")
    code, report = _build(model, tmp_path / "b", monkeypatch, "--verify-samples", "40")
    assert code == 0, report.get("verification")
    _assert_exact(report, python_samples=40, samples=40)


def test_reshape_allowzero_with_a_zero_in_the_shape_is_refused(tmp_path: Path) -> None:
    """allowzero=1 with a 0 in the shape means something opset 11 cannot say: refused naming the node."""
    torch.manual_seed(0)
    model = onnx.load(str(_export(FlattenCNN(), tmp_path / "flatten.onnx")))
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape")
    shape = next(i for i in model.graph.initializer if i.name == reshape.input[1])
    values = onnx.numpy_helper.to_array(shape).copy()
    values[0] = 0  # (0, -1): with allowzero=1 a real zero-size batch dimension
    shape.CopyFrom(onnx.numpy_helper.from_array(values, shape.name))
    edited = tmp_path / "zero.onnx"
    onnx.save(model, str(edited))
    with pytest.raises(ImportRefused, match=r"node .*\(Reshape\) has allowzero=1 .* opset 11"):
        prepare_import(edited, InputDeclaration(scale=1 / 255, scale_text="1/255"), tmp_path / "out")


def test_zero_padding_of_a_bipolar_map_is_refused_before_finn(tmp_path: Path, capsys) -> None:
    from export.to_finn import main as to_finn_main

    torch.manual_seed(0)
    model = _export(FlattenCNN(pad=1), tmp_path / "padded.onnx")
    out = tmp_path / "b"
    assert to_finn_main([str(model), "--input-scale", "1/255", "--dataset", "fashion-mnist", "--out", str(out),
                         "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert re.search(r"node \S+ \(Conv\) pads a bipolar \(\+-1\) feature map with 0 .*padding=0.*\+1 or -1", err[0])
    assert not (out / "finn").exists() and not (out / "model_qonnx.onnx").exists()  # no FINN step ran


@pytest.mark.parametrize("value, refused", [(0.0, True), (0.5, True), (1.0, False), (-1.0, False)])
def test_explicit_pad_of_a_bipolar_map(tmp_path: Path, value: float, refused: bool) -> None:
    """An explicit pad: refused unless its value is one the +-1 map can take (torch's exporter folds a pad
    with 0 into the Conv's pads; other values stay a Pad node)."""
    torch.manual_seed(0)
    model = _export(PaddedBipolarCNN(value), tmp_path / "pad.onnx")
    decl = InputDeclaration(scale=1 / 255, scale_text="1/255")
    if refused:
        with pytest.raises(ImportRefused, match=rf"node \S+ \((Pad|Conv)\) pads a bipolar .* with {value:g}[, ]"):
            prepare_import(model, decl, tmp_path / "out")
    else:
        (tmp_path / "out").mkdir()
        prepare_import(model, decl, tmp_path / "out")
        assert (tmp_path / "out" / "model_qonnx.onnx").exists()


@pytest.mark.slow
def test_signed_8bit_input_quantizer_builds_bit_exact(tmp_path: Path, monkeypatch) -> None:
    """QuantIdentity(bit_width=8) over x/255: half its thresholds lie below pixel 0; clipped, exact."""
    torch.manual_seed(0)
    model = _export(Int8InputMLP(), tmp_path / "int8.onnx")
    code, report = _build(model, tmp_path / "b", monkeypatch, "--verify-samples", "100")
    assert code == 0, report.get("verification")
    _assert_exact(report, python_samples=100, samples=100)
    clipped = onnx.load(str(tmp_path / "b" / "finn" / "step_onebit_clip_thresholds.onnx"))
    record = json.loads(next(p.value for p in clipped.graph.metadata_props if p.key == "onebit_clipped_thresholds"))
    assert record[0]["reachable"] == [0.0, 255.0] and record[0]["thresholds_clipped"] > 0


@pytest.fixture
def tfc_with_constant_neurons(tmp_path: Path) -> Path:
    """Brevitas' bnn_pynq TFC_1W1A (random weights, BatchNorm statistics from [0, 1] inputs) whose second
    layer's BatchNorm makes two neurons constant: popcount thresholds -20 and 67 for MW 64."""
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    net, _ = model_with_cfg("tfc_1w1a", pretrained=False)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(64, 1, 28, 28))
    net.eval()
    bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)][1]
    with torch.no_grad():
        bn.weight.abs_()
        bn.bias.zero_()
        bn.running_mean[0] = 2 * -20 - 64  # z = 2p - 64 >= mean <=> p >= -20: always +1
        bn.running_mean[1] = 2 * 67 - 64   # p >= 67 > MW: always -1
    path = tmp_path / "tfc_const.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        export_qonnx(net, torch.rand(1, 1, 28, 28), export_path=str(path))
    return path


@pytest.mark.slow
def test_bnn_pynq_tfc_with_constant_neurons_builds_bit_exact(tfc_with_constant_neurons: Path, tmp_path: Path,
                                                             monkeypatch) -> None:
    code, report = _build(tfc_with_constant_neurons, tmp_path / "b", monkeypatch, "--verify-samples", "100")
    assert code == 0, report.get("verification")
    _assert_exact(report, python_samples=100, samples=100)
    clipped = onnx.load(str(tmp_path / "b" / "finn" / "step_onebit_clip_thresholds.onnx"))
    record = json.loads(next(p.value for p in clipped.graph.metadata_props if p.key == "onebit_clipped_thresholds"))
    assert {"reachable": [0.0, 64.0], "thresholds_clipped": 2} in [{k: r[k] for k in ("reachable", "thresholds_clipped")}
                                                                 for r in record]


def test_negative_python_samples_refused_for_an_imported_model(tmp_path: Path, capsys) -> None:
    from export.to_finn import main as to_finn_main

    model = tmp_path / "m.onnx"
    model.write_bytes(b"not read: the option is refused first")
    assert to_finn_main([str(model), "--python-samples", "-5", "--dataset", "mnist", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["onebit: --python-samples must be >= 0 (0 = every verified image), got -5"]


def _readme_export_snippet() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Bring your own model", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Bring-your-own section has no python snippet"
    return match.group(1)


def test_readme_export_snippet_runs_as_written(tmp_path: Path) -> None:
    """The snippet, run as a user runs it: a fresh interpreter in onebit's environment, from the repository
    root's packages (PYTHONPATH), writing model.onnx in the current folder; onebit then accepts that model."""
    snippet = _readme_export_snippet()
    assert "import quant_models.compat" in snippet.split("export_qonnx")[0]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (tmp_path / "out").mkdir()
    prepare_import(tmp_path / "model.onnx", InputDeclaration(scale=1 / 255, scale_text="1/255"), tmp_path / "out")
    assert (tmp_path / "out" / "model_qonnx.onnx").exists()
