"""Verification level `host_input_packing`: the bytes the driver sends are the trained model's first-layer input.

Only for bit-packed binary-input builds (hw/finn/binary_input.py), where the first layer's pixel threshold
runs on the host. Two comparisons, both against the *trained* model's own input quantizer (the Brevitas
`input_quant` every other level starts from), not against the build's recorded threshold:

* every pixel value 0..255, in every channel: the driver's bit (hw/driver/input_packing.py) equals the
  quantizer's sign (+1 -> 1, -1 -> 0);
* every verified test image: the driver's DMA bytes (`Accelerator.pack_images`) equal the quantizer's
  output on that image, flattened in NCHW order, padded with zero bits and packed by the generic FINN
  packing (hw/driver/packing.pack, checked against finn-plus-driver in tests/hw/test_packing.py) -- a
  second code path next to the driver's packbits fast path.

integer_mismatches counts the mismatching pixel values plus the mismatching images.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

NAME = "host_input_packing"


def first_layer_bits(model, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """uint8 0/1 (N, C*H*W): the model's input quantizer on uint8 images (+1 -> 1), NCHW flatten."""
    import torch

    out = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(np.asarray(images[start:start + batch], dtype=np.float32))
            q = model.input_quant(x)
            q = getattr(q, "value", q)
            values = q.detach().cpu().numpy().reshape(len(x), -1)
            if not np.all((values == 1) | (values == -1)):
                raise ValueError("the model's input quantizer does not output +-1: not a binary-input model")
            out.append((values > 0).astype(np.uint8))
    return np.concatenate(out)


def check_host_input(model, build_dir: str | Path, images: np.ndarray) -> dict[str, Any] | None:
    """The level's report entry, or None when the build reads pixels (no host packing)."""
    from hw.driver.accelerator import Accelerator
    from hw.driver.io_spec import IOSpec
    from hw.driver.packing import pack

    spec = IOSpec.load(Path(build_dir) / "driver" / "io.json")
    packing = spec.input_packing
    if packing is None:
        return None
    started = time.perf_counter()
    channels = spec.image_shape[0]
    values = np.arange(256, dtype=np.uint8)
    flat = np.broadcast_to(values[:, None, None, None], (256, *spec.image_shape)).copy()
    want_values = first_layer_bits(model, flat).reshape(256, channels, -1)
    from hw.driver.input_packing import threshold_images

    got_values = threshold_images(flat, packing)[:, :int(packing["pixels"])].reshape(256, channels, -1)
    wrong_values = np.flatnonzero(np.any(want_values != got_values, axis=(1, 2)))

    class _Nothing:  # pack_images needs no backend
        def run(self, packed):  # pragma: no cover - never called
            raise AssertionError

    driver = Accelerator(spec, backend="model", model=_Nothing())
    expected_bits = np.zeros((len(images), int(packing["bits"])), dtype=np.uint8)
    expected_bits[:, :int(packing["pixels"])] = first_layer_bits(model, images)
    expected = pack(expected_bits.reshape((len(images),) + spec.ishape_folded[1:]), "BINARY")
    got = driver.pack_images(images)
    wrong_images = np.flatnonzero(np.any(got.reshape(len(images), -1) != expected.reshape(len(images), -1), axis=1))
    return {"executed": True, "samples": int(len(images)),
            "integer_mismatches": int(len(wrong_values) + len(wrong_images)), "argmax_mismatches": 0,
            "pixel_values_checked": 256, "pixel_value_mismatches": [int(v) for v in wrong_values[:20]],
            "image_mismatches": int(len(wrong_images)), "first_mismatches": [int(i) for i in wrong_images[:20]],
            "bytes_per_image": int(np.prod(spec.ishape_packed[1:])),
            "how": (f"driver pack_images vs the trained model's input quantizer: pixel values 0..255 x "
                    f"{channels} channel(s), and the DMA bytes of every verified image "
                    f"({int(np.prod(spec.ishape_packed[1:]))} B each, FINN's generic BINARY packing)"),
            "seconds": round(time.perf_counter() - started, 2)}
