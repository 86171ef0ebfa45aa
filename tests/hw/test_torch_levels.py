"""The PyTorch levels computed in a second process during the FINN build (hw/check/torch_levels.py): the same
scores as in-process, used only for the very images the parent verifies, and never for an MLP."""
from __future__ import annotations

import numpy as np

from export.collapse import collapse, integer_scores
from hw.check.torch_levels import PendingTorchLevels, worth_a_second_process
from hw.check.verify import load_test_set
from quant_models.checkpoint import load_checkpoint


def test_second_process_scores_equal_in_process_ones_and_other_images_are_refused(cnv_build):
    checkpoint = cnv_build / "model.pt"
    trained, meta = load_checkpoint(checkpoint)
    plain, _ = collapse(trained, meta)
    images, _, _ = load_test_set(meta, 60)

    pending = PendingTorchLevels(checkpoint, meta, 60)
    ready = pending.result(images)
    assert ready is not None, pending.error
    assert np.array_equal(ready["pytorch_collapsed"][0], integer_scores(plain, images))
    assert np.array_equal(ready["pytorch_trained"][0], integer_scores(trained, images))
    assert all(seconds > 0 for _, seconds in ready.values())

    other = PendingTorchLevels(checkpoint, meta, 60)
    assert other.result(images[::-1].copy()) is None and other.error == "it verified other images"


def test_only_a_cnn_on_many_images_gets_a_second_process(cnv_build, tfc_build):
    cnn, _ = load_checkpoint(cnv_build / "model.pt")
    mlp, _ = load_checkpoint(tfc_build / "model.pt")
    assert worth_a_second_process(cnn, 0) and worth_a_second_process(cnn, 10_000)
    assert not worth_a_second_process(cnn, 200)
    assert not worth_a_second_process(mlp, 0)
