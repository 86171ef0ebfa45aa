"""Host-side input of binary-input accelerators (`--input-bits 1` with `--input-packing host`).

The trained network's first quantizer turns every raw pixel into one bit (pixel >= t, the channel's
integer threshold; `t` is 128 for onebit's `x - 127.5 -> sign`). With input packing the host applies that
threshold and the accelerator's first layer reads the bits: the input DMA carries one bit per pixel
instead of a byte. io.json's `input.packing` (written by hw/finn/io_description.py from the build's model
metadata, see hw/finn/binary_input.py) describes it:

    thresholds   [t_0, .., t_{C-1}]  bit = pixel >= t_c for pixels of channel c (integers 0..256)
    pixels       C*H*W               the image's pixels, in NCHW-flatten order
    bits         pixels rounded up to a multiple of the AXI port width; the extra bits are 0 (their
                 weights are +1 in the first layer, so XNOR-popcount adds nothing for them; FINN's IODMA
                 reads gcd(bits per image, port bits) wide, so a whole number of port words per image
                 keeps the DMA at full width)

The byte order is FINN's (packing.py): each folded stream word of SIMD bits is little-endian with pixel 0
in bit 0; when SIMD is a multiple of 8 that is numpy's `packbits(bits, bitorder="little")` of the whole
vector, which is what `pack_images` uses (tests/hw/test_input_packing.py checks it against packing.pack and
finn-plus-driver's packing). Imports numpy only (it is copied onto the board).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .packing import pack

PACKING_KEY = "onebit_input_packing"  # model metadata key (the build) and io.json input key (the driver)


def _thresholds(packing: dict[str, Any], channels: int) -> np.ndarray:
    thresholds = np.asarray(packing["thresholds"], dtype=np.int16)
    if thresholds.size == 1:
        thresholds = np.repeat(thresholds, channels)
    if thresholds.size != channels:
        raise ValueError(f"input packing has {thresholds.size} channel thresholds for {channels} channels")
    return thresholds


def threshold_images(images: np.ndarray, packing: dict[str, Any]) -> np.ndarray:
    """uint8 images (N, C, H, W) -> uint8 bits (N, packing["bits"]): NCHW flatten, zero padding at the end."""
    n, channels = images.shape[0], images.shape[1]
    thresholds = _thresholds(packing, channels).reshape((1, channels) + (1,) * (images.ndim - 2))
    flat = (images >= thresholds).reshape(n, -1)
    out = np.zeros((n, int(packing["bits"])), dtype=np.uint8)
    out[:, :flat.shape[1]] = flat
    return out


def pack_images(images: np.ndarray, packing: dict[str, Any], folded_shape: tuple[int, ...]) -> np.ndarray:
    """uint8 images (N, C, H, W) -> the bytes the input DMA reads, (N, *folded[1:-1], ceil(SIMD/8)).

    `folded_shape` is io.json's input shape_folded (batch 1): its last dimension is the SIMD bits of one
    stream word.
    """
    n, word = images.shape[0], int(folded_shape[-1])
    pixels, bits = int(packing["pixels"]), int(packing["bits"])
    channels = images.shape[1]
    if word % 8 == 0 and pixels % 8 == 0:
        # Fast path: whole-byte words, so the stream is packbits of the whole vector; the padding is whole bytes.
        thresholds = _thresholds(packing, channels).reshape((1, channels) + (1,) * (images.ndim - 2))
        packed = np.packbits((images >= thresholds).reshape(n, pixels), axis=-1, bitorder="little")
        if bits == pixels:
            return packed.reshape((n,) + tuple(folded_shape[1:-1]) + (word // 8,))
        out = np.zeros((n, bits // 8), dtype=np.uint8)
        out[:, :pixels // 8] = packed
        return out.reshape((n,) + tuple(folded_shape[1:-1]) + (word // 8,))
    folded = threshold_images(images, packing).reshape((n,) + tuple(folded_shape[1:]))
    return pack(folded, "BINARY")


def measure_packing_rate(packing: dict[str, Any], folded_shape: tuple[int, ...], images: int = 20_000,
                         repeats: int = 3) -> dict[str, Any]:
    """Images/s of `pack_images` (threshold + pack, numpy, this machine) on random images, best of `repeats`."""
    import os
    import time

    channels = len(packing["thresholds"])
    shape = (images, channels, int(packing["pixels"]) // channels)
    batch = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        pack_images(batch, packing, folded_shape)
        best = min(best, time.perf_counter() - started)
    try:
        load = f", load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"  # a shared machine packs slower
    except (AttributeError, OSError):
        load = ""
    return {"images_per_s": images / best,
            "how": f"numpy pack_images on {images:,} random images, best of {repeats}, one process{load}"}
