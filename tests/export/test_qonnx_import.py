"""A QONNX model from elsewhere: a Brevitas w1a1 network written here (not one of onebit's topologies),
exported with Brevitas' export_qonnx, through `python export/to_finn.py model.onnx --input-scale 1/255 ...`
-> 0 mismatches at every level against the QONNX reference, and `onebit validate` on the accelerator model.
A wrong declared scale, a score tail that changes the argmax, a flat input without a declared shape: refused.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import quant_models.compat  # noqa: F401  (Brevitas on torch 2.13)
from export.qonnx_import import InputDeclaration, declare_input, prepare_import
from onebit.errors import OnebitError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from brevitas.export import export_qonnx
    from brevitas.nn import QuantIdentity, QuantLinear
    from brevitas.quant import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst, Uint8ActPerTensorFloat


class TensorNormTail(nn.Module):
    """bnn_pynq's TensorNorm in eval mode: one mean/var/weight/bias for all classes."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("running_mean", torch.tensor([3.0]))
        self.register_buffer("running_var", torch.tensor([16.0]))
        self.weight = nn.Parameter(torch.tensor([0.5]))
        self.bias = nn.Parameter(torch.tensor([-1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.running_mean) / (self.running_var + 1e-4).pow(0.5) * self.weight + self.bias


class SmallBinaryMLP(nn.Module):
    """784 -> 32 -> 10, binary weights (scale 0.1) and activations; the input quantizer expects [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity(act_quant=Uint8ActPerTensorFloat, max_val=1.0)
        self.fc1 = QuantLinear(784, 32, bias=False, weight_quant=SignedBinaryWeightPerTensorConst)
        self.bn1 = nn.BatchNorm1d(32)
        self.act1 = QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
        self.fc2 = QuantLinear(32, 10, bias=False, weight_quant=SignedBinaryWeightPerTensorConst)
        self.tail = TensorNormTail()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x.view(x.shape[0], -1))
        return self.tail(self.fc2(self.act1(self.bn1(self.fc1(x)))))


@pytest.fixture(scope="module")
def brevitas_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = SmallBinaryMLP()
    # a flat input: the image shape is declared
    return _calibrated_export(net, (1, 784), tmp_path_factory.mktemp("brevitas") / "model.onnx")


def _calibrated_export(net: torch.nn.Module, example_shape: tuple[int, ...], path: Path) -> Path:
    """`net` with BatchNorm statistics from [0, 1] inputs (as a trained model would have), exported to QONNX."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(64, 1, 28, 28))
    net.eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        export_qonnx(net, torch.rand(*example_shape), export_path=str(path))
    path.with_name(path.name + ".data").unlink(missing_ok=True)
    return path


@pytest.mark.slow
def test_brevitas_export_builds_and_verifies_bit_exact(brevitas_onnx: Path, tmp_path: Path, capsys) -> None:
    from export.to_finn import main as to_finn_main
    from hw.check.validate import main as validate_main

    model = tmp_path / "model.onnx"
    model.write_bytes(brevitas_onnx.read_bytes())
    (tmp_path / "model.onnx.onebit.json").write_text(json.dumps({"dataset": "fashion-mnist"}))
    build, samples = tmp_path / "build", 150
    assert to_finn_main([str(model), "--input-scale", "1/255", "--input-shape", "1,28,28", "--out", str(build),
                         "--verify-samples", str(samples), "--no-progress"]) == 0
    report = json.loads((build / "report.json").read_text())
    verification = report["verification"]
    assert verification["ok"] and verification["compared_against"] == "qonnx_reference"
    levels = verification["levels"]
    assert list(levels) == ["qonnx_reference", "qonnx", "finn_streamlined", "finn_hw_layers"]
    for name, level in levels.items():
        assert level["executed"], f"{name}: {level.get('reason')}"
        assert level["samples"] == samples and level["integer_mismatches"] == 0 and level["non_integer_outputs"] == 0, name
    # the TensorNorm tail left the hardware and is reported with its float form
    tail = verification["score_tail"]
    assert [n.split(" ")[1] for n in tail["nodes"]] == ["(Sub)", "(Div)", "(Mul)", "(Add)"]
    assert tail["scale"] == pytest.approx(0.5 / 4.0, rel=1e-4) and tail["offset"] == pytest.approx(-0.375 - 1.0, rel=1e-4)
    assert tail["argmax_changes_measured"] == 0
    assert "Imported model" in (build / "report.md").read_text()
    # the accelerator reads raw UINT8 pixels; the driver gets the image shape, not the flat vector
    io_json = json.loads((build / "driver" / "io.json").read_text())
    assert io_json["input"]["finn_datatype"] == "UINT8" and io_json["input"]["image_shape"] == [1, 28, 28]
    # the reference really is the model on x/255: the integer scores are s / alpha of the Brevitas output
    import onnx

    first = onnx.load(str(build / "finn" / "step_streamline.onnx")).graph.node[0]
    assert first.op_type != "Mul", "the 1/255 scale must be absorbed by streamlining, not left as a float Mul"
    # ... and the input quantizer, now the identity on UINT8 pixels, is no Thresholding layer in the fabric
    compute = [layer["op_type"] for layer in report["layers"]
               if not layer["op_type"].startswith(("IODMA", "StreamingDataWidthConverter"))]  # I/O rows (issue 15)
    assert compute == ["MVAU_hls", "MVAU_hls"]
    capsys.readouterr()
    assert validate_main([str(build), "--backend", "model", "--limit", "200"]) == 0
    validation = json.loads((build / "validation" / "validation.json").read_text())
    assert validation["samples"] == 200 and validation["mismatches"] == 0
    assert "QONNX reference" in validation["software"]


@pytest.mark.parametrize("scale, why", [("1", "mostly outside the range"), ("1/65025", "under 1/8"),
                                        ("1/100", "mostly outside the range")])
def test_wrong_declared_scale_is_refused(brevitas_onnx: Path, tmp_path: Path, scale: str, why: str) -> None:
    from export.to_finn import main as to_finn_main

    assert to_finn_main([str(brevitas_onnx), "--input-scale", scale, "--dataset", "fashion-mnist",
                         "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    decl = InputDeclaration(scale=float(eval(scale)), scale_text=scale)
    with pytest.raises(OnebitError, match=f"input quantizer Quant.*{why}.*--input-scale 1/255"):
        prepare_import(brevitas_onnx, decl, tmp_path)
    assert not (tmp_path / "b" / "report.json").exists()


def test_scale_within_the_range_but_saturating_is_said(brevitas_onnx: Path, tmp_path: Path, capsys) -> None:
    record = prepare_import(brevitas_onnx, InputDeclaration(scale=1 / 200, scale_text="1/200", shape=(1, 28, 28)),
                            tmp_path)
    assert "22% of the declared input range" in record["input_quantizer"]["warning"]
    assert "saturate" in capsys.readouterr().err
    with pytest.raises(OnebitError, match=r"model input is \[1, 784\], not an image; declare .*--input-shape"):
        prepare_import(brevitas_onnx, InputDeclaration(scale=1 / 255, scale_text="1/255"), tmp_path)
    record = prepare_import(brevitas_onnx, InputDeclaration(scale=1 / 255, scale_text="1/255", shape=(1, 28, 28)),
                            tmp_path)
    assert "warning" not in record["input_quantizer"]


def _edited(source: Path, target: Path, name: str, value: np.ndarray) -> Path:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    for init in model.graph.initializer:
        if init.name == name:
            old = numpy_helper.to_array(init)
            value = value.reshape(old.shape) if value.size == old.size else value
            init.CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    for info in [v for v in model.graph.value_info if v.name == name]:  # shapes are re-inferred
        model.graph.value_info.remove(info)
    onnx.save(model, str(target))
    return target


def _tail_constant(path: Path, op_type: str) -> str:
    from export.qonnx_import import load_clean

    model = load_clean(path)
    node = next(n for n in model.graph.node if n.op_type == op_type)
    return next(i for i in node.input if model.get_initializer(i) is not None), node.name


def test_score_tail_that_changes_the_argmax_is_refused_naming_the_node(brevitas_onnx: Path, tmp_path: Path) -> None:
    from export.qonnx_import import load_clean

    clean = tmp_path / "clean.onnx"
    load_clean(brevitas_onnx).save(str(clean))
    decl = InputDeclaration(scale=1 / 255, scale_text="1/255")
    mul_param, mul_name = _tail_constant(clean, "Mul")
    negative = _edited(clean, tmp_path / "neg.onnx", mul_param, np.array(-0.5))
    with pytest.raises(OnebitError, match=rf"score tail node {mul_name} \(Mul\) multiplies the scores by -0.5"):
        prepare_import(negative, decl, tmp_path)
    add_param, add_name = _tail_constant(clean, "Add")
    per_class = _edited(clean, tmp_path / "bias.onnx", add_param, np.arange(10.0).reshape(1, 10))
    with pytest.raises(OnebitError, match=rf"score tail node {add_name} \(Add\) applies a per-class constant"):
        prepare_import(per_class, decl, tmp_path)


def test_declaration_from_sidecar_and_command_line(brevitas_onnx: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(brevitas_onnx.read_bytes())
    (tmp_path / "m.onnx.onebit.json").write_text(json.dumps(
        {"input": {"scale": "2/255", "offset": -1, "shape": [1, 28, 28]}, "dataset": "mnist"}))
    decl, side = declare_input(model)
    assert decl.scale == pytest.approx(2 / 255) and decl.offset == -1 and decl.shape == (1, 28, 28)
    assert side["dataset"] == "mnist" and "sidecar" in decl.source
    decl, _ = declare_input(model, scale="1/255", offset="0")  # the command line wins
    assert decl.scale == pytest.approx(1 / 255) and decl.offset == 0 and decl.shape == (1, 28, 28)
    # [-1, 1] into the [0, 1] quantizer: half of it below the range -> refused with the hint
    with pytest.raises(OnebitError, match="mostly outside"):
        prepare_import(model, declare_input(model)[0], tmp_path)
    (tmp_path / "m.onnx.onebit.json").write_text(json.dumps({"dataset": "npz:data/d.npz"}))
    assert declare_input(model)[1]["dataset"] == f"npz:{(tmp_path / 'data' / 'd.npz').resolve()}"  # next to it
    (tmp_path / "m.onnx.onebit.json").write_text(json.dumps({"input": {"scael": 1}}))
    with pytest.raises(OnebitError, match="unknown sidecar keys"):
        declare_input(model)


@pytest.fixture(scope="module")
def bnn_pynq_tfc(tmp_path_factory) -> Path:
    """Brevitas' own bnn_pynq TFC_1W1A (untrained weights, BatchNorm statistics from [0, 1] inputs): its
    forward computes 2x - 1 before a 1-bit input quantizer and ends in a TensorNorm."""
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    net, _ = model_with_cfg("tfc_1w1a", pretrained=False)
    return _calibrated_export(net, (1, 1, 28, 28), tmp_path_factory.mktemp("bnn_pynq") / "TFC_1W1A.onnx")


def test_bnn_pynq_tfc_raw_pixels_refused(bnn_pynq_tfc: Path, tmp_path: Path) -> None:
    """The issue's case: raw bytes into a model trained on x/255 (through its own 2x - 1 and sign)."""
    with pytest.raises(OnebitError, match=r"BipolarQuant.*after Mul 2, Sub 1.*decision point 0 at 0.2%.*"
                                          r"--input-scale 1/255"):
        prepare_import(bnn_pynq_tfc, InputDeclaration(), tmp_path)


@pytest.mark.slow
def test_bnn_pynq_tfc_builds_bit_exact(bnn_pynq_tfc: Path, tmp_path: Path, monkeypatch) -> None:
    """At the default levels a user gets: its binarized input is a FINN Thresholding_rtl node, which rtl_nodes
    simulates in Verilator (where installed) from its code-gen folder."""
    from export.to_finn import main as to_finn_main

    monkeypatch.delenv("ONEBIT_LEVELS", raising=False)
    assert to_finn_main([str(bnn_pynq_tfc), "--input-scale", "1/255", "--dataset", "fashion-mnist",
                         "--out", str(tmp_path / "b"), "--verify-samples", "100", "--node-samples", "10",
                         "--no-progress"]) == 0
    verification = json.loads((tmp_path / "b" / "report.json").read_text())["verification"]
    levels = verification["levels"]
    assert verification["ok"] and list(levels)[:4] == ["qonnx_reference", "qonnx", "finn_streamlined", "finn_hw_layers"]
    assert all(lv["status"] == "passed" and lv["integer_mismatches"] == 0 for lv in list(levels.values())[:4])
    assert all(lv["status"] in ("passed", "skipped") for lv in levels.values()), levels
    if levels["rtl_nodes"]["status"] == "passed":
        assert [n["op_type"] for n in levels["rtl_nodes"]["nodes"]] == ["Thresholding_rtl"]
    assert [n.split(" ")[1] for n in verification["score_tail"]["nodes"]][-1] == "(Add)"  # the TensorNorm


class ChannelsLastCNN(nn.Module):
    """Takes N x H x W x C (as a Keras/QONNX-zoo model would); signed 8-bit input quantizer after 2x - 1."""

    def __init__(self) -> None:
        super().__init__()
        from brevitas.nn import QuantConv2d
        from brevitas.quant import Int8ActPerTensorFloat

        self.inp = QuantIdentity(act_quant=Int8ActPerTensorFloat)
        self.conv1 = QuantConv2d(3, 8, 3, bias=False, weight_quant=SignedBinaryWeightPerTensorConst)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
        self.conv2 = QuantConv2d(8, 8, 3, bias=False, weight_quant=SignedBinaryWeightPerTensorConst)
        self.bn2 = nn.BatchNorm2d(8)
        self.act2 = QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
        self.pool = nn.MaxPool2d(2)
        self.fc = QuantLinear(8 * 2 * 2, 4, bias=False, weight_quant=SignedBinaryWeightPerTensorConst)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(2 * x.permute(0, 3, 1, 2) - 1)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.pool(self.act2(self.bn2(self.conv2(x))))
        return self.fc(x.flatten(1)) * 0.5


@pytest.mark.slow
def test_channels_last_cnn_on_an_npz_dataset(tmp_path: Path) -> None:
    """A CNN whose input is NHWC, declared by the sidecar, verified on an .npz dataset written here."""
    from export.to_finn import main as to_finn_main
    from hw.check.validate import validate_build

    torch.manual_seed(0)
    net = ChannelsLastCNN()
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(64, 8, 8, 3))
    net.eval()
    model = tmp_path / "cnn.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        export_qonnx(net, torch.rand(1, 8, 8, 3), export_path=str(model))
    model.with_name(model.name + ".data").unlink(missing_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8)
    images[::2] //= 3  # darker half: the scores vary between images
    np.savez(tmp_path / "rgb.npz", images=images, labels=np.arange(60) % 4)
    (tmp_path / "cnn.onnx.onebit.json").write_text(json.dumps(
        {"input": {"scale": "1/255", "layout": "NHWC"}, "dataset": f"npz:{tmp_path / 'rgb.npz'}"}))
    build = tmp_path / "build"
    assert to_finn_main([str(model), "--out", str(build), "--verify-samples", "0", "--no-progress"]) == 0
    report = json.loads((build / "report.json").read_text())
    levels = report["verification"]["levels"]
    assert all(lv["executed"] and lv["integer_mismatches"] == 0 and lv["samples"] == 12 for lv in levels.values())
    assert report["accelerator_io"]["input"]["layout"] == "NHWC"
    assert json.loads((build / "driver" / "io.json").read_text())["input"]["image_shape"] == [3, 8, 8]
    validation = validate_build(build, backend="model", progress=False)
    assert validation["samples"] == 12 and validation["mismatches"] == 0


def test_import_options_with_a_checkpoint_are_refused(tmp_path: Path, capsys) -> None:
    from export.to_finn import main as to_finn_main

    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not read: the options are refused first")
    assert to_finn_main([str(checkpoint), "--input-scale", "1/255", "--out", str(tmp_path / "b")]) == 2
    assert "--input-scale apply to a QONNX model" in capsys.readouterr().err
