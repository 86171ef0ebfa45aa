"""RBONN (Xu et al., ECCV 2022): recurrent bilinear optimization with Density-ReLU.

What the authors' code does (read with the search tool in SteveTsui/RBONN, 2_step2_rbonn/rbonn.py
`Bilinear_binarization`, `RBOConv`, `BinaryActivation`, `LearnableBias`):

* Binary weight W_q = 0.02 * alpha_c * sign(w~) with alpha = |scale_factor| per output channel and a
  custom backward that injects the reconstruction term lambda/2 ||w~ - alpha b||^2 (never added to the
  loss): dL/dw~ = alpha G + lambda (w~ - alpha b), dL/dalpha = sum G w~ - lambda sum (w~ - alpha b) b,
  lambda = 1e-4 (functional.BilinearBinarize).
* Recurrent module, training only and from the second step on: w~ = w - u (.) m (.) g_prev, where
  g_prev is the weight gradient of the previous step (their train loop zeroes the gradient after the
  forward, so w.grad still holds it), u (per channel, init 0.2) is learned with 0.1x the learning
  rate, and m is the Density-ReLU channel mask with tau = 0.6. We capture g_prev with a tensor hook
  in backward (our trainer zeroes gradients before the forward), which is the same quantity since
  dw~/dw = I.
* Mask: their expression compares argsort indices with the count (estimators.md §4.2); default here is
  the paper's intent, the int((1 - tau) C) smallest-alpha channels ("rank", ASSUMPTION per the spec);
  `mask=official_code` reproduces their expression. The book's extra not-D(w') condition is not
  implemented in their code and not here.
* u: Eq. 3.135 of the authors' book keeps U positive by an absolute value after each update; their
  code leaves u free. We apply |u| after each optimizer step (spec decision).
* Activations: sign(x + b_c) with a learnable per-channel bias (LearnableBias) and the ApproxSign
  backward (their BinaryActivation); the bias is the activation's `threshold_offset()`.

From-scratch initialisation (ASSUMPTION, spec §4.3): latent w uniform(-1, 1), alpha_c = mean|w_c| / 0.02, so the
reconstruction term starts near its minimum. FINN adaptations: the score layer has one alpha (scalar
scale; a per-class one would change the argmax) and no recurrent module; alpha is guarded away from 0
(clamped at 1e-8) identically in training, eval and export, so the exported scale is always positive.
The ReActNet shell (real residual stream, RPReLU) does not collapse to FINN and is not used: the
optimizer is applied to onebit's plain binary topologies.
"""
from __future__ import annotations

from typing import Any

import torch
from brevitas.nn import QuantIdentity
from torch import nn

from onebit.errors import OnebitError
from quant_models import compat  # noqa: F401  (Tensor.rename shim before any Brevitas layer runs)
from quant_models.quantizers import MethodActQuant, MethodTensorQuant

from . import register_estimator
from .base import Estimator, bipolar_sign, check_role
from .functional import ScaledBinaryLayer, bilinear_binarize, density_mask, sign_approx

BIN = 0.02  # the authors' constant factor in W_q = 0.02 * alpha * sign(w)
ALPHA_FLOOR = 1e-8


class RBOLayer(ScaledBinaryLayer):
    """Binary weight layer with a learned positive scale, bilinear backward and recurrent correction."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int | None = None, padding: int = 0,
                 *, scalar_scale: bool = False, lam: float = 1e-4, tau: float = 0.6, u0: float = 0.2,
                 mask: str = "rank", recurrent: bool = True) -> None:
        super().__init__(in_features, out_features, kernel_size, padding)
        self.weight = nn.Parameter(torch.empty(self.weight_shape))
        # uniform(-1, 1) as bnn_pynq / our STE: Adam's steps are absolute, and with kaiming-scale latents
        # (~0.03) nearly every step flips signs. Measured on TFC, 5,000 images, 4 epochs, seeds 1/2:
        # 68.7/73.1% (kaiming) vs 78.5/79.3% (uniform).
        nn.init.uniform_(self.weight, -1.0, 1.0)
        with torch.no_grad():
            magnitude = self.weight.abs().reshape(out_features, -1).mean(dim=1)
            init = magnitude.mean().reshape(1) if scalar_scale else magnitude
        # alpha = |scale_factor| as in the authors' code
        self.scale_factor = nn.Parameter(init / BIN)
        self.recurrent = recurrent and not scalar_scale
        self.u = nn.Parameter(torch.full((out_features,), float(u0))) if self.recurrent else None
        self.lam, self.tau, self.mask_mode = float(lam), float(tau), mask
        self.register_buffer("g_prev", torch.zeros(self.weight_shape), persistent=False)
        self.has_prev = False

    def alpha(self) -> torch.Tensor:
        return self.scale_factor.abs().clamp_min(ALPHA_FLOOR)

    def _remember_grad(self, grad: torch.Tensor) -> None:
        # rebind, not copy_: the old tensor is saved in this step's graph (for u's gradient)
        self.g_prev = grad.detach().clone()
        self.has_prev = True

    def latent_weight(self) -> torch.Tensor:
        """w~ = w - u (.) m (.) g_prev in training once a gradient exists, else w."""
        # a view, so that the gradient hook below lives on this step's graph, not on the parameter
        w = self.weight.view_as(self.weight)
        if self.training and self.recurrent and self.has_prev:
            mask = density_mask(self.alpha(), self.tau, self.mask_mode)
            shape = [-1] + [1] * (w.dim() - 1)
            w = w - (self.u * mask).reshape(shape) * self.g_prev
        return w

    def train_weight(self) -> torch.Tensor:
        w_tilde = self.latent_weight()
        if self.recurrent and w_tilde.requires_grad and torch.is_grad_enabled():
            w_tilde.register_hook(self._remember_grad)
        return bilinear_binarize(w_tilde, self.alpha(), self.lam, BIN)

    @torch.no_grad()
    def binary_weight_and_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = BIN * self.alpha().detach()
        return bipolar_sign(self.weight.detach()), scale.expand(self.out_features).clone()


class ApproxSignTensorQuant(MethodTensorQuant):
    """Brevitas tensor_quant of RBONN's activations: sign with the ApproxSign backward (2 - 2|x|)."""

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return sign_approx(x)


class RBONNActQuant(MethodActQuant):
    """RBONN's activation quantizer: `QuantIdentity(act_quant=RBONNActQuant)`."""

    tensor_quant = ApproxSignTensorQuant


class RBOActivation(QuantIdentity):
    """sign(x + b_c) with a learnable per-channel bias; the sign is Brevitas' `RBONNActQuant` in training."""

    def __init__(self, channels: int) -> None:
        super().__init__(act_quant=RBONNActQuant)
        self.channels = channels
        self.bias = nn.Parameter(torch.zeros(channels))

    def threshold_offset(self) -> torch.Tensor:
        return self.bias

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        shifted = y + self.bias.reshape([1, -1] + [1] * (y.dim() - 2))
        return super().forward(shifted) if self.training else bipolar_sign(shifted)


@register_estimator
class RBONNEstimator(Estimator):
    """RBONN: learned per-channel scale, bilinear reconstruction backward, recurrent Density-ReLU."""

    name = "rbonn"
    hparam_defaults = {"lam": 1e-4, "tau": 0.6, "u0": 0.2, "u_lr_ratio": 0.1, "mask": "rank", "recurrent": True}
    hparam_help = {
        "lam": "weight of the bilinear reconstruction term in the backward (authors: 1e-4)",
        "tau": "Density-ReLU threshold: the (1 - tau) fraction of channels with smallest alpha is backtracked (0.6)",
        "u0": "initial recurrent step size u (0.2)",
        "u_lr_ratio": "learning rate of u relative to the base learning rate (0.1)",
        "mask": "'rank' (smallest-alpha channels, paper intent) or 'official_code' (authors' expression)",
        "recurrent": "enable the recurrent backtracking module (False = bilinear term only)",
    }
    hparam_choices = {"mask": ("rank", "official_code")}

    def __init__(self, **hparams) -> None:
        super().__init__(**hparams)
        if not 0.0 <= float(self.hparams["tau"]) <= 1.0:
            raise OnebitError(f"rbonn: tau={self.hparams['tau']} must be in [0, 1]; the paper uses 0.6")

    def _layer(self, in_f: int, out_f: int, kernel: int | None, padding: int, role: str) -> RBOLayer:
        check_role(role)
        h = self.hparams
        return RBOLayer(in_f, out_f, kernel, padding, scalar_scale=role == "score", lam=float(h["lam"]),
                        tau=float(h["tau"]), u0=float(h["u0"]), mask=str(h["mask"]), recurrent=bool(h["recurrent"]))

    def linear(self, in_features: int, out_features: int, *, role: str) -> nn.Module:
        return self._layer(in_features, out_features, None, 0, role)

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, padding: int, *, role: str) -> nn.Module:
        return self._layer(in_channels, out_channels, kernel_size, padding, role)

    def activation(self, channels: int, *, role: str) -> nn.Module:
        check_role(role)
        return RBOActivation(channels)

    def optimizer_param_groups(self, model: nn.Module, lr: float) -> list[dict]:
        u_params = [m.u for m in model.modules() if isinstance(m, RBOLayer) and m.u is not None]
        u_ids = {id(p) for p in u_params}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in u_ids]
        groups = [{"params": rest, "lr": lr}]
        if u_params:
            groups.append({"params": u_params, "lr": lr * float(self.hparams["u_lr_ratio"]), "weight_decay": 0.0})
        return groups

    def on_step_end(self, model: nn.Module) -> None:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, RBOLayer) and module.u is not None:
                    module.u.abs_()  # Eq. 3.135: U <- |U - eta dL/dU|

    def training_state(self, model: nn.Module) -> dict[str, Any]:
        """The recurrent module's previous gradient of every layer (non-persistent: not in the checkpoint)."""
        state: dict[str, Any] = {}
        for name, module in model.named_modules():
            if isinstance(module, RBOLayer):
                state[f"{name}.has_prev"] = bool(module.has_prev)
                state[f"{name}.g_prev"] = module.g_prev.detach().cpu().clone()
        return state

    def load_training_state(self, model: nn.Module, state: dict[str, Any]) -> None:
        for name, module in model.named_modules():
            if isinstance(module, RBOLayer) and f"{name}.has_prev" in state:
                module.has_prev = bool(state[f"{name}.has_prev"])
                module.g_prev = state[f"{name}.g_prev"].to(module.weight.device)

    def on_epoch_start(self, model: nn.Module, epoch: int, total_epochs: int) -> nn.Module:
        if epoch == 0:
            # A fresh run starts without a previous gradient (the authors' `w.grad is None` branch).
            for module in model.modules():
                if isinstance(module, RBOLayer):
                    module.has_prev = False
        return model
