"""collapse(): exact integer thresholds (every sample, every class), and each documented refusal."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from export.collapse import CollapseError, collapse, integer_scores
from onebit.errors import OnebitError
from quant_models.estimators import get_estimator
from quant_models.topologies import build_model

ARCH = {"name": "tfc", "in_shape": [1, 12, 12], "num_classes": 5, "hidden": [32, 32, 32]}


def _model(arch: dict = ARCH, seed: int = 0) -> nn.Module:
    """An STE model with BatchNorm statistics and affine parameters far from the identity, including
    negative and zero gammas, so the collapse has to negate and to make constant channels."""
    torch.manual_seed(seed)
    model = build_model(arch, get_estimator("ste"))
    with torch.no_grad():
        for block in model.blocks:
            bn = block.bn
            bn.weight.uniform_(-2, 2)
            bn.weight[0] = 0.0  # constant channel: sign(beta)
            bn.weight[1] = -0.7  # negated channel
            bn.bias.uniform_(-3, 3)
            bn.running_mean.uniform_(-40, 40)
            bn.running_var.uniform_(0.5, 30)
    return model.eval()


def _images(n: int, shape: list[int], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.mark.parametrize("arch", [ARCH, dict(ARCH, input_bits=1),
                                  {"name": "cnv", "in_shape": [3, 28, 28], "num_classes": 4,
                                   "channels": [8, 8, 16, 16, 16, 16], "fc": [16]}])
def test_collapsed_model_computes_the_same_integers(arch: dict) -> None:
    model = _model(arch)
    plain, report = collapse(model, {})
    images = _images(300, model.arch["in_shape"])
    trained, collapsed = integer_scores(model, images), integer_scores(plain, images)
    assert np.array_equal(trained, collapsed)
    layers = {row["layer"]: row for row in report["layers"]}
    assert layers["blocks.0"]["constant_channels"] == 1 and layers["blocks.0"]["negated_channels"] >= 1
    for block in plain.blocks:  # the exact threshold form of docs/design.md §3
        bias = block.bn.bias.detach().double().numpy()
        assert block.bn.eps == 0.0 and torch.all(block.bn.weight == 1) and torch.all(block.bn.running_var == 1)
        assert np.all(bias - np.floor(bias) == 0.5)  # half-integers: z - t is never 0


def test_hidden_activations_match_bit_for_bit() -> None:
    model = _model()
    plain, _ = collapse(model, {})
    x = torch.from_numpy(_images(200, ARCH["in_shape"]).astype(np.float32))
    with torch.no_grad():
        assert torch.equal(model.features(x), plain.features(x))


class _ScaledLinear(nn.Module):
    """A binary layer whose scale the tests choose (per-class, negative, ...)."""

    def __init__(self, inner: nn.Module, scale: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.inner, self.scale, self.weights = inner, scale, weights

    def forward(self, x):
        return self.inner(x)

    def binary_weight_and_scale(self):
        sign, _ = self.inner.binary_weight_and_scale()
        return (sign if self.weights is None else self.weights), self.scale


def test_refuses_a_layer_without_binary_weights() -> None:
    model = _model()
    model.blocks[1].weight_layer = nn.Linear(32, 32, bias=False)
    with pytest.raises(CollapseError, match=r"blocks\.1\.weight_layer.*not a binary weight layer"):
        collapse(model, {})


def test_refuses_non_binary_weight_values() -> None:
    model = _model()
    layer = model.blocks[0].weight_layer
    sign, _ = layer.binary_weight_and_scale()
    ternary = sign.clone()
    ternary[0, 0] = 0.0
    model.blocks[0].weight_layer = _ScaledLinear(layer, torch.ones(32), ternary)
    with pytest.raises(CollapseError, match=r"blocks\.0\.weight_layer.*non-binary weights"):
        collapse(model, {})


def test_refuses_a_per_class_score_scale() -> None:
    model = _model()
    model.score = _ScaledLinear(model.score, torch.linspace(0.5, 1.5, 5))
    with pytest.raises(CollapseError, match=r"'score'.*per-class"):
        collapse(model, {})


def test_refuses_a_non_positive_channel_scale() -> None:
    model = _model()
    scale = torch.ones(32)
    scale[3] = -1.0
    model.blocks[2].weight_layer = _ScaledLinear(model.blocks[2].weight_layer, scale)
    with pytest.raises(CollapseError, match=r"blocks\.2\.weight_layer.*non-positive"):
        collapse(model, {})


def test_refuses_a_non_binary_activation() -> None:
    model = _model()
    model.blocks[1].act = nn.Hardtanh()
    with pytest.raises(CollapseError, match=r"blocks\.1\.act.*not a binary activation"):
        collapse(model, {})


def test_refuses_an_unsupported_module() -> None:
    model = _model()
    model.blocks[0].bn = nn.LayerNorm(32)
    with pytest.raises(CollapseError, match=r"blocks\.0\.bn.*not BatchNorm"):
        collapse(model, {})
    assert issubclass(CollapseError, OnebitError)


def test_per_channel_scale_and_threshold_offset_collapse_exactly() -> None:
    """A positive per-channel scale s_c and an activation offset theta move the threshold: still exact."""
    model = _model(seed=4)
    scale = torch.rand(32, generator=torch.Generator().manual_seed(0)) * 3 + 0.1
    model.blocks[0].weight_layer = _ScaledLinear(model.blocks[0].weight_layer, scale)

    class ShiftedSign(nn.Module):
        def __init__(self, theta):
            super().__init__()
            self.theta = theta

        def forward(self, x):
            return torch.where(x + self.theta >= 0, 1.0, -1.0)

        def threshold_offset(self):
            return self.theta

    model.blocks[0].act = ShiftedSign(torch.linspace(-2, 2, 32))
    # The trained model's forward must use the scale too: emulate it on the features path.
    inner = model.blocks[0].weight_layer.inner
    model.blocks[0].weight_layer.forward = lambda x: inner(x) * scale
    plain, _ = collapse(model, {})
    images = _images(400, ARCH["in_shape"], seed=7)
    assert np.array_equal(integer_scores(model, images), integer_scores(plain, images))
