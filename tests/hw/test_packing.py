"""hw/driver/packing.py against FINN's own packing (finn.util.data_packing) and finn-plus-driver's copy.

Every datatype the builds use (UINT8 pixels, BIPOLAR/BINARY activations and weights, accumulator
widths INTn/UINTn) and odd widths (3, 7, 9, 13, 17 bits; SIMD/PE counts that do not fill whole bytes).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from hw.driver import packing

finn_packing = pytest.importorskip("finn.util.data_packing")
fpd_packing = pytest.importorskip("finn_plus_driver.packing")
from qonnx.core.datatype import DataType  # noqa: E402

DTYPES = ["UINT8", "BIPOLAR", "BINARY", "INT2", "UINT3", "INT3", "UINT7", "INT7", "INT9", "UINT13",
          "INT16", "UINT16", "INT17", "INT24", "INT32", "UINT32"]
WIDTHS = [1, 3, 5, 7, 8, 16, 49]


def _random(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    lo, hi = packing.datatype_range(dtype)
    if dtype == "BIPOLAR":
        return rng.choice([-1, 1], size=shape).astype(np.int64)
    values = rng.integers(lo, hi, size=shape, endpoint=True, dtype=np.int64)
    values.flat[0] = lo  # the extremes are where sign handling and padding go wrong
    values.flat[-1] = hi
    return values


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", WIDTHS)
def test_pack_matches_finn_and_finn_plus_driver(dtype: str, width: int):
    rng = np.random.default_rng(width * 101 + len(dtype))
    values = _random(dtype, (4, 3, width), rng)
    # Round trip over the full range (INT32 extremes included) ...
    for reverse_inner, reverse_endian in itertools.product([True, False], repeat=2):
        full = packing.pack(values, dtype, reverse_inner, reverse_endian)
        np.testing.assert_array_equal(packing.unpack(full, dtype, width, reverse_inner, reverse_endian), values)
    # ... but FINN holds values in float32 containers, exact only below 2**24: compare on those.
    values = np.clip(values, -(1 << 24), (1 << 24) - 1)
    for reverse_inner, reverse_endian in itertools.product([True, False], repeat=2):
        ours = packing.pack(values, dtype, reverse_inner, reverse_endian)
        finn = finn_packing.finnpy_to_packed_bytearray(values.astype(np.float32), DataType[dtype],
                                                       reverse_inner, reverse_endian)
        fpd = fpd_packing.finnpy_to_packed_bytearray(values.astype(np.float32), DataType[dtype],
                                                     reverse_inner, reverse_endian)
        assert ours.dtype == np.uint8 and ours.shape == finn.shape == (4, 3, packing.packed_bytes(width, dtype))
        np.testing.assert_array_equal(ours, finn)
        np.testing.assert_array_equal(ours, fpd)
        back = packing.unpack(ours, dtype, width, reverse_inner, reverse_endian)
        np.testing.assert_array_equal(back, values)
        theirs = finn_packing.packed_bytearray_to_finnpy(np.ascontiguousarray(finn), DataType[dtype], values.shape,
                                                         reverse_inner, reverse_endian)
        np.testing.assert_array_equal(back, theirs.astype(np.int64))


@pytest.mark.parametrize("dtype,container", [("UINT8", np.uint8), ("INT8", np.int8), ("INT16", np.int16),
                                             ("INT32", np.int32), ("UINT16", np.uint16)])
def test_native_containers_take_finns_fast_path_and_agree(dtype, container):
    # FINN packs whole-byte types in a native container with byte views; it must give the same bytes.
    rng = np.random.default_rng(7)
    values = _random(dtype, (10, 1, 784 // 49, 49), rng).astype(container)
    ours = packing.pack(values, dtype)
    finn = finn_packing.finnpy_to_packed_bytearray(values, DataType[dtype], True, True)
    np.testing.assert_array_equal(ours, finn)


def test_known_layout_value_zero_in_the_low_bits():
    # Three UINT3 values 1, 2, 7 -> word 0b111_010_001 = 0x1D1 little-endian -> bytes D1 01.
    np.testing.assert_array_equal(packing.pack(np.array([1, 2, 7]), "UINT3"), [0xD1, 0x01])
    # BIPOLAR -1 is stored as 0: [+1, -1, -1, +1] -> 0b1001.
    np.testing.assert_array_equal(packing.pack(np.array([1, -1, -1, 1]), "BIPOLAR"), [0x09])


@pytest.mark.parametrize("dtype,bad", [("UINT8", [256]), ("UINT8", [-1]), ("INT3", [4]), ("BIPOLAR", [0]),
                                       ("BINARY", [2])])
def test_out_of_range_values_are_refused(dtype, bad):
    with pytest.raises(packing.PackingError, match="range|BIPOLAR"):
        packing.pack(np.array(bad), dtype)


def test_unknown_datatype_and_wrong_byte_count_are_refused():
    with pytest.raises(packing.PackingError, match="not supported"):
        packing.pack(np.array([1.5]), "FLOAT32")
    with pytest.raises(packing.PackingError, match="need 2 bytes"):
        packing.unpack(np.zeros((1, 3), np.uint8), "UINT3", 3)
