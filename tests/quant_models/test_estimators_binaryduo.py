"""BinaryDuo: width reduction, exact decoupling of the coupled ternary network, export form."""
from __future__ import annotations

import pytest
import torch

from onebit.errors import OnebitError
from quant_models.estimators import get_estimator
from quant_models.estimators.binaryduo import (
    PHASE_KEY,
    DecoupledActivation,
    TernaryActivation,
    coupled_widths,
    weight_parameter_counts,
)
from quant_models.topologies import build_model, default_arch


def _randomise_bn(model: torch.nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                n = module.num_features
                module.weight.copy_(torch.randn(n, generator=gen))  # includes gamma < 0
                module.bias.copy_(torch.randn(n, generator=gen))
                module.running_mean.copy_(torch.randn(n, generator=gen) * 5)
                module.running_var.copy_(torch.rand(n, generator=gen) * 20 + 0.5)


def _coupled(name: str, in_shape: list[int], seed: int = 0, **hparams):
    torch.manual_seed(seed)
    estimator = get_estimator("binaryduo", **hparams)
    # CNV at a quarter of its widths keeps the test fast; the structure (convs, pools, flatten, fcs) is CNV's
    small = {"channels": [16, 16, 32, 32, 64, 64], "fc": [128, 128]} if name == "cnv" else {}
    baseline = build_model(default_arch(name, in_shape, 10, **small), estimator)
    coupled = estimator.on_epoch_start(baseline, 0, 8)
    assert coupled.arch[PHASE_KEY] == "coupled"
    return estimator, coupled


@pytest.mark.parametrize("window", ["authors", "unshifted"])
@pytest.mark.parametrize("name,in_shape", [("tfc", [1, 28, 28]), ("cnv", [1, 28, 28])])
def test_decoupled_equals_coupled_exactly(name: str, in_shape: list[int], window: str) -> None:
    gen = torch.Generator().manual_seed(1)
    estimator, coupled = _coupled(name, in_shape, decoupled_window=window)
    _randomise_bn(coupled, gen)
    x = torch.randint(0, 256, (16 if name == "cnv" else 64, *in_shape), generator=gen).float()
    # BN statistics chosen so the ternary maps really use all three values
    coupled.eval()
    feats = coupled.features(x)
    assert set(feats.unique().tolist()) == {-1.0, 0.0, 1.0}
    decoupled = estimator.decouple(coupled)
    assert decoupled.arch[PHASE_KEY] == "decoupled"
    assert all(isinstance(b.act, DecoupledActivation) and b.act.window == window for b in decoupled.blocks)
    assert all(isinstance(b.act, TernaryActivation) for b in coupled.blocks)
    for mode in ("eval", "train"):
        getattr(coupled, mode)()
        getattr(decoupled, mode)()
        with torch.no_grad():
            a, b = coupled(x), decoupled(x)
        assert torch.max(torch.abs(a - b)).item() < 1e-4, mode
    coupled.eval(), decoupled.eval()
    assert torch.equal(coupled.integer_scores(x) * 2, decoupled.integer_scores(x))
    assert torch.equal(coupled(x).argmax(1), decoupled(x).argmax(1))


def test_decoupled_export_form_is_plain_binary_with_two_thresholds_per_accumulator() -> None:
    gen = torch.Generator().manual_seed(2)
    estimator, coupled = _coupled("tfc", [1, 28, 28])
    _randomise_bn(coupled, gen)
    decoupled = estimator.decouple(coupled).eval()
    x = torch.randint(0, 256, (32, 1, 28, 28), generator=gen).float()
    # rebuild every block from binary_weight_and_scale + BN + threshold offset: the collapse's inputs
    h = decoupled.input_quant(x).flatten(1)
    for block in decoupled.blocks:
        sign, scale = block.weight_layer.binary_weight_and_scale()
        assert set(sign.unique().tolist()) <= {-1.0, 1.0} and bool((scale > 0).all())
        half = sign.shape[0] // 2
        assert torch.equal(sign[:half], sign[half:])  # duplicated rows: one accumulator, two thresholds
        z = torch.nn.functional.linear(h, sign) * scale
        y = block.bn(z) + block.act.threshold_offset()
        h = torch.where(y >= 0, 1.0, -1.0)
    assert torch.equal(h, decoupled.features(x))
    sign, scale = decoupled.score.binary_weight_and_scale()
    assert len(scale.unique()) == 1  # per-layer scalar: legal for the score layer


def test_state_dict_roundtrip_through_recorded_arch() -> None:
    estimator, coupled = _coupled("tfc", [1, 28, 28])
    decoupled = estimator.decouple(coupled)
    arch = estimator.finalize_arch(decoupled.arch)
    rebuilt = build_model(arch, get_estimator("binaryduo", **estimator.hparams))
    rebuilt.load_state_dict(decoupled.state_dict())
    x = torch.randint(0, 256, (16, 1, 28, 28)).float()
    rebuilt.eval(), decoupled.eval()
    assert torch.equal(rebuilt.integer_scores(x), decoupled.integer_scores(x))
    # the plain (STE) model of that arch has the decoupled widths 2C'
    plain = build_model(arch, get_estimator("ste"))
    assert [b.bn.num_features for b in plain.blocks] == [2 * w for w in coupled.arch["hidden"]]


def test_width_reduction_matches_baseline_parameters() -> None:
    for name in ("tfc", "cnv"):
        arch = default_arch(name, [1, 28, 28], 10)
        baseline = sum(weight_parameter_counts(arch))
        widths = coupled_widths(arch)
        decoupled = sum(weight_parameter_counts(arch, widths))
        assert abs(decoupled - baseline) / baseline < 0.01, (name, baseline, decoupled)
        sqrt2 = coupled_widths(arch, "sqrt2")
        assert sqrt2 == [round(c / 2**0.5) for c in (arch["hidden"] if name == "tfc" else arch["channels"] + arch["fc"])]
    # the hand count for TFC: 784*64 + 64*64*2 + 64*10
    assert sum(weight_parameter_counts(default_arch("tfc", [1, 28, 28], 10))) == 59008


def test_schedule_decouples_at_the_phase_boundary() -> None:
    estimator, coupled = _coupled("tfc", [1, 28, 28])
    assert estimator.decouple_epoch(8) == 6 and estimator.decouple_epoch(1) == 0
    assert estimator.on_epoch_start(coupled, 5, 8) is coupled
    decoupled = estimator.on_epoch_start(coupled, 6, 8)
    assert decoupled.arch[PHASE_KEY] == "decoupled"
    assert estimator.on_epoch_start(decoupled, 7, 8) is decoupled
    with pytest.raises(OnebitError):
        estimator.decouple(decoupled)
    with pytest.raises(OnebitError):
        get_estimator("binaryduo", width_rule="bogus")


# ------------------------------------------------------------------------------------------------
# The decoupled stage's backward against an independent re-implementation of the authors' form
# ------------------------------------------------------------------------------------------------
def _authors_decoupled(y: torch.Tensor) -> torch.Tensor:
    """The authors' decoupled activation, written from their Lua (models/init.lua `duplicateBN`,
    tinyVGG7_decoupled.lua), expressed in bipolar units.

    Their BatchNorm output u (unipolar units, u = (y + 1) / 2 for onebit's bipolar y) has its bias
    shifted by -0.25 on the first copy and +0.25 on the second, then HardTanh(0, 1) and
    QuantizedNeurons(1, 0): round (floor(x + 0.5) in Lua), identity backward. The unipolar bit q maps
    to the bipolar 2q - 1.
    """
    half = y.shape[1] // 2
    shift = torch.cat([torch.full((half,), -0.25), torch.full((half,), 0.25)]).reshape([1, -1] + [1] * (y.dim() - 2))
    u = (y + 1.0) / 2.0 + shift
    clamped = torch.nn.functional.hardtanh(u, 0.0, 1.0)
    q = clamped + (torch.floor(clamped + 0.5) - clamped).detach()
    return 2.0 * q - 1.0


def _forward_and_grad(fn, y: torch.Tensor, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    y = y.clone().requires_grad_(True)
    out = fn(y)
    (out * upstream).sum().backward()
    return out.detach(), y.grad


@pytest.mark.parametrize("shape", [(512, 16), (8, 12, 5, 5)])
def test_decoupled_backward_is_the_authors(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(7)
    y = torch.randn(shape, generator=gen) * 1.2
    upstream = torch.randn(shape, generator=gen)
    act = DecoupledActivation(shape[1]).train()
    assert act.window == "authors"
    out, grad = _forward_and_grad(act, y, upstream)
    ref_out, ref_grad = _forward_and_grad(_authors_decoupled, y, upstream)
    assert set(out.unique().tolist()) == {-1.0, 1.0}  # exactly +-1 in training too
    assert torch.allclose(out, ref_out, atol=1e-6)
    assert torch.equal(grad, ref_grad)
    # in words: the window is centred on each copy's own threshold
    half = shape[1] // 2
    window = torch.cat([((y[:, :half] >= -0.5) & (y[:, :half] <= 1.5)), ((y[:, half:] >= -1.5) & (y[:, half:] <= 0.5))], 1)
    assert torch.equal(grad, upstream * window)
    # eval forward is the same function
    assert torch.equal(act.eval()(y), ref_out)


def test_unshifted_window_option_differs_from_the_authors_only_in_the_backward() -> None:
    gen = torch.Generator().manual_seed(8)
    y = torch.randn(4096, 8, generator=gen)
    upstream = torch.ones_like(y)
    authors = _forward_and_grad(DecoupledActivation(8).train(), y, upstream)
    unshifted = _forward_and_grad(DecoupledActivation(8, window="unshifted").train(), y, upstream)
    assert torch.equal(authors[0], unshifted[0])
    assert torch.equal(unshifted[1], (y.abs() <= 1).float())
    differs = (authors[1] != unshifted[1]).float().mean().item()
    assert 0.15 < differs < 0.4, differs  # a quarter to a third of standard-normal pre-activations
    with pytest.raises(OnebitError):
        get_estimator("binaryduo", decoupled_window="bogus")


def test_fine_tuning_gradients_follow_the_window_hparam() -> None:
    """Whole decoupled nets, same weights: the two windows give different parameter gradients."""
    gen = torch.Generator().manual_seed(9)
    grads = {}
    for window in ("authors", "unshifted"):
        estimator, coupled = _coupled("tfc", [1, 28, 28], decoupled_window=window)
        _randomise_bn(coupled, torch.Generator().manual_seed(3))
        decoupled = estimator.decouple(coupled).train()
        x = torch.randint(0, 256, (64, 1, 28, 28), generator=torch.Generator().manual_seed(4)).float()
        loss = torch.nn.functional.cross_entropy(decoupled(x), torch.arange(64) % 10)
        loss.backward()
        grads[window] = decoupled.blocks[0].weight_layer.weight.grad.clone()
    assert not torch.allclose(grads["authors"], grads["unshifted"])


def test_checkpoint_without_the_window_hparam_loads_as_trained(tmp_path) -> None:
    """Checkpoints written before `decoupled_window` existed were trained with the unshifted window."""
    from quant_models.checkpoint import load_checkpoint, save_checkpoint

    estimator, coupled = _coupled("tfc", [1, 28, 28])
    decoupled = estimator.decouple(coupled)
    path = save_checkpoint(tmp_path / "model.pt", decoupled, {})
    data = torch.load(path, weights_only=True)
    assert data["estimator"]["hparams"]["decoupled_window"] == "authors"
    del data["estimator"]["hparams"]["decoupled_window"]
    torch.save(data, path)
    loaded, _ = load_checkpoint(path)
    assert loaded.estimator.hparams["decoupled_window"] == "unshifted"
    assert all(b.act.window == "unshifted" for b in loaded.blocks)
