"""Hyper-BinaryNet layers: hyper accumulation, STE-Warmup schedule, export equivalence at T = 0."""
from __future__ import annotations

import pytest
import torch

from quant_models.estimators import get_estimator
from quant_models.estimators.hyper import HyperActivation, HyperLayer, WarmupLinear
from quant_models.estimators.ste import STEConv2d, STELinear
from quant_models.topologies import build_model, default_arch


def test_conv_effective_weight_is_sum_of_latent_contributions_and_all_paths_get_gradient() -> None:
    torch.manual_seed(0)
    layer = HyperLayer(3, 4, 3, 0).double()
    w = layer.latent_weight()
    z, m, s = layer.z.detach(), layer.generator.detach(), layer.gain.detach()
    manual = torch.zeros(4, 3, 9, dtype=torch.float64)
    for j in range(9):  # the d latent contributions of every weight
        manual += s * z[:, :, j : j + 1] * m[:, j].reshape(1, 1, 9)
    assert torch.allclose(w, manual.reshape(4, 3, 3, 3))
    layer.train()
    layer.temperature.fill_(0.0)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64).sign()
    layer(x).pow(2).sum().backward()
    assert bool((layer.z.grad != 0).all())            # every embedding entry
    assert bool((layer.generator.grad != 0).all())    # every generator entry (shared by all kernels)
    assert layer.gain.grad is not None and float(layer.gain.grad) != 0.0
    # parameter count: C_out*C_in*d + k^2*d + 1
    assert sum(p.numel() for p in layer.parameters()) == 4 * 3 * 9 + 81 + 1


def test_linear_grouping_cuts_to_fan_in() -> None:
    layer = HyperLayer(20, 3, group=9, z_dim=4)
    assert layer.z.shape == (3, 3, 4) and layer.generator.shape == (9, 4)
    assert layer.latent_weight().shape == (3, 20)


@pytest.mark.parametrize("linear", ["authors", "hyper"])
def test_warmup_schedule_is_exactly_binary_after_70_percent(linear: str) -> None:
    estimator = get_estimator("hyper", linear=linear)
    model = build_model(default_arch("tfc", [1, 28, 28], 10, hidden=[16, 16]), estimator).train()
    x = torch.randint(0, 256, (8, 1, 28, 28)).float()
    estimator.on_epoch_start(model, 0, 10)
    assert estimator.current_temperature == 1.0
    weights = model.blocks[1].weight_layer.train_weight()
    assert not set(weights.detach().unique().tolist()) <= {-1.0, 1.0}  # real-valued during warm-up
    estimator.on_epoch_start(model, 7, 10)
    assert estimator.current_temperature == 0.0
    for layer in [b.weight_layer for b in model.blocks] + [model.score]:
        assert set(layer.train_weight().detach().unique().tolist()) <= {-1.0, 1.0}
    acts = []
    hooks = [b.act.register_forward_hook(lambda mod, i, o: acts.append(o)) for b in model.blocks]
    model(x)
    for h in hooks:
        h.remove()
    assert all(set(a.detach().unique().tolist()) <= {-1.0, 1.0} for a in acts)
    step = get_estimator("hyper", schedule="step")
    step.on_step_start(model, 69, 100)
    assert 0 < step.current_temperature < 1.1e-3 * 1.2
    step.on_step_start(model, 70, 100)
    assert step.current_temperature == 0.0


@pytest.mark.parametrize("schedule,epochs,warns", [("epoch", 1, True), ("epoch", 2, True), ("epoch", 4, False),
                                                    ("step", 1, False)])
def test_too_short_per_epoch_warmup_is_warned(schedule: str, epochs: int, warns: bool, capsys) -> None:
    estimator = get_estimator("hyper", schedule=schedule)
    model = build_model(default_arch("tfc", [1, 28, 28], 10, hidden=[16, 16]), estimator).train()
    estimator.on_epoch_start(model, 0, epochs)
    assert ("stays soft for all" in capsys.readouterr().err) == warns


def test_weights_only_flag_keeps_hard_sign_activations() -> None:
    act = HyperActivation(4, warmup=False).train()
    act.temperature.fill_(1.0)
    y = torch.tensor([[-0.3, 0.2, 0.0, 2.0]], requires_grad=True)
    out = act(y)
    assert out.tolist() == [[-1.0, 1.0, 1.0, 1.0]]
    out.sum().backward()
    assert y.grad.tolist() == [[1.0, 1.0, 1.0, 0.0]]


@pytest.mark.parametrize("kind", ["linear", "authors_linear", "conv"])
def test_export_equivalence_at_t0(kind: str) -> None:
    torch.manual_seed(3)
    if kind == "linear":
        hyper, plain = HyperLayer(40, 6), STELinear(40, 6)
        x = torch.randn(32, 40).sign()
    elif kind == "authors_linear":
        hyper, plain = WarmupLinear(40, 6), STELinear(40, 6)
        x = torch.randn(32, 40).sign()
    else:
        hyper, plain = HyperLayer(5, 6, 3, 0), STEConv2d(5, 6, 3, 0)
        x = torch.randn(8, 5, 7, 7).sign()
    sign, scale = hyper.binary_weight_and_scale()
    assert torch.equal(scale, torch.ones(6))
    with torch.no_grad():
        plain.weight.copy_(sign)
    hyper.train()
    hyper.temperature.fill_(0.0)
    plain.eval(), 
    z_train = hyper(x)
    hyper.eval()
    z_eval = hyper(x)
    z_plain = plain(x)
    z_plain = getattr(z_plain, "value", z_plain)
    assert torch.equal(z_train.round(), z_plain.round()) and torch.equal(z_eval, z_train)
    assert torch.equal(z_plain, z_plain.round())  # integer scores


def test_linear_form_authors_is_the_default_and_hyperlinear_the_option() -> None:
    """The authors' linear layers have no hypernetwork: plain latent weights with STE-Warmup."""
    cnv = default_arch("cnv", [1, 28, 28], 10, channels=[8, 8, 8, 8, 8, 8], fc=[16, 16])
    model = build_model(cnv, get_estimator("hyper"))
    convs = [b.weight_layer for b in model.blocks[:6]]
    linears = [b.weight_layer for b in model.blocks[6:]] + [model.score]
    assert all(isinstance(layer, HyperLayer) for layer in convs)
    assert all(isinstance(layer, WarmupLinear) for layer in linears)
    assert sum(p.numel() for p in linears[0].parameters()) == 16 * linears[0].in_features  # no generator
    extension = build_model(cnv, get_estimator("hyper", linear="hyper"))
    assert all(isinstance(b.weight_layer, HyperLayer) for b in extension.blocks) and isinstance(extension.score, HyperLayer)


def test_authors_linear_is_ste_warmup_on_the_latent_weight() -> None:
    torch.manual_seed(5)
    layer = WarmupLinear(300, 64).train()
    # kaiming_normal, fan_out, linear gain: std 1/sqrt(64)
    assert abs(layer.weight.detach().std().item() - 64 ** -0.5) < 0.01
    with torch.no_grad():
        layer.weight.mul_(40.0)  # spread the latents over both sides of the [-1, 1] window
    layer.temperature.fill_(0.5)
    w = layer.train_weight()
    assert torch.allclose(w, torch.clamp(layer.weight / 0.5, -1, 1))
    w.backward(torch.ones_like(w))
    assert torch.equal(layer.weight.grad, (layer.weight.detach().abs() <= 1).float())  # hardtanh at T = 1
    layer.temperature.fill_(0.0)
    assert set(layer.train_weight().detach().unique().tolist()) == {-1.0, 1.0}
    # the estimator's schedule reaches the weight quantizer
    estimator = get_estimator("hyper")
    model = build_model(default_arch("tfc", [1, 28, 28], 10, hidden=[16, 16]), estimator)
    estimator.set_temperature(model, 0.25)
    assert all(float(b.weight_layer.temperature) == 0.25 for b in model.blocks)


def test_checkpoint_without_the_linear_hparam_loads_hyperlinear(tmp_path) -> None:
    """Checkpoints written before `linear` existed hold HyperLinear layers and must still load."""
    from quant_models.checkpoint import load_checkpoint, save_checkpoint

    model = build_model(default_arch("tfc", [1, 28, 28], 10, hidden=[16, 16]), get_estimator("hyper", linear="hyper"))
    path = save_checkpoint(tmp_path / "model.pt", model, {})
    data = torch.load(path, weights_only=True)
    del data["estimator"]["hparams"]["linear"]
    torch.save(data, path)
    loaded, _ = load_checkpoint(path)
    assert loaded.estimator.hparams["linear"] == "hyper"
    assert all(isinstance(b.weight_layer, HyperLayer) for b in loaded.blocks)
