"""The onebit accelerator driver: uint8 images in, class indices and raw integer outputs out.

One code path for both backends: check -> (transpose) -> fold -> pack -> transfer -> unpack -> unfold.
Only `transfer` differs:
  backend="board"  the bytes go through the IODMA of the bitstream (`overlay.OnebitOverlay`, pynq);
  backend="model"  the same bytes go to an object with `run(packed: uint8 array) -> uint8 array`, e.g.
                   hw.accel_model.AcceleratorModel (it lives outside this package and is injected,
                   because it needs the FINN model of the build). Chosen explicitly, never a fallback.

Input contract: a uint8 array (N, C, H, W) of raw dataset pixels (the layout quant_models' datasets give),
or one image (C, H, W). Other integer dtypes are accepted when every value is in 0..255. A bit-packed
binary-input build (io.json input.onebit_input_packing) thresholds and packs them on the host; its
`execute_packed` takes buffers packed once by `pack_images`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .io_spec import BoardRequiredError, DriverError, IOSpec
from .input_packing import pack_images
from .packing import datatype_range, pack, unpack

BACKENDS = ("board", "model")
# One batch's input images in bytes at most: a batch is allocated whole (and on the board as DMA buffers),
# so batch_size 10**12 was a MemoryError deep in numpy (issue 23) rather than a sentence.
MAX_BATCH_BYTES = 1 << 30


def _whole_number(value) -> int:
    """A batch size as int; 2.7 or "8" is refused rather than silently truncated or replaced."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise DriverError(f"batch_size must be a whole number >= 1, got {value!r}")


class PackedModel(Protocol):
    def run(self, packed: np.ndarray) -> np.ndarray: ...


@dataclass
class Prediction:
    classes: np.ndarray  # (N,) int64 argmax of the class scores (first index on ties)
    scores: np.ndarray   # (N, K) int64 class scores z
    raw: np.ndarray      # (N, K) int64 what the output stream carries


class Accelerator:
    """Driver for one build's accelerator, configured by its io.json."""

    def __init__(self, spec: IOSpec | str | Path, backend: str, model: PackedModel | None = None,
                 bitfile: str | Path | None = None, batch_size: int | None = None, device=None) -> None:
        self.spec = spec if isinstance(spec, IOSpec) else IOSpec.load(spec)
        if backend not in BACKENDS:
            raise DriverError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
        self.backend = backend
        self._batch_size = self._checked_batch(self.spec.batch_size if batch_size is None else batch_size)
        self.overlay = None
        self.model = None
        if backend == "model":
            if model is None or not callable(getattr(model, "run", None)):
                raise DriverError("backend='model' needs an accelerator model with run(packed_bytes) "
                                  "(e.g. hw.accel_model.AcceleratorModel.from_build(build_dir))")
            self.model = model
        else:
            self.overlay = self._open_board(bitfile, device)

    def _open_board(self, bitfile: str | Path | None, device):
        if bitfile is None:
            if not self.spec.bitfile:
                raise DriverError(f"{self.spec.source} names no bitfile (this build ran without Vivado); "
                                  "build with Vivado for a board, or use backend='model'")
            bitfile = Path(self.spec.source).parent / self.spec.bitfile
            package = Path(self.spec.source).resolve().parent.parent  # io.json sits in <package>/driver/
            if package not in Path(bitfile).resolve().parents:
                raise DriverError(f"{self.spec.source}: bitfile {self.spec.bitfile!r} leaves the deployment package; "
                                  "rebuild or re-copy the package")
        if not Path(bitfile).is_file():
            raise DriverError(f"bitfile {bitfile} not found; copy the build's deploy/ folder to the board, "
                              "or use backend='model'")
        try:
            from .overlay import OnebitOverlay
        except ImportError as error:
            raise DriverError(f"backend='board' needs pynq ({error}); run on a PYNQ board image or use "
                              "backend='model'") from None
        try:
            return OnebitOverlay(str(bitfile), self.spec, self._batch_size, device=device)
        except BoardRequiredError as error:  # a simulated device (simdevice.py) reached the hardware
            raise DriverError(f"backend='board': {error}") from None
        except RuntimeError as error:
            if "No Devices Found" in str(error):
                raise DriverError("backend='board' needs a PYNQ board (pynq: No Devices Found); "
                                  "off the board use backend='model'") from None
            raise

    # -- batch size (finn-examples style property) ----------------------------------------------
    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        value = self._checked_batch(value)
        self._batch_size = value
        if self.overlay is not None:
            self.overlay.batch_size = value

    def _checked_batch(self, value) -> int:
        value = _whole_number(value)
        if value < 1:
            raise DriverError(f"batch_size must be >= 1, got {value}")
        image_bytes = int(np.prod(self.spec.image_shape))
        if value * image_bytes > MAX_BATCH_BYTES:
            raise DriverError(f"batch_size {value:,} needs {value * image_bytes / 2**30:,.1f} GiB of input buffer per "
                              f"batch; the most is {MAX_BATCH_BYTES // 2**30} GiB (batch_size <= "
                              f"{MAX_BATCH_BYTES // image_bytes:,}): pass a smaller batch_size")
        return value

    # -- the shared path ------------------------------------------------------------------------
    def check_images(self, images: np.ndarray) -> np.ndarray:
        """Validate user input and return it as a uint8 (N, C, H, W) array."""
        if not isinstance(images, np.ndarray):
            raise DriverError(f"images must be a numpy uint8 array, got {type(images).__name__}")
        shape = self.spec.image_shape
        if images.shape == shape:
            images = images[None]
        if images.ndim != len(shape) + 1 or tuple(images.shape[1:]) != shape:
            raise DriverError(f"images have shape {images.shape}; this accelerator takes uint8 (N, "
                              f"{', '.join(map(str, shape))}) (N, C, H, W raw pixels, the dataset's layout)")
        if images.dtype != np.uint8:
            if images.dtype.kind not in "iu":
                raise DriverError(f"images have dtype {images.dtype}; pass the raw uint8 pixels 0..255, "
                                  "not normalised floats")
            if images.size and (images.min() < 0 or images.max() > 255):
                raise DriverError(f"pixel values range {images.min()}..{images.max()}, outside 0..255; "
                                  "pass the raw uint8 pixels")
            images = images.astype(np.uint8)
        if images.shape[0] == 0:
            raise DriverError("images hold no image (N = 0)")
        return images

    def fold_and_pack(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, C, H, W) -> the bytes the input DMA reads, (N, *ishape_packed[1:]).

        With bit-packed input (io.json input.onebit_input_packing) the host applies the first layer's pixel
        threshold and packs 8 pixels to a byte (input_packing.py)."""
        n = images.shape[0]
        if self.spec.input_packing is not None:
            return pack_images(images, self.spec.input_packing, self.spec.ishape_folded)
        stream = images.transpose(self.spec.transpose) if self.spec.transpose else images
        folded = np.ascontiguousarray(stream).reshape((n,) + self.spec.ishape_folded[1:])
        lo, hi = datatype_range(self.spec.idt)
        if lo > 0 or hi < 255:
            raise DriverError(f"accelerator input datatype {self.spec.idt} cannot hold uint8 pixels")
        return pack(folded, self.spec.idt)

    def unpack_and_unfold(self, packed: np.ndarray) -> np.ndarray:
        """Bytes the output DMA wrote -> raw integer outputs (N, *oshape_normal[1:])."""
        n = packed.shape[0]
        expected = (n,) + self.spec.oshape_packed[1:]
        if packed.shape != expected or packed.dtype != np.uint8:
            raise DriverError(f"the {self.backend} backend returned {packed.dtype} {packed.shape}, "
                              f"expected uint8 {expected}")
        folded = unpack(packed, self.spec.odt, self.spec.oshape_folded[-1])
        return folded.reshape((n,) + self.spec.oshape_normal[1:])

    def transfer(self, packed: np.ndarray) -> np.ndarray:
        if self.backend == "model":
            return np.asarray(self.model.run(packed))
        return self.overlay.transfer(packed)

    def pack_images(self, images: np.ndarray) -> np.ndarray:
        """The input DMA's bytes (N, *ishape_packed[1:]) for uint8 images: pack once, run `execute_packed` often."""
        return self.fold_and_pack(self.check_images(images))

    def execute_packed(self, packed: np.ndarray) -> np.ndarray:
        """Raw integer outputs for buffers already in the input DMA's layout (`pack_images`), in chunks of
        `batch_size`: the accelerator's own rate, without the host's threshold-and-pack cost."""
        expected = self.spec.ishape_packed[1:]
        if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8 or tuple(packed.shape[1:]) != expected \
                or packed.ndim != len(expected) + 1 or packed.shape[0] == 0:
            shown = f"{packed.dtype} {packed.shape}" if isinstance(packed, np.ndarray) else type(packed).__name__
            raise DriverError(f"packed input is {shown}; this accelerator takes uint8 (N, "
                              f"{', '.join(map(str, expected))}) buffers from pack_images()")
        outputs = []
        for start in range(0, packed.shape[0], self._batch_size):
            outputs.append(self.unpack_and_unfold(self.transfer(packed[start:start + self._batch_size])))
        return np.concatenate(outputs)

    def execute(self, images: np.ndarray) -> np.ndarray:
        """Raw integer outputs of the accelerator for uint8 images, in chunks of `batch_size`."""
        images = self.check_images(images)
        outputs = []
        for start in range(0, images.shape[0], self._batch_size):
            packed = self.fold_and_pack(images[start:start + self._batch_size])
            outputs.append(self.unpack_and_unfold(self.transfer(packed)))
        return np.concatenate(outputs)

    def predict(self, images: np.ndarray) -> Prediction:
        """Class indices, class scores and the raw stream values for uint8 images."""
        raw = self.execute(images).reshape(-1, self.spec.num_classes)
        scores = self.spec.score_scale * raw + self.spec.score_offset
        return Prediction(classes=np.argmax(scores, axis=1), scores=scores, raw=raw)

    def throughput_test(self, n_batches: int = 1) -> dict:
        """Images/s of the transfer alone and of the whole path (pack + transfer + unpack), like
        finn-examples' throughput_test, on random pixels."""
        if _whole_number(n_batches) < 1:
            raise DriverError(f"n_batches must be >= 1, got {n_batches}")
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(self._batch_size,) + self.spec.image_shape, dtype=np.uint8)
        t0 = time.perf_counter()
        packed = self.fold_and_pack(images)
        t1 = time.perf_counter()
        for _ in range(n_batches):
            out = self.transfer(packed)
        t2 = time.perf_counter()
        self.unpack_and_unfold(out)
        t3 = time.perf_counter()
        runtime = (t2 - t1) / n_batches
        return {
            "backend": self.backend,
            "batch_size": self._batch_size,
            "runtime[ms]": runtime * 1e3,
            "throughput[images/s]": self._batch_size / runtime,
            "pack_input[ms]": (t1 - t0) * 1e3,
            "unpack_output[ms]": (t3 - t2) * 1e3,
            "total_throughput[images/s]": self._batch_size / (runtime + (t1 - t0) + (t3 - t2)),
            "DRAM_in_bandwidth[MB/s]": packed.size * 1e-6 / runtime,
            "DRAM_out_bandwidth[MB/s]": out.size * 1e-6 / runtime,
            "input_packing": "host" if self.spec.input_packing is not None else None,
            "input_bytes_per_image": int(np.prod(self.spec.ishape_packed[1:])),
            "fclk[mhz]": self.spec.fclk_mhz,
            "accel_clk[mhz]": self.spec.accel_clk_mhz,
        }
