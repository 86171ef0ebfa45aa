"""AXI-stream beats <-> FINN values: a beat of n values of b bits holds value 0 in the least
significant bits (FINN's npy_to_rtlsim_input / rtlsim_output_to_npy with reverse_inner, and the
DMA packing of hw/driver/packing.py, which this reuses), padded to whole bytes like FINN's
TDATA, and is handed to the Verilator harness as little-endian 32-bit words."""
from __future__ import annotations

import numpy as np

from hw.driver.packing import PackingError, datatype_info, pack, unpack
from onebit.errors import OnebitError


def beat_bits(n_values: int, dtype: str) -> int:
    """TDATA width of a beat: n values of the datatype, padded to whole bytes."""
    return ((n_values * datatype_info(dtype)[0] + 7) // 8) * 8


def words_per_beat(n_values: int, dtype: str) -> int:
    return (beat_bits(n_values, dtype) + 31) // 32


def values_to_words(values: np.ndarray, dtype: str, where: str = "stream") -> np.ndarray:
    """(n_beats, n_values) FINN values -> (n_beats, words) uint32."""
    values = np.asarray(values)
    try:
        packed = pack(values, dtype)                       # (n_beats, bytes), little-endian
    except PackingError as error:
        raise OnebitError(f"{where}: {error}") from None
    words = words_per_beat(values.shape[-1], dtype)
    padded = np.zeros((packed.shape[0], words * 4), np.uint8)
    padded[:, : packed.shape[1]] = packed
    return padded.view("<u4").reshape(packed.shape[0], words)


def words_to_values(words: np.ndarray, dtype: str, n_values: int) -> np.ndarray:
    """(n_beats, words) uint32 -> (n_beats, n_values) int64 FINN values (BIPOLAR as -1/+1)."""
    raw = np.ascontiguousarray(words, dtype="<u4").view(np.uint8).reshape(words.shape[0], -1)
    need = (n_values * datatype_info(dtype)[0] + 7) // 8
    return unpack(raw[:, :need], dtype, n_values)
