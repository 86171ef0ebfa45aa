"""Topologies: shapes for several inputs, binary weights/activations, integer scores, exact input quant."""
from __future__ import annotations

import pytest
import torch

from onebit.errors import OnebitError
from quant_models.estimators import binary_weight_layers, get_estimator, threshold_offset_of
from quant_models.topologies import BinaryBlock, OnebitNet, build_model


def _pixels(n: int, shape: list[int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=g).float()


@pytest.mark.parametrize(
    "arch, expected_blocks",
    [
        ({"name": "tfc", "in_shape": [1, 28, 28], "num_classes": 10}, 3),
        ({"name": "sfc", "in_shape": [3, 32, 32], "num_classes": 7, "input_bits": 1}, 3),
        ({"name": "lfc", "in_shape": [1, 8, 8], "num_classes": 2}, 3),
        ({"name": "tfc", "in_shape": [1, 28, 28], "num_classes": 10, "hidden": [32, 16]}, 2),
        ({"name": "cnv", "in_shape": [3, 32, 32], "num_classes": 10}, 8),
        ({"name": "cnv", "in_shape": [1, 28, 28], "num_classes": 10, "channels": [16, 16, 32, 32, 32, 32], "fc": [64, 64]}, 8),
        ({"name": "cnv", "in_shape": [2, 40, 36], "num_classes": 5, "channels": [8, 8, 16, 16, 32, 32], "fc": [64]}, 7),
    ],
)
def test_shapes_binary_values_and_integer_scores(arch: dict, expected_blocks: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch, get_estimator("ste"))
    assert isinstance(model, OnebitNet)
    assert len(model.blocks) == expected_blocks and all(isinstance(b, BinaryBlock) for b in model.blocks)
    x = _pixels(5, arch["in_shape"])
    model.train()
    model(x).sum().backward()  # every parameter path is differentiable through the STE
    model.eval()
    scores = model(x)
    assert scores.shape == (5, arch["num_classes"])
    z = model.integer_scores(x)
    assert z.dtype == torch.int64 and z.shape == (5, arch["num_classes"])
    # the scaled training scores are the integers times one positive scalar
    torch.testing.assert_close(scores, z.float() * model.score_scale.log_scale.exp(), rtol=1e-6, atol=1e-5)
    # parity: a sum of n terms of +-1 has the parity of n
    assert torch.all((z - model.score.in_features) % 2 == 0)

    # every activation output is exactly +-1 in eval mode
    seen = []
    hooks = [b.act.register_forward_hook(lambda m, i, o: seen.append(o)) for b in model.blocks]
    model(x)
    for h in hooks:
        h.remove()
    assert len(seen) == expected_blocks
    for out in seen:
        assert set(out.unique().tolist()) <= {-1.0, 1.0}

    # every binary weight layer reports +-1 signs equal to what Brevitas quantizes, and scale 1
    layers = list(binary_weight_layers(model))
    assert len(layers) == expected_blocks + 1
    for name, layer in layers:
        sign, scale = layer.binary_weight_and_scale()
        assert set(sign.unique().tolist()) <= {-1.0, 1.0}, name
        assert torch.equal(sign, layer.quant_weight().value.detach()), name
        assert torch.all(scale > 0) and scale.shape == (sign.shape[0],)
    for block in model.blocks:
        channels = block.bn.num_features
        assert torch.equal(threshold_offset_of(block.act, channels), torch.zeros(channels))


def test_cnv_padding_rules() -> None:
    est = get_estimator("ste")
    assert build_model({"name": "cnv", "in_shape": [1, 28, 28], "num_classes": 10}, est).arch["first_padding"] == 2
    assert build_model({"name": "cnv", "in_shape": [3, 32, 32], "num_classes": 10}, est).arch["first_padding"] == 0
    with pytest.raises(OnebitError, match="input_bits=8"):
        build_model({"name": "cnv", "in_shape": [1, 28, 28], "num_classes": 10, "input_bits": 1}, est)


def test_uint8_input_quant_is_exact_identity() -> None:
    model = build_model({"name": "tfc", "in_shape": [1, 16, 16], "num_classes": 3}, get_estimator("ste"))
    x = torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16)
    for mode in (True, False):
        model.train(mode)
        assert torch.equal(model.input_quant(x), x)
    model.input_quant.quant.return_quant_tensor = True
    qt = model.input_quant(x)
    assert float(qt.scale) == 1.0 and float(qt.zero_point) == 0.0 and int(qt.bit_width) == 8


def test_binary_input_threshold_at_128() -> None:
    model = build_model({"name": "tfc", "in_shape": [1, 16, 16], "num_classes": 3, "input_bits": 1}, get_estimator("ste"))
    model.eval()
    x = torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16)
    expected = torch.where(x >= 128, 1.0, -1.0)
    assert torch.equal(model.input_quant(x), expected)


@pytest.mark.parametrize(
    "arch, message",
    [
        ({"name": "resnet", "in_shape": [1, 28, 28], "num_classes": 10}, "unknown architecture"),
        ({"name": "tfc", "in_shape": [28, 28], "num_classes": 10}, "in_shape"),
        ({"name": "tfc", "in_shape": [1, 28, 28], "num_classes": 0}, "num_classes"),
        ({"name": "tfc", "in_shape": [1, 28, 28], "num_classes": 10, "input_bits": 4}, "input_bits"),
        ({"name": "cnv", "in_shape": [1, 8, 8], "num_classes": 10, "first_padding": 0}, "too small"),
        ({"name": "tfc", "in_shape": [1, 28, 28], "num_classes": 10, "hidden": [64, -1]}, "hidden"),
    ],
)
def test_bad_arch(arch: dict, message: str) -> None:
    with pytest.raises(OnebitError, match=message):
        build_model(arch, get_estimator("ste"))


def test_input_quant_exports_as_qonnx_quant_with_scale_one(tmp_path) -> None:
    """The UINT8 identity is a QONNX Quant node (scale 1, zero point 0, 8 bit, unsigned) that executes
    as the identity on 0..255; the binary input is Sub(127.5) -> BipolarQuant."""
    import numpy as np
    import onnx
    from brevitas.export import export_qonnx
    from onnx import numpy_helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from quant_models.topologies import InputQuant

    x = torch.arange(256, dtype=torch.float32).reshape(1, 1, 16, 16)
    path = tmp_path / "input8.onnx"
    export_qonnx(InputQuant(8).eval(), x, export_path=str(path))
    graph = onnx.load(path).graph
    assert [n.op_type for n in graph.node] == ["Quant"]
    values = {i.name: float(numpy_helper.to_array(i)) for i in graph.initializer}
    scale, zero_point, bit_width = (values[name] for name in graph.node[0].input[1:4])
    assert (scale, zero_point, bit_width) == (1.0, 0.0, 8.0)
    assert {a.name: a.i for a in graph.node[0].attribute if a.name in ("signed", "narrow")} == {"signed": 0, "narrow": 0}
    model = ModelWrapper(str(path))
    out = execute_onnx(model, {model.graph.input[0].name: x.numpy()})[model.graph.output[0].name]
    assert np.array_equal(out, x.numpy())

    path1 = tmp_path / "input1.onnx"
    export_qonnx(InputQuant(1).eval(), x, export_path=str(path1))
    graph1 = onnx.load(path1).graph
    assert [n.op_type for n in graph1.node] == ["Sub", "BipolarQuant"]
    model1 = ModelWrapper(str(path1))
    out1 = execute_onnx(model1, {model1.graph.input[0].name: x.numpy()})[model1.graph.output[0].name]
    assert np.array_equal(out1, np.where(x.numpy() >= 128, 1.0, -1.0))
