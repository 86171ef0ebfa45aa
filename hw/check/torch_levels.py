"""The PyTorch levels (trained model, collapsed model) computed in a second process while the FINN build runs.

Why: on a CNN they are the most expensive part of a default build (CNV-w1a1, 10,000 test images: about
60 CPU-seconds of float convolutions, half of `to_finn.py`'s time on a 2-core machine), and they need
nothing from the build: the checkpoint and the test set are all they read. FINN's build steps are
single-threaded Python, so the other core computes the two score sets meanwhile.

The second process loads the same checkpoint, collapses it with the same function and loads the same
test images; it returns the images' SHA-256 with the scores, and the parent uses the scores only when that
matches its own images (else, or when the process failed, it computes them itself, as without this).
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

BACKGROUND_MIN_IMAGES = 1000  # below this (or for MLPs) the levels take a few seconds in-process


def images_digest(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def worth_a_second_process(trained, samples: int) -> bool:
    """A CNN verified on many images, on a machine with a second core."""
    if (os.cpu_count() or 1) < 2 or os.environ.get("ONEBIT_NO_BACKGROUND_TORCH"):
        return False
    is_cnn = any(getattr(block, "is_conv", False) for block in getattr(trained, "blocks", []))
    return is_cnn and (samples == 0 or samples >= BACKGROUND_MIN_IMAGES)


def _worker(connection, checkpoint: str, meta: dict[str, Any], samples: int) -> None:
    try:
        import torch

        from export.collapse import collapse, integer_scores
        from hw.check.verify import load_test_set
        from quant_models.checkpoint import load_checkpoint

        torch.set_num_threads(1)  # the build has the other core
        trained, _ = load_checkpoint(checkpoint)
        plain, _ = collapse(trained, meta)
        images, _, _ = load_test_set(meta, samples)
        result: dict[str, Any] = {"digest": images_digest(images)}
        for level, model in (("pytorch_collapsed", plain), ("pytorch_trained", trained)):
            started = time.perf_counter()
            result[level] = (integer_scores(model, images), time.perf_counter() - started)
        connection.send(("ok", result))
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which then computes in-process
        connection.send(("error", f"{type(error).__name__}: {str(error)[:200]}"))
    finally:
        connection.close()


class PendingTorchLevels:
    """The second process; `result(images)` waits for it, `close()` stops it if it still runs."""

    def __init__(self, checkpoint: Path, meta: dict[str, Any], samples: int) -> None:
        context = multiprocessing.get_context("spawn")  # fork after torch's threads started is unsafe
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_worker, args=(send, str(checkpoint), meta, samples), daemon=True,
                                        name="onebit-pytorch-levels")
        self._process.start()
        send.close()
        self.error: str | None = None

    def result(self, images: np.ndarray) -> dict[str, tuple[np.ndarray, float]] | None:
        """{level: (scores, seconds)} for exactly these images, or None (the caller computes them)."""
        try:
            status, payload = self._receive.recv()
        except EOFError:
            self.error = "the process ended without a result"
            return None
        finally:
            self.close()
        if status != "ok":
            self.error = payload
            return None
        if payload.pop("digest") != images_digest(images):
            self.error = "it verified other images"
            return None
        return payload

    def close(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=10)
        self._receive.close()


def start_torch_levels(trained, checkpoint: Path, meta: dict[str, Any], samples: int) -> PendingTorchLevels | None:
    """The PyTorch levels started in a second process where that saves time (worth_a_second_process)."""
    if not worth_a_second_process(trained, samples):
        return None
    try:
        return PendingTorchLevels(checkpoint, meta, samples)
    except OSError:  # no process could be started: the levels run in-process later
        return None
