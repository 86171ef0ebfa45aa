"""IR-Net (Qin et al., CVPR 2020): Libra Parameter Binarization + Error Decay Estimator.

What the authors' code does (read with the search tool in htqin/IR-Net, CIFAR-10/ResNet20/1w1a/modules/
ir_1w1a.py `IRConv2d`, modules/binaryfunction.py, CIFAR-10/VGG-Small/main.py `Log_UP`):

* Weights, every forward pass and per output filter: subtract the filter mean, divide by the filter's
  unbiased std (autograd flows through both), binarize, multiply by the detached power-of-two scale
  2^round(log2 mean|w_std|). We add eps = 1e-8 to the std (a constant filter would divide by zero).
* Activations: the binary conv binarizes its input (a hardtanh output in their networks) with the same
  estimator, so the activation gradient is 1[|y| <= 1] * EDE'(y). Here the block is BN -> activation,
  and the activation applies hardtanh then EDE-sign, which is that same chain.
* EDE: sign forward, backward k*t*(1 - tanh^2(t*x)), one (t, k) for every layer, set per epoch:
  t = T_min * (T_max/T_min)^(e/E), k = max(1/t, 1). [MEM] item confirmed: VGG-Small/main.py uses
  T_min = 0.1, T_max = 10 (the ResNet-20 1w1a trainer's T_min = 1e-3 is a deviation we do not follow).
* `schedule=step` (ASSUMPTION, estimators.md §2.7): t from the step fraction instead of the epoch,
  a finer schedule for short runs; the default is the paper's per-epoch schedule.

FINN adaptations: the score layer uses one power-of-two scale for the whole tensor (a per-class scale
would change the argmax); every other layer keeps the per-filter scale, which folds into the
thresholds. Export form: sign(w_c - mean(w_c)) (standardisation does not change a sign) and s_c.

Brevitas form: `IRNetWeightQuant` and `IRNetActQuant` are declarative Brevitas quantizers whose
tensor_quant is Libra-PB + EDE; onebit's layers run their latent weights and activations through those
Brevitas proxies in training, and a user can put them into any Brevitas layer.
"""
from __future__ import annotations

import torch
from brevitas.nn import QuantIdentity
from brevitas.nn.mixin.parameter import QuantWeightMixin
from torch import nn

from onebit.errors import OnebitError
from quant_models import compat  # noqa: F401  (Tensor.rename shim before any Brevitas layer runs)
from quant_models.quantizers import MethodActQuant, MethodTensorQuant, MethodWeightQuant

from . import register_estimator
from .base import Estimator, bipolar_sign, check_role
from .functional import ScaledBinaryLayer, ede_schedule, libra_pb, sign_ede


class _EDEState(nn.Module):
    """The (k, t) pair of the Error Decay Estimator, as non-persistent buffers set by the schedule."""

    def __init__(self) -> None:
        super().__init__()
        # Module defaults of the authors' code; the schedule overwrites them before the first step.
        self.register_buffer("k", torch.tensor(10.0), persistent=False)
        self.register_buffer("t", torch.tensor(0.1), persistent=False)

    def set(self, k: float, t: float) -> None:
        self.k.fill_(k)
        self.t.fill_(t)


class LibraPBTensorQuant(MethodTensorQuant):
    """Brevitas tensor_quant of IR-Net's weights: Libra-PB (balance, standardise, power-of-two scale)
    then sign with the EDE backward; returns the scaled binary weight and its per-filter scale."""

    def __init__(self, per_channel_scale: bool) -> None:
        super().__init__()
        self.per_channel_scale = per_channel_scale
        self.ede = _EDEState()

    def quantize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w_std, scale = libra_pb(w, per_channel=self.per_channel_scale)
        scale = scale.reshape([-1] + [1] * (w.dim() - 1))
        return sign_ede(w_std, self.ede.k, self.ede.t) * scale, scale


class EDESignTensorQuant(MethodTensorQuant):
    """Brevitas tensor_quant of IR-Net's activations: hardtanh, then sign with the EDE backward."""

    def __init__(self) -> None:
        super().__init__()
        self.ede = _EDEState()

    def quantize(self, y: torch.Tensor) -> torch.Tensor:
        return sign_ede(torch.clamp(y, -1.0, 1.0), self.ede.k, self.ede.t)


class IRNetWeightQuant(MethodWeightQuant):
    """IR-Net's weight quantizer, usable in any Brevitas layer: `QuantConv2d(..., weight_quant=IRNetWeightQuant)`
    (`weight_per_channel_scale=False` for one scale per tensor)."""

    tensor_quant = LibraPBTensorQuant
    per_channel_scale = True


class IRNetActQuant(MethodActQuant):
    """IR-Net's activation quantizer: `QuantIdentity(act_quant=IRNetActQuant)`."""

    tensor_quant = EDESignTensorQuant


class IRLayer(ScaledBinaryLayer, QuantWeightMixin):
    """Libra-PB binary weight layer (linear or conv): its latent weight goes through Brevitas' weight
    proxy with `IRNetWeightQuant` in training; eval and export use the sign-first form."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int | None = None,
                 padding: int = 0, *, per_channel_scale: bool = True) -> None:
        ScaledBinaryLayer.__init__(self, in_features, out_features, kernel_size, padding)
        self.per_channel_scale = per_channel_scale
        self.weight = nn.Parameter(torch.empty(self.weight_shape))
        # bnn_pynq's (and our STE's) uniform(-1, 1). The scale matters although Libra-PB standardises
        # each filter: Adam's steps are absolute, so the effective step on w_std is lr / std(w_c). With
        # kaiming-scale latents (std ~ 0.03) that is ~30x STE's and the signs churn; measured on TFC,
        # 5,000 images, 4 epochs: 76.9% (kaiming) vs 77.3% (uniform) test accuracy, seed 0.
        nn.init.uniform_(self.weight, -1.0, 1.0)
        QuantWeightMixin.__init__(self, weight_quant=IRNetWeightQuant, weight_per_channel_scale=per_channel_scale)
        self.ede = self.weight_quant.tensor_quant.ede  # the schedule's handle (same module, not a copy)

    @property
    def output_channel_dim(self) -> int:
        return 0

    def train_weight(self) -> torch.Tensor:
        return self.weight_quant(self.weight).value

    @torch.no_grad()
    def binary_weight_and_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        w_std, scale = libra_pb(self.weight.detach(), per_channel=self.per_channel_scale)
        return bipolar_sign(w_std), scale


class IRActivation(QuantIdentity):
    """Brevitas QuantIdentity with `IRNetActQuant`: gradient 1[|y| <= 1] * k t (1 - tanh^2(t y));
    exact sign in eval."""

    def __init__(self, channels: int) -> None:
        super().__init__(act_quant=IRNetActQuant)
        self.channels = channels
        self.ede = self.act_quant.fused_activation_quant_proxy.tensor_quant.ede

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return bipolar_sign(y)
        return super().forward(y)


@register_estimator
class IRNetEstimator(Estimator):
    """IR-Net: Libra-PB weights (power-of-two per-filter scale) and the Error Decay Estimator."""

    name = "irnet"
    hparam_defaults = {"t_min": 0.1, "t_max": 10.0, "schedule": "epoch"}
    hparam_help = {
        "t_min": "EDE t at the start of training (paper/VGG-Small code: 0.1)",
        "t_max": "EDE t reached at the end of training (paper: 10)",
        "schedule": "'epoch' (paper: t set once per epoch) or 'step' (t from the step fraction)",
    }
    hparam_choices = {"schedule": ("epoch", "step")}

    def __init__(self, **hparams) -> None:
        super().__init__(**hparams)
        if not 0 < float(self.hparams["t_min"]) <= float(self.hparams["t_max"]):
            raise OnebitError("irnet: need 0 < t_min <= t_max; e.g. --hparam t_min=0.1 --hparam t_max=10")
        self.current_t, self.current_k = ede_schedule(0.0, float(self.hparams["t_min"]), float(self.hparams["t_max"]))

    def linear(self, in_features: int, out_features: int, *, role: str) -> nn.Module:
        check_role(role)
        return IRLayer(in_features, out_features, per_channel_scale=role != "score")

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, padding: int, *, role: str) -> nn.Module:
        check_role(role)
        return IRLayer(in_channels, out_channels, kernel_size, padding, per_channel_scale=role != "score")

    def activation(self, channels: int, *, role: str) -> nn.Module:
        check_role(role)
        return IRActivation(channels)

    def set_progress(self, model: nn.Module, progress: float) -> None:
        """Set (t, k) for training progress in [0, 1] on every EDE in `model`."""
        t, k = ede_schedule(min(max(progress, 0.0), 1.0), float(self.hparams["t_min"]), float(self.hparams["t_max"]))
        self.current_t, self.current_k = t, k
        for module in model.modules():
            if isinstance(module, _EDEState):
                module.set(k, t)

    def on_epoch_start(self, model: nn.Module, epoch: int, total_epochs: int) -> nn.Module:
        if self.hparams["schedule"] == "epoch":
            self.set_progress(model, epoch / max(total_epochs, 1))
        return model

    def on_step_start(self, model: nn.Module, step: int, total_steps: int) -> None:
        if self.hparams["schedule"] == "step":
            self.set_progress(model, step / max(total_steps, 1))
