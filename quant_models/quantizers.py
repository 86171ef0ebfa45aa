"""Declarative Brevitas quantizers shared by the topologies and the estimators.

Brevitas' own quantizer classes, specialised by class attributes (the bnn_pynq pattern), so that
Brevitas' QONNX export emits standard Quant / BipolarQuant nodes that FINN recognises.
"""
from __future__ import annotations

from brevitas.core.scaling import ScalingImplType
from brevitas.quant import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst, Uint8ActPerTensorFloat


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
