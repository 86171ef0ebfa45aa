"""Estimator registry and the STE baseline's hooks."""
from __future__ import annotations

import pytest
import torch

from onebit.errors import OnebitError
from quant_models.estimators import ESTIMATORS, Estimator, get_estimator, parse_hparams
from quant_models.estimators.ste import STELinear
from quant_models.topologies import build_model


def test_registry_lookup_and_errors() -> None:
    assert "ste" in ESTIMATORS
    est = get_estimator("ste")
    assert isinstance(est, Estimator) and est.describe() == {"name": "ste", "hparams": {"clip_weights": True}}
    with pytest.raises(OnebitError, match="unknown estimator 'nope'.*ste"):
        get_estimator("nope")
    with pytest.raises(OnebitError, match="no hyperparameter lr_scale"):
        get_estimator("ste", lr_scale=2)
    with pytest.raises(OnebitError, match="not a valid bool"):
        get_estimator("ste", clip_weights="maybe")


def test_hparams_from_command_line_are_typed() -> None:
    hp = parse_hparams(["clip_weights=false"])
    assert get_estimator("ste", **hp).hparams["clip_weights"] is False
    with pytest.raises(OnebitError, match="key=value"):
        parse_hparams(["clip_weights"])


def test_ste_clips_latent_weights_after_step() -> None:
    model = build_model({"name": "tfc", "in_shape": [1, 8, 8], "num_classes": 3}, get_estimator("ste"))
    layer = model.score
    assert isinstance(layer, STELinear)
    with torch.no_grad():
        layer.weight.mul_(5.0)
    model.estimator.on_step_end(model)
    assert layer.weight.abs().max() <= 1.0
    unclipped = build_model({"name": "tfc", "in_shape": [1, 8, 8], "num_classes": 3}, get_estimator("ste", clip_weights=False))
    with torch.no_grad():
        unclipped.score.weight.mul_(5.0)
    unclipped.estimator.on_step_end(unclipped)
    assert unclipped.score.weight.abs().max() > 1.0


def test_bad_role_rejected() -> None:
    with pytest.raises(OnebitError, match="role"):
        get_estimator("ste").linear(4, 4, role="middle")


@pytest.mark.parametrize("name,key,allowed", [("irnet", "schedule", "'epoch', 'step'"),
                                              ("hyper", "gen_act", "'none', 'elu', 'hardtanh'"),
                                              ("rbonn", "mask", "'rank', 'official_code'"),
                                              ("binaryduo", "width_rule", "'match_params', 'sqrt2'")])
def test_a_value_outside_a_hyperparameters_choices_names_the_choices(name: str, key: str, allowed: str) -> None:
    with pytest.raises(OnebitError, match=f"{name}: {key}='bogus'; use one of {allowed}"):
        get_estimator(name, **{key: "bogus"})
