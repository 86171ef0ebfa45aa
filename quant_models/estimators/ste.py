"""The baseline: clipped straight-through estimator, as Brevitas' bnn_pynq trains its BNNs.

Weights: Brevitas binary weight quantizer with constant scale 1 (forward sign, gradient passed to
the latent weight), latent weights clipped to [-1, 1] after every optimizer step (Courbariaux/Hubara
BinaryNet). Activations: Brevitas signed binary act quantizer, clamp to [-1, 1] then sign, so the
backward surrogate is 1[|x| <= 1]. Every layer has scale 1: the collapse is just BatchNorm -> threshold.

The layer classes here are also the *plain* layers that export/collapse.py builds the collapsed model
from, whatever method trained it.
"""
from __future__ import annotations

import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from torch import nn

from quant_models import compat  # noqa: F401  (Tensor.rename shim before any Brevitas layer runs)
from quant_models.quantizers import BipolarActQuant, BipolarWeightQuant

from . import register_estimator
from .base import Estimator, bipolar_sign, check_role


class STELinear(QuantLinear):
    """Binary fully connected layer, +-1 weights at scale 1, no bias."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False, weight_quant=BipolarWeightQuant)
        # bnn_pynq initialises the latent weights uniformly inside the clipping range.
        nn.init.uniform_(self.weight, -1.0, 1.0)

    def binary_weight_and_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        return bipolar_sign(self.weight.detach()), torch.ones(self.out_features)

    def clip_latent_(self) -> None:
        with torch.no_grad():
            self.weight.clamp_(-1.0, 1.0)


class STEConv2d(QuantConv2d):
    """Binary 2D convolution, stride 1, +-1 weights at scale 1, no bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            padding=padding,
            bias=False,
            weight_quant=BipolarWeightQuant,
        )
        nn.init.uniform_(self.weight, -1.0, 1.0)

    def binary_weight_and_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        return bipolar_sign(self.weight.detach()), torch.ones(self.out_channels)

    def clip_latent_(self) -> None:
        with torch.no_grad():
            self.weight.clamp_(-1.0, 1.0)


class STEActivation(QuantIdentity):
    """+-1 activation (clamp then sign, clipped STE); no threshold offset."""

    def __init__(self, channels: int) -> None:
        super().__init__(act_quant=BipolarActQuant)
        self.channels = channels


@register_estimator
class STEEstimator(Estimator):
    """Clipped STE for weights and activations (BinaryNet / Brevitas bnn_pynq baseline)."""

    name = "ste"
    hparam_defaults = {"clip_weights": True}
    hparam_help = {"clip_weights": "clip latent weights to [-1, 1] after each optimizer step"}

    def linear(self, in_features: int, out_features: int, *, role: str) -> nn.Module:
        check_role(role)
        return STELinear(in_features, out_features)

    def conv(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: int, *, role: str
    ) -> nn.Module:
        check_role(role)
        return STEConv2d(in_channels, out_channels, kernel_size, padding)

    def activation(self, channels: int, *, role: str) -> nn.Module:
        check_role(role)
        return STEActivation(channels)

    def on_step_end(self, model: nn.Module) -> None:
        if not self.hparams["clip_weights"]:
            return
        for module in model.modules():
            if isinstance(module, (STELinear, STEConv2d)):
                module.clip_latent_()
