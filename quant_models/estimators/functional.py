"""The pure maths shared by the four seed methods (IR-Net, BinaryDuo, RBONN, Hyper-BinaryNet).

Everything here is a function of tensors with no module state, so each formula is unit-tested on its
own (tests/quant_models/test_estimators_*.py). The layers in irnet.py, binaryduo.py, rbonn.py and
hyper.py hold the state (latent weights, schedules, buffers) and call these.

Why custom autograd Functions rather than Brevitas quantizers: Brevitas' binary quantizers fix the
backward pass to the clipped straight-through estimator and offer no place for a per-filter
standardisation (IR-Net), a weight generator (Hyper-BinaryNet), a recurrent correction (RBONN) or a
two-threshold activation (BinaryDuo). The methods' training structure therefore lives in plain torch
modules, and export/collapse.py turns every trained model into the STE estimator's Brevitas layers
(binary weights + integer thresholds), so the QONNX graph only ever sees ordinary binary quant nodes.

Convention: sign(0) = +1 everywhere (FINN's bipolar convention, docs/design.md §1); the authors' codes
use torch.sign (sign(0) = 0), which only differs on a measure-zero set during training.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from quant_models.estimators.base import bipolar_sign

__all__ = [
    "SignEDE",
    "sign_ede",
    "ede_schedule",
    "libra_pb",
    "sign_clipped_ste",
    "sign_approx",
    "ternary_activation",
    "decouple_ternary_bits",
    "BilinearBinarize",
    "bilinear_binarize",
    "density_mask",
    "ste_warmup",
    "warmup_temperature",
    "hyper_generate",
]


def _per_channel_view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (C_out,) or scalar tensor so it broadcasts over a (C_out, ...) weight tensor."""
    if v.numel() == 1:
        return v.reshape([1] * like.dim())
    return v.reshape([-1] + [1] * (like.dim() - 1))


# ------------------------------------------------------------------------------------------------
# IR-Net: Error Decay Estimator and Libra Parameter Binarization
# ------------------------------------------------------------------------------------------------
class SignEDE(torch.autograd.Function):
    """sign(x) forward; backward the derivative of the surrogate k*tanh(t*x): k*t*(1 - tanh^2(t*x))."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, k, t)
        return bipolar_sign(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x, k, t = ctx.saved_tensors
        surrogate = k * t * (1.0 - torch.tanh(t * x) ** 2)
        return grad_out * surrogate, None, None


def sign_ede(x: torch.Tensor, k: torch.Tensor | float, t: torch.Tensor | float) -> torch.Tensor:
    """Binarize with the Error Decay Estimator at the given (k, t)."""
    k = torch.as_tensor(k, dtype=x.dtype, device=x.device)
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return SignEDE.apply(x, k, t)


def ede_schedule(progress: float, t_min: float = 0.1, t_max: float = 10.0) -> tuple[float, float]:
    """IR-Net's (t, k) at training progress e/E in [0, 1]: t log-linear from t_min to t_max,
    k = max(1/t, 1). Confirmed in htqin/IR-Net CIFAR-10/VGG-Small/main.py (`Log_UP`, T_min=0.1,
    T_max=10, evaluated at e/E for e = 0..E-1, so t_max itself is only reached at progress 1)."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    log_t = math.log10(t_min) + (math.log10(t_max) - math.log10(t_min)) * progress
    t = 10.0**log_t
    k = max(1.0 / t, 1.0)
    return t, k


def libra_pb(
    w: torch.Tensor, *, per_channel: bool = True, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Libra-PB: balance and standardise each filter, and its power-of-two scale.

    Returns `(w_std, scale)`: `w_std = (w_c - mean(w_c)) / std(w_c)` with gradients flowing through
    mean and std (as the authors' IRConv2d does, unbiased std), and `scale` of shape (C_out,) =
    2^round(log2(mean|w_std_c|)), detached. `per_channel=False` gives one scale for the whole tensor
    (repeated C_out times), for the score layer whose per-class scale would change the argmax.
    eps is our addition (the authors divide by std without one): it only matters for a constant filter.
    """
    flat = w.reshape(w.shape[0], -1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    standardised = centred / (centred.std(dim=1, keepdim=True) + eps)
    with torch.no_grad():
        magnitude = standardised.abs().mean(dim=1) if per_channel else standardised.abs().mean().expand(w.shape[0])
        scale = torch.pow(2.0, torch.round(torch.log2(magnitude.clamp_min(1e-30))))
    return standardised.reshape(w.shape), scale.detach().clone()


# ------------------------------------------------------------------------------------------------
# Baseline surrogates used by the methods
# ------------------------------------------------------------------------------------------------
class _SignClippedSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return bipolar_sign(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_out * (x.abs() <= 1).to(grad_out.dtype)


def sign_clipped_ste(x: torch.Tensor) -> torch.Tensor:
    """sign forward, clipped STE 1[|x| <= 1] backward (BNN, Hubara et al. 2016)."""
    return _SignClippedSTE.apply(x)


class _SignApprox(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return bipolar_sign(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_out * (2.0 - 2.0 * x.abs()).clamp_min(0.0)


def sign_approx(x: torch.Tensor) -> torch.Tensor:
    """sign forward, ApproxSign backward 2 - 2|x| on |x| < 1 (Bi-Real Net; RBONN's BinaryActivation)."""
    return _SignApprox.apply(x)


# ------------------------------------------------------------------------------------------------
# BinaryDuo: ternary activation and its exact two-bit decomposition
# ------------------------------------------------------------------------------------------------
class _Ternary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(y)
        return 0.5 * (bipolar_sign(y - 0.5) + bipolar_sign(y + 0.5))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return grad_out * (y.abs() <= 1).to(grad_out.dtype)


def ternary_activation(y: torch.Tensor) -> torch.Tensor:
    """BinaryDuo's coupled ternary activation in the bipolar domain: values {-1, 0, +1}.

    The authors' QuantizedNeurons(0.3) in "-1/+1 mode" computes 2*round(2*(clamp(y)+1)/2)/2 - 1, i.e.
    thresholds at y = -0.5 and +0.5 with an identity backward through the rounding and the [-1, 1]
    clamp giving 1[|y| <= 1] (confirmed in Hyungjun-K1m/BinaryDuo newLayers/QuantizedNeurons.lua).
    We write it as (sign(y - 0.5) + sign(y + 0.5)) / 2, which is the same function except that a value
    exactly on a threshold goes up (sign(0) = +1), and which is literally the sum of the two binary
    activations that decoupling produces (`decouple_ternary_bits`).
    """
    return _Ternary.apply(y)


def decouple_ternary_bits(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two binary activations whose mean is `ternary_activation(y)`: (sign(y-0.5), sign(y+0.5))."""
    return bipolar_sign(y - 0.5), bipolar_sign(y + 0.5)


# ------------------------------------------------------------------------------------------------
# RBONN: bilinear binarization with the reconstruction term in its backward, Density-ReLU mask
# ------------------------------------------------------------------------------------------------
class BilinearBinarize(torch.autograd.Function):
    """W_q = bin * alpha_c * sign(w~); the backward injects the bilinear reconstruction term.

    With G = dL/dW_q, b = bin * sign(w~), lambda the reconstruction weight (SteveTsui/RBONN
    2_step2_rbonn/rbonn.py `Bilinear_binarization`, read for this module):
        dL/dw~      = alpha * G + lambda * (w~ - alpha*b)          (identity STE, no bin factor on G)
        dL/dalpha_c = sum G*w~ - lambda * sum (w~ - alpha*b) * b   (task term uses w~, not b)
    i.e. the gradient of the task loss of the bilinear form alpha*w~ plus (lambda/2)*||w~ - alpha*b||^2
    with b held constant. The reconstruction loss is never added to the loss value.
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor, alpha: torch.Tensor, lam: float, bin_: float) -> torch.Tensor:  # type: ignore[override]
        alpha_b = _per_channel_view(alpha, w)
        ctx.save_for_backward(w, alpha)
        ctx.lam, ctx.bin_ = lam, bin_
        return bin_ * bipolar_sign(w) * alpha_b

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        w, alpha = ctx.saved_tensors
        alpha_b = _per_channel_view(alpha, w)
        b = ctx.bin_ * bipolar_sign(w)
        residual = w - alpha_b * b
        grad_w = alpha_b * grad_out + ctx.lam * residual
        per_elem = grad_out * w - ctx.lam * residual * b
        if alpha.numel() == 1:
            grad_alpha = per_elem.sum().reshape(alpha.shape)
        else:
            grad_alpha = per_elem.reshape(w.shape[0], -1).sum(dim=1).reshape(alpha.shape)
        return grad_w, grad_alpha, None, None


def bilinear_binarize(w: torch.Tensor, alpha: torch.Tensor, lam: float = 1e-4, bin_: float = 0.02) -> torch.Tensor:
    """RBONN's binarized weight 0.02 * alpha_c * sign(w) with its custom backward."""
    return BilinearBinarize.apply(w, alpha, lam, bin_)


def density_mask(alpha: torch.Tensor, tau: float = 0.6, mode: str = "rank") -> torch.Tensor:
    """Which output channels the recurrent module backtracks (1.0) — RBONN's Density-ReLU mask.

    * "rank" (default, the paper's intent): the int((1 - tau) * C) channels with the smallest alpha.
    * "official_code": the authors' expression, which compares the *argsort indices* with the count
      (m_j = 1 iff argsort(alpha)[j] < int(C * (1 - tau))), mixing sorted positions and channel
      indices; kept to reproduce their code exactly.
    """
    flat = alpha.detach().reshape(-1)
    count = int(flat.numel() * (1.0 - tau))
    order = torch.argsort(flat, stable=True)
    if mode == "rank":
        mask = torch.zeros_like(flat)
        mask[order[:count]] = 1.0
    elif mode == "official_code":
        mask = (order < count).to(flat.dtype)
    else:
        raise ValueError(f"unknown RBONN mask mode {mode!r}; expected 'rank' or 'official_code'")
    return mask


# ------------------------------------------------------------------------------------------------
# Hyper-BinaryNet: STE-Warmup and the per-layer weight generator
# ------------------------------------------------------------------------------------------------
class _SteWarmup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, temperature: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        if temperature <= 0.0:
            return bipolar_sign(x)
        return torch.clamp(x / temperature, -1.0, 1.0)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # the gradient of hardtanh at T = 1, independent of T (NicoNico6/Hyper-BinaryNet Softsign_W/A)
        return grad_out * (x.abs() <= 1).to(grad_out.dtype), None


def ste_warmup(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """hardtanh(x / T) forward (exact bipolar sign at T = 0), backward 1[|x| <= 1]."""
    return _SteWarmup.apply(x, float(temperature))


def warmup_temperature(epoch: float, total_epochs: float, *, t0: float = 1.0, t_end: float = 1e-3,
                       end_fraction: float = 0.7) -> float:
    """STE-Warmup temperature at `epoch` (may be fractional, for per-step schedules): geometric decay
    T0 * r^epoch rescaled so that T reaches t_end at end_fraction of training; 0.0 (exact sign) from
    then on.

    The authors decay T = 0.95^epoch over hundreds of CIFAR epochs (main.py `adjust_temperoture`);
    for short runs the spec (estimators.md §5.3, ASSUMPTION) rescales the rate.
    """
    if total_epochs <= 0:
        raise ValueError("total_epochs must be positive")
    switch = end_fraction * total_epochs
    if epoch >= switch:
        return 0.0
    rate = (t_end / t0) ** (1.0 / switch)
    temperature = t0 * rate**epoch
    return 0.0 if temperature < t_end else temperature


def hyper_generate(z: torch.Tensor, generator: torch.Tensor, gain: torch.Tensor,
                   activation: nn.Module | None = None) -> torch.Tensor:
    """Hyper-BinaryNet's depth-1 per-layer generator: W[o, i, :] = gain * generator @ z[o, i, :].

    z: (C_out, C_in, d) embeddings; generator: (p, d) with p = k*k kernel entries (or the linear
    layer's group size); gain: scalar. Returns (C_out, C_in, p). Every latent weight is a sum of d
    contributions, and each embedding receives gradient from all p outputs it feeds ("hyper
    accumulation"); `activation` is the optional 'clipped_elu'/'satured' nonlinearity.
    """
    latent = gain * torch.einsum("oid,pd->oip", z, generator)
    return activation(latent) if activation is not None else latent


# ------------------------------------------------------------------------------------------------
# A binary weight layer skeleton shared by the four methods
# ------------------------------------------------------------------------------------------------
class ScaledBinaryLayer(nn.Module):
    """Linear or stride-1 conv layer computing `scale_c * (sign(W) (*) x)` from a method's latent state.

    Subclasses implement `train_weight()` (the effective weight with the method's gradient path, used
    in training mode) and `binary_weight_and_scale()` (the export form, docs/design.md §2). In eval
    mode the forward accumulates with the +-1 weights first and scales afterwards, so the sums are
    exact integers on +-1 / UINT8 inputs and the eval model equals the collapsed one bit for bit.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int | None = None, padding: int = 0) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = kernel_size
        self.padding = padding

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.kernel_size is None:
            return (self.out_features, self.in_features)
        return (self.out_features, self.in_features, self.kernel_size, self.kernel_size)

    @property
    def out_channels(self) -> int:
        return self.out_features

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.kernel_size is None:
            return torch.nn.functional.linear(x, weight)
        return torch.nn.functional.conv2d(x, weight, padding=self.padding)

    def _scale_output(self, y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        view = [1, -1] + [1] * (y.dim() - 2)
        return y * scale.reshape(view) if scale.numel() > 1 else y * scale.reshape(())

    def train_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def binary_weight_and_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self._apply_weight(x, self.train_weight())
        sign, scale = self.binary_weight_and_scale()
        return self._scale_output(self._apply_weight(x, sign.to(x.dtype)), scale.to(x.device, x.dtype))

    def extra_repr(self) -> str:
        kind = "linear" if self.kernel_size is None else f"conv{self.kernel_size}x{self.kernel_size} pad {self.padding}"
        return f"{self.in_features} -> {self.out_features}, {kind}"
