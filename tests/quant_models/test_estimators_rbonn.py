"""RBONN layers: recurrent bilinear step on a tiny layer, Density-ReLU masking, u and alpha guards."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from onebit.errors import OnebitError
from quant_models.estimators import get_estimator
from quant_models.estimators.rbonn import BIN, RBOActivation, RBOLayer
from quant_models.topologies import build_model, default_arch


def _tiny_layer(lam: float = 0.1) -> RBOLayer:
    layer = RBOLayer(2, 5, lam=lam, tau=0.6, u0=0.2).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -0.1], [0.2, 0.4], [-0.5, 0.1], [0.05, -0.02], [0.6, 0.3]]))
        layer.scale_factor.copy_(torch.tensor([2.0, -0.5, 1.0, 0.25, 3.0]))  # alpha = |s|
    return layer


def test_recurrent_step_matches_hand_computation() -> None:
    layer = _tiny_layer()
    x = torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    upstream = torch.tensor([[1.0, 0.5, -1.0, 2.0, 0.0], [0.5, -1.0, 1.0, 1.0, -2.0]], dtype=torch.float64)
    layer.train()
    (layer(x) * upstream).sum().backward()
    w = layer.weight.detach().numpy()
    alpha = np.array([2.0, 0.5, 1.0, 0.25, 3.0])
    grad_wq = upstream.numpy().T @ x.numpy()                       # dL/dWq, (5, 2)
    b = BIN * np.where(w >= 0, 1.0, -1.0)
    expected_gw = alpha[:, None] * grad_wq + 0.1 * (w - alpha[:, None] * b)
    assert np.allclose(layer.weight.grad.numpy(), expected_gw)
    assert np.allclose(layer.g_prev.numpy(), expected_gw)          # remembered for the next step
    sign_s = np.sign([2.0, -0.5, 1.0, 0.25, 3.0])
    expected_ga = (grad_wq * w).sum(1) - 0.1 * ((w - alpha[:, None] * b) * b).sum(1)
    assert np.allclose(layer.scale_factor.grad.numpy(), expected_ga * sign_s)  # through alpha = |s|
    # second step: w~ = w - u * m * g_prev on the int(0.4*5) = 2 smallest-alpha channels (1 and 3)
    w_tilde = layer.latent_weight().detach().numpy()
    mask = np.array([0, 1, 0, 1, 0.0])
    assert np.allclose(w_tilde, w - 0.2 * mask[:, None] * expected_gw)
    # u's gradient on the second step: dL/du_c = -m_c * sum(dL/dw~_c * g_prev_c)
    layer.zero_grad()
    (layer(x) * upstream).sum().backward()
    gw2 = layer.weight.grad.numpy()
    assert np.allclose(layer.u.grad.numpy(), -mask * (gw2 * expected_gw).sum(1))


def test_eval_and_export_ignore_recurrent_state() -> None:
    layer = _tiny_layer()
    x = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    layer.train()
    layer(x).sum().backward()
    layer.eval()
    sign, scale = layer.binary_weight_and_scale()
    assert torch.equal(sign, torch.where(layer.weight.detach() >= 0, 1.0, -1.0).double())
    assert torch.allclose(scale, BIN * torch.tensor([2.0, 0.5, 1.0, 0.25, 3.0], dtype=torch.float64))
    assert torch.allclose(layer(x), (x @ sign.T) * scale)


def test_alpha_guard_and_u_projection() -> None:
    estimator = get_estimator("rbonn")
    model = build_model(default_arch("tfc", [1, 28, 28], 10), estimator)
    layers = [m for m in model.modules() if isinstance(m, RBOLayer)]
    with torch.no_grad():
        layers[0].scale_factor[0] = 0.0
        layers[0].u[:3] = torch.tensor([-0.1, 0.2, -0.3])
    assert float(layers[0].binary_weight_and_scale()[1][0]) > 0
    estimator.on_step_end(model)
    assert layers[0].u[:3].tolist() == pytest.approx([0.1, 0.2, 0.3])
    # score layer: one alpha, no recurrent module
    assert model.score.scale_factor.numel() == 1 and model.score.u is None
    assert len(model.score.binary_weight_and_scale()[1].unique()) == 1
    groups = estimator.optimizer_param_groups(model, 1e-3)
    assert groups[1]["lr"] == pytest.approx(1e-4) and len(groups[1]["params"]) == 3
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_alpha_initialised_at_reconstruction_minimum_and_activation_offset() -> None:
    layer = RBOLayer(30, 4)
    alpha = layer.alpha().detach()
    assert torch.allclose(BIN * alpha, layer.weight.detach().abs().mean(1))
    act = RBOActivation(3)
    with torch.no_grad():
        act.bias.copy_(torch.tensor([0.5, -0.5, 0.0]))
    act.eval()
    assert act(torch.tensor([[-0.5, 0.4, 0.0]])).tolist() == [[1.0, -1.0, 1.0]]
    assert torch.equal(act.threshold_offset(), act.bias)
    with pytest.raises(OnebitError):
        get_estimator("rbonn", mask="random")
