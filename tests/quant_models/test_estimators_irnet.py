"""IR-Net layers: Libra-PB + EDE wired into the estimator interface, schedule hooks, export form."""
from __future__ import annotations

import pytest
import torch

from onebit.errors import OnebitError
from quant_models.estimators import get_estimator
from quant_models.estimators.functional import ede_schedule
from quant_models.estimators.irnet import IRActivation, IRLayer
from quant_models.topologies import build_model, default_arch


def test_schedule_hooks_set_every_ede_and_reach_endpoints() -> None:
    estimator = get_estimator("irnet")
    model = build_model(default_arch("tfc", [1, 28, 28], 10), estimator)
    states = [m.ede for m in model.modules() if isinstance(m, (IRLayer, IRActivation))]
    assert len(states) == 4 + 3
    estimator.on_epoch_start(model, 0, 10)
    assert all(float(s.t) == pytest.approx(0.1) and float(s.k) == pytest.approx(10.0) for s in states)
    estimator.on_epoch_start(model, 9, 10)
    t, k = ede_schedule(0.9)
    assert all(float(s.t) == pytest.approx(t) and float(s.k) == pytest.approx(k) for s in states)
    step_est = get_estimator("irnet", schedule="step")
    step_est.on_epoch_start(model, 0, 10)  # ignored for the per-step schedule
    step_est.on_step_start(model, 50, 100)
    assert all(float(s.t) == pytest.approx(1.0) for s in states)
    with pytest.raises(OnebitError):
        get_estimator("irnet", schedule="daily")


def test_weight_gradient_is_ede_through_standardisation() -> None:
    torch.manual_seed(0)
    layer = IRLayer(12, 5).double()
    t, k = 2.0, 1.0
    layer.ede.set(k, t)
    x = torch.randn(7, 12, dtype=torch.float64).sign()
    upstream = torch.randn(7, 5, dtype=torch.float64)
    (layer(x) * upstream).sum().backward()
    # reference by hand: Wq = s * sign(w_std); dL/dWq = upstream^T x; chain EDE' and the std Jacobian
    w = layer.weight.detach().clone().requires_grad_()
    centred = w - w.mean(1, keepdim=True)
    w_std = centred / (centred.std(1, keepdim=True) + 1e-8)
    scale = torch.pow(2.0, torch.round(torch.log2(w_std.detach().abs().mean(1))))
    grad_wq = upstream.T @ x
    surrogate = k * t * (1 - torch.tanh(t * w_std.detach()) ** 2)
    (w_std * (grad_wq * scale[:, None] * surrogate)).sum().backward()
    assert torch.allclose(layer.weight.grad, w.grad, atol=1e-10)


def test_activation_gradient_is_clip_times_ede() -> None:
    act = IRActivation(3)
    act.ede.set(1.0, 3.0)
    y = torch.tensor([[-1.5, -0.2, 0.0], [0.3, 0.9, 2.0]], requires_grad=True)
    out = act(y)
    assert out.tolist() == [[-1, -1, 1], [1, 1, 1]]
    out.sum().backward()
    expected = (y.detach().abs() <= 1) * 3.0 * (1 - torch.tanh(3.0 * y.detach().clamp(-1, 1)) ** 2)
    assert torch.allclose(y.grad, expected)


def test_export_form_matches_eval_and_score_scale_is_scalar() -> None:
    torch.manual_seed(1)
    estimator = get_estimator("irnet")
    model = build_model(default_arch("cnv", [1, 28, 28], 10, channels=[8, 8, 16, 16, 16, 16], fc=[32, 32]), estimator)
    for name, module in model.named_modules():
        if isinstance(module, IRLayer):
            sign, scale = module.binary_weight_and_scale()
            w = module.weight.detach()
            centred = w - w.reshape(w.shape[0], -1).mean(1).reshape([-1] + [1] * (w.dim() - 1))
            assert torch.equal(sign, torch.where(centred >= 0, 1.0, -1.0))
            assert bool((scale > 0).all()) and torch.equal(torch.log2(scale), torch.round(torch.log2(scale)))
            if name == "score":
                assert len(scale.unique()) == 1
    x = torch.randint(0, 256, (4, 1, 28, 28)).float()
    model.train()
    train_out = model(x)  # batch statistics; just check it runs and is finite
    assert torch.isfinite(train_out).all()


def test_irnet_quantizers_are_brevitas_quantizers_usable_in_any_brevitas_layer() -> None:
    """IRNetWeightQuant / IRNetActQuant plug into Brevitas' own layers, with IR-Net's forward and backward."""
    from brevitas.nn import QuantConv2d, QuantIdentity
    from brevitas.proxy import ActQuantProxyFromInjector, WeightQuantProxyFromInjector

    from quant_models.estimators.base import bipolar_sign
    from quant_models.estimators.functional import libra_pb
    from quant_models.estimators.irnet import IRNetActQuant, IRNetWeightQuant

    torch.manual_seed(0)
    conv = QuantConv2d(3, 4, 3, bias=False, weight_quant=IRNetWeightQuant)
    w_std, scale = libra_pb(conv.weight.detach())
    assert torch.equal(conv.quant_weight().value.detach(), bipolar_sign(w_std) * scale.reshape(-1, 1, 1, 1))
    assert torch.equal(torch.log2(scale), torch.round(torch.log2(scale)))  # power-of-two per filter
    act = QuantIdentity(act_quant=IRNetActQuant).train()
    act.act_quant.fused_activation_quant_proxy.tensor_quant.ede.set(2.0, 0.5)
    y = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5], requires_grad=True)
    act(y).sum().backward()
    expected = 2.0 * 0.5 * (1 - torch.tanh(0.5 * y.detach()) ** 2) * (y.detach().abs() <= 1)
    assert torch.allclose(y.grad, expected)
    # onebit's own IR-Net layers go through those same Brevitas proxies
    layer, activation = IRLayer(12, 5), IRActivation(5)
    assert isinstance(layer.weight_quant, WeightQuantProxyFromInjector)
    assert isinstance(activation.act_quant, ActQuantProxyFromInjector)
    assert layer.ede is layer.weight_quant.tensor_quant.ede
