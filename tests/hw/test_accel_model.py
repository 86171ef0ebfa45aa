"""The accelerator model is bit-exact: same integers as PyTorch and as FINN's Python execution of the
HW-layer graph, on real onebit builds (tiny-trained TFC-w1a1 and CNV-w1a1, tests/conftest.py)."""
from __future__ import annotations

import numpy as np
import pytest

from hw.check.accel_model import AcceleratorModel, final_model_path, finn_python_outputs
from hw.driver import Accelerator, IOSpec
from hw.check.validate import software_scores, validate_build
from onebit.errors import OnebitError
from quant_models.data import load_dataset


@pytest.fixture(scope="module")
def test_set():
    return load_dataset("fashion-mnist", "test")


def _driver(build) -> Accelerator:
    return Accelerator(IOSpec.load(build / "driver" / "io.json"), backend="model",
                       model=AcceleratorModel.from_build(build))


def _finn_python(build, images, spec):
    return finn_python_outputs(build, images, spec)


def test_tfc_every_test_image_equals_pytorch_and_finn(tfc_build, test_set):
    driver = _driver(tfc_build)
    prediction = driver.predict(test_set.images)           # all 10,000 images, through pack/unpack
    assert prediction.scores.shape == (10000, 10)
    np.testing.assert_array_equal(prediction.scores, software_scores(tfc_build, test_set.images))
    # The stream carries the popcount p of the score layer; FINN's HW graph computes the same p.
    np.testing.assert_array_equal(prediction.raw[:200], _finn_python(tfc_build, test_set.images[:200], driver.spec))
    assert driver.model.range_violations == {}


def test_cnv_2000_test_images_equal_pytorch_and_finn(cnv_build, test_set):
    driver = _driver(cnv_build)
    assert driver.spec.transpose == [0, 2, 3, 1] or driver.spec.transpose == (0, 2, 3, 1)
    images = test_set.images[:2000]
    prediction = driver.predict(images)
    np.testing.assert_array_equal(prediction.scores, software_scores(cnv_build, images))
    np.testing.assert_array_equal(prediction.raw[:5], _finn_python(cnv_build, images[:5], driver.spec))


def test_model_consumes_and_produces_dma_bytes(tfc_build, test_set):
    spec = IOSpec.load(tfc_build / "driver" / "io.json")
    model = AcceleratorModel.from_build(tfc_build)
    driver = Accelerator(spec, backend="model", model=model)
    packed = driver.fold_and_pack(test_set.images[:7])
    assert packed.dtype == np.uint8 and packed.shape == (7,) + spec.ishape_packed[1:]
    out = model.run(packed)
    assert out.dtype == np.uint8 and out.shape == (7,) + spec.oshape_packed[1:]
    with pytest.raises(OnebitError, match="uint8"):
        model.run(packed.astype(np.int16))


def test_one_flipped_weight_bit_is_reported_by_validation(tfc_build):
    model = AcceleratorModel.from_build(tfc_build)
    mvaus = [i for i, layer in enumerate(model.layers) if layer.op_type.startswith("MVAU")]
    model.flip_weight_bit(mvaus[-1], row=3, column=2)       # one weight of the score layer
    report = validate_build(tfc_build, limit=300, backend="model", accel_model=model, progress=False, write=False)
    assert report["mismatches"] > 0 and report["first_mismatches"][0] >= 0
    clean = validate_build(tfc_build, limit=300, backend="model", progress=False, write=False)
    assert clean["mismatches"] == 0


def test_unknown_node_type_is_refused(tfc_build):
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(final_model_path(tfc_build)))
    model.graph.node[1].op_type = "ChannelwiseOp_hls"  # a real FINN layer the model does not cover
    with pytest.raises(OnebitError, match="ChannelwiseOp_hls"):
        AcceleratorModel(model)


def test_missing_final_model_is_a_clear_error(tmp_path):
    with pytest.raises(OnebitError, match="no FINN model"):
        AcceleratorModel.from_file(tmp_path / "missing.onnx")
