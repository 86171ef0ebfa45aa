"""The methods' quantizers are Brevitas quantizers: every binary activation of every method runs through a
Brevitas act-quant proxy whose tensor_quant is the method's, and so do IR-Net's and BinaryDuo's weights."""
from __future__ import annotations

import pytest
import torch
from brevitas.nn import QuantIdentity
from brevitas.proxy import ActQuantProxyFromInjector, WeightQuantProxyFromInjector

from quant_models.estimators import get_estimator
from quant_models.estimators.base import binary_weight_layers
from quant_models.quantizers import MethodTensorQuant
from quant_models.topologies import build_model, default_arch

EXPECTED_TENSOR_QUANT = {"irnet": "EDESignTensorQuant", "rbonn": "ApproxSignTensorQuant",
                         "hyper": "WarmupSignTensorQuant", "binaryduo": "TernaryTensorQuant"}


@pytest.mark.parametrize("method", sorted(EXPECTED_TENSOR_QUANT))
def test_every_activation_is_a_brevitas_proxy_with_the_methods_tensor_quant(method: str) -> None:
    model = build_model(default_arch("cnv", [1, 28, 28], 10, channels=[8, 8, 8, 8, 8, 8], fc=[16, 16]),
                        get_estimator(method)).train()
    acts = [block.act for block in model.blocks]
    assert acts and all(isinstance(a, QuantIdentity) and isinstance(a.act_quant, ActQuantProxyFromInjector) for a in acts)
    quants = [a.act_quant.fused_activation_quant_proxy.tensor_quant for a in acts]
    assert all(isinstance(q, MethodTensorQuant) and type(q).__name__ == EXPECTED_TENSOR_QUANT[method] for q in quants)
    # the proxies are really on the training path: replacing one tensor_quant's output changes the model
    x = torch.randint(0, 256, (2, 1, 28, 28)).float()
    before = model(x)
    quants[0].quantize = lambda y: torch.zeros_like(y)
    assert not torch.equal(model(x), before)


@pytest.mark.parametrize("method", ["irnet", "binaryduo", "hyper"])  # hyper: its authors' linear layers
def test_weights_go_through_brevitas_weight_proxies(method: str) -> None:
    model = build_model(default_arch("tfc", [1, 28, 28], 10, hidden=[16, 16]), get_estimator(method)).train()
    layers = [layer for _, layer in binary_weight_layers(model)]
    assert layers and all(isinstance(layer.weight_quant, WeightQuantProxyFromInjector) for layer in layers)
    # the training weight is the proxy's output, and its gradient reaches the latent weight
    layer = layers[1]
    w = layer.weight_quant(layer.weight).value
    assert set(torch.sign(w.detach()).unique().tolist()) <= {-1.0, 1.0}
    w.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
