"""Declarative Brevitas quantizers shared by the topologies and the estimators.

Brevitas' own quantizer classes, specialised by class attributes (the bnn_pynq pattern), so that
Brevitas' QONNX export emits standard Quant / BipolarQuant nodes that FINN recognises.
"""
from __future__ import annotations

import torch
from brevitas.core.scaling import ScalingImplType
from brevitas.quant import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst, Uint8ActPerTensorFloat
from torch import nn


class PixelUint8Quant(Uint8ActPerTensorFloat):
    """Exact identity on the integers 0..255: unsigned 8 bit, constant scale 1, zero point 0.

    Brevitas' constant act scaling gives the *threshold* (largest representable value); the integer
    scale is threshold / (2^8 - 1), so a threshold of 255 yields scale 1.0. Values outside 0..255 are
    clamped and non-integers rounded, which never happens for raw pixels.
    """

    scaling_impl_type = ScalingImplType.CONST
    scaling_const = 255.0
    max_val = 255.0


class BipolarActQuant(SignedBinaryActPerTensorConst):
    """+-1 activation: clamp to [-1, 1] then sign (sign(0)=+1) with a straight-through gradient.

    The clamp's gradient makes this the clipped STE of BinaryNet (Hubara et al. 2016) / bnn_pynq.
    """

    scaling_const = 1.0
    min_val = -1.0
    max_val = 1.0


class BipolarWeightQuant(SignedBinaryWeightPerTensorConst):
    """+-1 weights with a constant scale of 1 (bnn_pynq's CommonWeightQuant at 1 bit)."""

    scaling_const = 1.0


# ------------------------------------------------------------------------------------------------
# The training methods' quantizers (quant_models/estimators/): Brevitas quantizers whose tensor_quant
# is the method's own (its forward and backward), injected into Brevitas proxies like any other.
# ------------------------------------------------------------------------------------------------
class MethodTensorQuant(nn.Module):
    """Base of a method's Brevitas tensor_quant: `quantize(x)` is the method's value with its backward.

    Returns Brevitas' (value, scale, zero_point, bit_width) tuple. The scale is 1 unless `quantize`
    returns one: the methods' scales fold into thresholds at export (export/collapse.py), where the
    collapsed network is rebuilt from the STE quantizers above.
    """

    bits: float = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("zero", torch.tensor(0.0), persistent=False)
        self.register_buffer("one", torch.tensor(1.0), persistent=False)
        self.register_buffer("bit_width", torch.tensor(self.bits), persistent=False)

    def quantize(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.quantize(x)
        value, scale = out if isinstance(out, tuple) else (out, self.one)
        return value, scale, self.zero, self.bit_width


class MethodActQuant(SignedBinaryActPerTensorConst):
    """Declarative base of the methods' activation quantizers: a subclass sets `tensor_quant`."""

    scaling_const = 1.0


class MethodWeightQuant(SignedBinaryWeightPerTensorConst):
    """Declarative base of the methods' weight quantizers: a subclass sets `tensor_quant`."""

    scaling_const = 1.0
