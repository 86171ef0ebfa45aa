"""Collapse a trained onebit model into the plain, exactly-integer model that FINN compiles (design §3).

The plain model is the same topology built with the STE estimator (all scales 1), its weights the
trained layers' signs, and every BatchNorm rewritten into the exact threshold form

    weight = 1, bias = -t, running_mean = 0, running_var = 1, eps = 0,   t = ceil(T) - 0.5

where T is the real threshold on the layer's integer accumulator z (computed in float64 from BatchNorm,
the layer's positive per-channel scale s_c and the activation's threshold offset theta_c). Because z is
an integer, `z >= T <=> z >= ceil(T) <=> z - t > 0`, and z - t is a half-integer that float32 computes
exactly, so PyTorch, ONNX Runtime and FINN's float thresholds all produce the same bits.

Derivation, per channel c: the activation outputs +1 iff y >= 0 (sign(0) = +1) with
    y = k (s_c z - mu) + beta + theta,   k = gamma / sqrt(var + eps).
    k > 0:  y >= 0  <=>  z >= T,  T = (mu - (beta + theta) / k) / s_c      -> t = ceil(T) - 0.5
    k < 0:  y >= 0  <=>  z <= T  <=>  (-z) >= -floor(T) = ceil(-T)          -> negate the channel's
            weights (z' = -z) and use t = ceil(-T) - 0.5
    k = 0:  y = beta + theta is constant: +1 if >= 0 else -1; t = -/+ (bound + 0.5), bound >= |z|.
Written by hand because no library collapses BN + scale + learnable offset into integer thresholds
with this exactness guarantee (FINN's streamliner does it in float32 on the already-exported graph).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from onebit.errors import OnebitError
from quant_models.estimators import get_estimator, threshold_offset_of
from quant_models.topologies import BinaryBlock, OnebitNet, build_model


class CollapseError(OnebitError):
    """A layer of the trained model that cannot become a binary FINN layer (the message names it)."""


# Values an activation is probed with to check that it is binary (both signs, zero, large magnitudes).
_PROBE = torch.tensor([-1e4, -3.0, -1.0, -0.5, -1e-3, 0.0, 1e-3, 0.5, 1.0, 3.0, 1e4])


def collapse(model: OnebitNet, meta: dict[str, Any] | None = None) -> tuple[OnebitNet, dict[str, Any]]:
    """(plain model in eval mode, report) for a trained OnebitNet; CollapseError names a layer that can't."""
    if not isinstance(model, OnebitNet):
        raise CollapseError(f"model is a {type(model).__name__}, not a onebit OnebitNet; load it with load_checkpoint")
    model = model.eval()
    arch = dict(model.arch)
    _check_structure(model)
    plain = build_model(arch, get_estimator("ste")).eval()
    in_bound = 255.0 if arch["input_bits"] == 8 else 1.0  # largest |input| of the first layer

    report: dict[str, Any] = {"layers": []}
    with torch.no_grad():
        for index, (block, plain_block) in enumerate(zip(model.blocks, plain.blocks)):
            name = f"blocks.{index}"
            sign, scale = _binary_weight(block.weight_layer, f"{name}.weight_layer")
            theta = _threshold_offset(block.act, f"{name}.act", sign.shape[0])
            _check_binary_activation(block.act, f"{name}.act", sign.shape[0])
            fan_in = int(np.prod(sign.shape[1:]))
            bound = fan_in * (in_bound if index == 0 else 1.0)
            t, flip, constant, _ = _thresholds(block.bn, scale, theta, bound, name)
            sign = sign.clone()
            sign[torch.from_numpy(flip)] *= -1
            plain_block.weight_layer.weight.copy_(sign.to(plain_block.weight_layer.weight.dtype))
            _set_threshold_bn(plain_block.bn, t)
            report["layers"].append({"layer": name, "channels": int(sign.shape[0]), "fan_in": fan_in,
                                     "negated_channels": int(flip.sum()), "constant_channels": int(constant.sum())})
        sign, scale = _binary_weight(model.score, "score")
        if scale.numel() > 1 and not torch.all(scale == scale.reshape(-1)[0]):
            raise CollapseError("layer 'score' has a per-class weight scale, which would change the argmax of "
                                "the integer scores; train with an estimator whose score layer has one scale")
        plain.score.weight.copy_(sign.to(plain.score.weight.dtype))
        report["layers"].append({"layer": "score", "channels": int(sign.shape[0]),
                                 "fan_in": int(np.prod(sign.shape[1:])), "negated_channels": 0, "constant_channels": 0})
    plain.eval()
    return plain, report


def _check_structure(model: OnebitNet) -> None:
    for index, block in enumerate(model.blocks):
        name = f"blocks.{index}"
        if not isinstance(block, BinaryBlock):
            raise CollapseError(f"layer '{name}' is a {type(block).__name__}, not a BinaryBlock; only binary "
                                "weight layer -> BatchNorm -> binary activation blocks become FINN layers")
        if not isinstance(block.bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
            raise CollapseError(f"layer '{name}.bn' is a {type(block.bn).__name__}, not BatchNorm; "
                                "only BatchNorm collapses into thresholds")
        if block.pool is not None and not isinstance(block.pool, nn.MaxPool2d):
            raise CollapseError(f"layer '{name}.pool' is a {type(block.pool).__name__}; only MaxPool2d after the "
                                "binary activation keeps the values binary")


def _binary_weight(layer: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    getter = getattr(layer, "binary_weight_and_scale", None)
    if not callable(getter):
        raise CollapseError(f"layer '{name}' ({type(layer).__name__}) has no binary_weight_and_scale(): it is not "
                            "a binary weight layer and cannot become an XNOR/popcount FINN layer")
    sign, scale = getter()
    sign, scale = sign.detach().cpu().to(torch.float64), scale.detach().cpu().to(torch.float64).reshape(-1)
    if not torch.all((sign == 1) | (sign == -1)):
        bad = sorted({float(v) for v in sign.unique()} - {1.0, -1.0})[:3]
        raise CollapseError(f"layer '{name}' has non-binary weights (values {bad} besides +-1); "
                            "only +-1 weights become a binary FINN layer")
    if scale.numel() == 1:
        scale = scale.expand(sign.shape[0])
    if scale.numel() != sign.shape[0]:
        raise CollapseError(f"layer '{name}' returns {scale.numel()} scales for {sign.shape[0]} output channels")
    if not torch.all(torch.isfinite(scale)) or not torch.all(scale > 0):
        raise CollapseError(f"layer '{name}' has a non-positive or non-finite per-channel scale "
                            f"(min {float(scale.min()):.3g}); binary weights need a positive scale per channel")
    return sign, scale.clone()


def _threshold_offset(act: nn.Module, name: str, channels: int) -> torch.Tensor:
    try:
        theta = threshold_offset_of(act, channels)
    except OnebitError as error:
        raise CollapseError(f"layer '{name}': {error}") from None
    return theta.detach().cpu().to(torch.float64)


def _check_binary_activation(act: nn.Module, name: str, channels: int) -> None:
    """Probe the activation in eval mode: every output must be +-1 (FINN's bipolar activation)."""
    was_training = act.training
    act.eval()
    try:
        probe = _PROBE.repeat(2, channels, 1).transpose(1, 2).reshape(-1, channels)  # (N, C)
        out = act(probe)
        out = getattr(out, "value", out)  # a Brevitas QuantTensor
    except Exception as error:  # an activation that cannot even run on (N, C) input is not binary either
        raise CollapseError(f"layer '{name}' ({type(act).__name__}) failed on a probe input ({error}); "
                            "only binary +-1 activations become FINN thresholds") from None
    finally:
        act.train(was_training)
    values = torch.as_tensor(out).detach().unique()
    if not torch.all((values == 1) | (values == -1)):
        shown = ", ".join(f"{float(v):g}" for v in values[:5])
        raise CollapseError(f"layer '{name}' ({type(act).__name__}) is not a binary activation (outputs {shown}); "
                            "only +-1 activations become FINN thresholds")


def threshold_distances(model: OnebitNet) -> np.ndarray:
    """|T - round(T)| of every real threshold T (float64, before rounding) within the reachable accumulator
    range, over all blocks: how close the trained model comes to a tie, where float32 PyTorch and the exact
    integer collapse can disagree (hw/check/verdict.py collapse_drift reports the smallest)."""
    model = model.eval()
    in_bound = 255.0 if dict(model.arch)["input_bits"] == 8 else 1.0
    distances = []
    with torch.no_grad():
        for index, block in enumerate(model.blocks):
            name = f"blocks.{index}"
            sign, scale = _binary_weight(block.weight_layer, f"{name}.weight_layer")
            theta = _threshold_offset(block.act, f"{name}.act", sign.shape[0])
            bound = int(np.prod(sign.shape[1:])) * (in_bound if index == 0 else 1.0)
            _, _, constant, real = _thresholds(block.bn, scale, theta, bound, name)
            reachable = ~constant & (np.abs(real) <= bound)
            distances.append(np.abs(real[reachable] - np.rint(real[reachable])))
    return np.concatenate(distances) if distances else np.zeros(0)


def _thresholds(bn: nn.Module, scale: torch.Tensor, theta: torch.Tensor, bound: float, name: str):
    """(half-integer thresholds t, channels to negate, constant channels, real thresholds T on the possibly
    negated accumulator) for one block, in float64."""
    gamma = bn.weight.detach().cpu().double() if bn.affine else torch.ones(bn.num_features, dtype=torch.float64)
    beta = bn.bias.detach().cpu().double() if bn.affine else torch.zeros(bn.num_features, dtype=torch.float64)
    mu = bn.running_mean.detach().cpu().double()
    var = bn.running_var.detach().cpu().double()
    k = gamma / torch.sqrt(var + bn.eps)
    if not torch.all(torch.isfinite(k)) or not torch.all(torch.isfinite(mu)) or not torch.all(torch.isfinite(beta)):
        raise CollapseError(f"layer '{name}.bn' has non-finite statistics; the model did not train properly")
    t = np.empty(len(k), dtype=np.float64)
    real = np.full(len(k), np.nan)
    flip = np.zeros(len(k), dtype=bool)
    constant = np.zeros(len(k), dtype=bool)
    for c in range(len(k)):
        kc, offset = float(k[c]), float(beta[c] + theta[c])
        if kc == 0.0:
            constant[c] = True
            t[c] = -(bound + 0.5) if offset >= 0 else bound + 0.5
            continue
        threshold = (float(mu[c]) - offset / kc) / float(scale[c])
        if kc < 0:
            flip[c] = True
            threshold = -threshold
        real[c] = threshold
        # Thresholds outside the reachable range make the channel constant; clamp so t stays small.
        t[c] = min(max(math.ceil(threshold) - 0.5, -(bound + 0.5)), bound + 0.5)
    return t, flip, constant, real


def _set_threshold_bn(bn: nn.Module, t: np.ndarray) -> None:
    """BatchNorm computing exactly z - t (see the module docstring)."""
    bn.weight.copy_(torch.ones_like(bn.weight))
    bn.bias.copy_(torch.from_numpy(-t).to(bn.bias.dtype))
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0)
    bn.eps = 0.0


CNN_BATCH = 50  # images per forward pass of a CNN (MLPs: 1000)


def scores_batch(model: OnebitNet) -> int:
    return CNN_BATCH if any(getattr(b, "is_conv", False) for b in getattr(model, "blocks", [])) else 1000


def integer_scores(model: OnebitNet, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """int64 (N, classes) score-layer accumulators of `model` on uint8 images (N, C, H, W).

    A CNN runs in small batches: its activations at batch 1000 (230 MB per CNV conv output) are fresh
    mmap'ed memory on every call, and the kernel's page faults cost more than the convolutions (measured,
    CNV-w1a1, 1,000 images, one thread: 3.0 s user + 3.9 s system at batch 1000, 3.2 + 0.5 s at batch 50).
    """
    batch_size = batch_size or scores_batch(model)
    outputs = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.asarray(images[start:start + batch_size], dtype=np.float32))
            outputs.append(model.integer_scores(x).cpu().numpy())
    return np.concatenate(outputs).astype(np.int64)
