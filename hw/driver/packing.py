"""Bit packing of integer tensors into the byte layout a FINN accelerator's DMA reads and writes.

Pure numpy (works on numpy 1.17+, the PYNQ board images' numpy 1.x included; no `bitwise_count`, no
qonnx, no bitstring), because this module is copied onto the board. It reproduces
`finn.util.data_packing.finnpy_to_packed_bytearray` / `packed_bytearray_to_finnpy` (and their copy in
finn_plus_driver.packing) exactly; tests/hw/test_packing.py checks that on every datatype the builds
use. Written by hand because both reference implementations import qonnx (and finn-plus-driver also
bitstring), which a board image does not have.

The layout FINN's drivers use (reverse_inner=True, reverse_endian=True, the defaults here): the
innermost (folded SIMD/PE) dimension of `n` values of `b` bits becomes one little-endian word of
ceil(n*b/8) bytes in which value 0 occupies the least significant bits; padding bits are zero and
sit at the top. Signed values are stored as b-bit two's complement, BIPOLAR -1/+1 as bit 0/1.
"""
from __future__ import annotations

import re

import numpy as np

_INT_RE = re.compile(r"^(U?)INT(\d+)$")


class PackingError(ValueError):
    """A datatype or array that cannot be packed as asked."""


def datatype_info(name: str) -> tuple[int, bool, bool]:
    """(bit width, signed, bipolar) of a FINN integer datatype name such as 'UINT8', 'INT17', 'BIPOLAR'."""
    if name == "BIPOLAR":
        return 1, False, True
    if name == "BINARY":
        return 1, False, False
    match = _INT_RE.match(name)
    if not match or not 1 <= int(match.group(2)) <= 64:
        raise PackingError(
            f"datatype '{name}' is not supported by the onebit driver (BINARY, BIPOLAR, UINTn, INTn with n <= 64)"
        )
    return int(match.group(2)), match.group(1) == "", False


def datatype_range(name: str) -> tuple[int, int]:
    """Smallest and largest value of a FINN integer datatype."""
    bits, signed, bipolar = datatype_info(name)
    if bipolar:
        return -1, 1
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def packed_bytes(n_values: int, dtype: str) -> int:
    """Bytes that `n_values` values of `dtype` occupy once packed (padded to whole bytes)."""
    bits = datatype_info(dtype)[0]
    return (n_values * bits + 7) // 8


def _to_unsigned_pattern(values: np.ndarray, dtype: str) -> np.ndarray:
    """Each value's b-bit pattern as uint64 (two's complement for signed, 0/1 for BIPOLAR)."""
    bits, signed, bipolar = datatype_info(dtype)
    lo, hi = datatype_range(dtype)
    ints = np.asarray(values)
    if ints.dtype.kind == "f":
        if not np.all(ints == np.round(ints)):
            raise PackingError(f"{dtype} values must be integers; got non-integer floats")
        ints = ints.astype(np.int64)
    elif ints.dtype.kind not in "iub":
        raise PackingError(f"cannot pack an array of dtype {ints.dtype} as {dtype}")
    ints = ints.astype(np.int64, copy=False) if ints.dtype != np.uint64 else ints
    if ints.size and (ints.min() < lo or ints.max() > hi):
        raise PackingError(f"values outside the range of {dtype} [{lo}, {hi}]: min {ints.min()}, max {ints.max()}")
    if bipolar:
        if ints.size and np.any(ints == 0):
            raise PackingError("BIPOLAR values must be -1 or +1; got 0")
        return (ints > 0).astype(np.uint64)
    if signed:
        mask = np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
        return ints.astype(np.uint64) & mask
    return ints.astype(np.uint64)


def pack(values: np.ndarray, dtype: str, reverse_inner: bool = True, reverse_endian: bool = True) -> np.ndarray:
    """Pack the innermost dimension of an integer array into uint8 bytes exactly as FINN does.

    Returns an array with the same leading dimensions and ceil(n*bits/8) bytes in the last one.
    """
    values = np.asarray(values)
    if values.ndim == 0:
        values = values.reshape(1)
    bits, _, _ = datatype_info(dtype)
    if not reverse_inner:
        values = values[..., ::-1]
    n = values.shape[-1]
    lead = values.shape[:-1]
    if bits in (8, 16, 32, 64) and values.dtype.kind in "iu":
        # Whole-byte values: the little-endian word is the values' own little-endian bytes.
        pattern = _to_unsigned_pattern(values, dtype)
        out = pattern.astype(f"<u{bits // 8}").view(np.uint8).reshape(*lead, n * bits // 8)
    elif bits == 1:
        pattern = _to_unsigned_pattern(values, dtype).astype(np.uint8)
        out = np.packbits(pattern, axis=-1, bitorder="little")
    else:
        pattern = _to_unsigned_pattern(values, dtype)
        # Expand each value to its bits, least significant first, so that concatenating the values in
        # order gives the little-endian bit stream of the whole word.
        shifts = np.arange(bits, dtype=np.uint64)
        bitplanes = ((pattern[..., None] >> shifts) & np.uint64(1)).astype(np.uint8)
        stream = bitplanes.reshape(*lead, n * bits)
        out = np.packbits(stream, axis=-1, bitorder="little")
    if not reverse_endian:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def unpack(packed: np.ndarray, dtype: str, n_values: int, reverse_inner: bool = True,
           reverse_endian: bool = True) -> np.ndarray:
    """Inverse of `pack`: uint8 bytes in the last dimension -> `n_values` int64 values of `dtype`."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise PackingError(f"packed data must be uint8 bytes, got {packed.dtype}")
    bits, signed, bipolar = datatype_info(dtype)
    need = (n_values * bits + 7) // 8
    if packed.ndim == 0 or packed.shape[-1] != need:
        raise PackingError(
            f"{n_values} values of {dtype} need {need} bytes in the last dimension, got shape {packed.shape}"
        )
    if not reverse_endian:
        packed = packed[..., ::-1]
    lead = packed.shape[:-1]
    if bits in (8, 16, 32, 64):
        kind = "i" if signed else "u"
        values = np.ascontiguousarray(packed).view(f"<{kind}{bits // 8}").reshape(*lead, n_values).astype(np.int64)
    else:
        stream = np.unpackbits(packed, axis=-1, bitorder="little")[..., : n_values * bits]
        bitplanes = stream.reshape(*lead, n_values, bits).astype(np.int64)
        values = (bitplanes << np.arange(bits, dtype=np.int64)).sum(axis=-1)
        if bipolar:
            values = 2 * values - 1
        elif signed:
            values = np.where(values >= (1 << (bits - 1)), values - (1 << bits), values)
    if not reverse_inner:
        values = values[..., ::-1]
    return np.ascontiguousarray(values)
