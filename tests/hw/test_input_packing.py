"""Binary-input networks (`--input-bits 1`): the unfoldable pixel threshold and bit-packed host input.

Packing order against FINN's and finn-plus-driver's packing, the host threshold against the trained
model's input quantizer on all 256 pixel values, and real TFC builds on Fashion-MNIST (a tiny training
run, ~10-20 s per build): packed input reaches the I/O bound of 13 cycles on Pynq-Z1 (104 B per image),
byte input the 98-cycle bound with an unfolded Thresholding layer, and every level agrees.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hw.driver import packing
from hw.driver.input_packing import pack_images, threshold_images

fpd_packing = pytest.importorskip("finn_plus_driver.packing")
from qonnx.core.datatype import DataType  # noqa: E402

PACKING = {"thresholds": [128], "pixels": 784, "bits": 832}


@pytest.mark.parametrize("simd", [64, 32, 8, 26, 13])
def test_pack_images_is_finn_and_finn_plus_driver_stream_order(simd: int) -> None:
    rng = np.random.default_rng(simd)
    images = rng.integers(0, 256, size=(5, 1, 28, 28), dtype=np.uint8)
    folded_shape = (1, 832 // simd, simd)
    ours = pack_images(images, PACKING, folded_shape)
    bits = threshold_images(images, PACKING).reshape(5, *folded_shape[1:]).astype(np.float32)
    fpd = fpd_packing.finnpy_to_packed_bytearray(bits, DataType["BINARY"], reverse_inner=True, reverse_endian=True)
    assert ours.shape == (5, 832 // simd, (simd + 7) // 8)
    np.testing.assert_array_equal(ours, fpd)
    np.testing.assert_array_equal(ours, packing.pack(bits, "BINARY"))
    if simd % 8 == 0:  # whole-byte words: the stream is numpy's little-order packbits of the padded vector
        flat = np.concatenate([(images >= 128).reshape(5, 784), np.zeros((5, 48), bool)], axis=1)
        np.testing.assert_array_equal(ours.reshape(5, -1), np.packbits(flat, axis=-1, bitorder="little"))


def test_host_threshold_equals_the_trained_input_quantizer_on_every_pixel_value() -> None:
    from quant_models.topologies import InputQuant

    values = np.arange(256, dtype=np.uint8).reshape(256, 1, 1, 1)
    quant = InputQuant(1).eval()
    with torch.no_grad():
        q = quant(torch.from_numpy(values.astype(np.float32)))
    want = (getattr(q, "value", q).numpy().reshape(256) > 0).astype(np.uint8)
    got = threshold_images(values, {"thresholds": [128], "pixels": 1, "bits": 1}).reshape(256)
    np.testing.assert_array_equal(got, want)
    assert want[127] == 0 and want[128] == 1  # the boundary is where an off-by-one would hide


def test_per_channel_thresholds_and_padding() -> None:
    images = np.array([[[[10, 200]], [[10, 200]]]], dtype=np.uint8)  # (1, 2, 1, 2)
    bits = threshold_images(images, {"thresholds": [5, 100], "pixels": 4, "bits": 8})
    np.testing.assert_array_equal(bits, [[1, 1, 0, 1, 0, 0, 0, 0]])


# ---------------------------------------------------------------------------------------------------
# real builds

@pytest.fixture(scope="module")
def binary_tfc(tmp_path_factory) -> Path:
    from quant_models.train import main as train_main

    checkpoint = tmp_path_factory.mktemp("binary_tfc") / "tfc1.pt"
    assert train_main(["--model", "tfc", "--dataset", "fashion-mnist", "--epochs", "1", "--limit-train", "2000",
                       "--limit-test", "200", "--seed", "0", "--input-bits", "1", "--out", str(checkpoint),
                       "--quiet"]) == 0
    return checkpoint


def _build(checkpoint: Path, out: Path, *extra: str) -> dict:
    from hw.pipeline import main as build_main

    code = build_main([str(checkpoint), "--out", str(out), "--verify-samples", "300", "--no-progress", *extra])
    report = json.loads((out / "report.json").read_text())
    assert code == (0 if report["verification"]["ok"] else 1)
    return report


@pytest.fixture(scope="module")
def packed_build(binary_tfc: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "build"
    _build(binary_tfc, out)  # default --input-packing auto: host for a binary-input MLP
    return out


def test_packed_tfc_reaches_the_port_bound_and_every_level_agrees(packed_build: Path) -> None:
    report = json.loads((packed_build / "report.json").read_text())
    assert report["verification"]["ok"]
    levels = report["verification"]["levels"]
    host = levels["host_input_packing"]
    assert host["executed"] and host["integer_mismatches"] == 0 and host["samples"] == 300
    assert host["pixel_values_checked"] == 256 and host["bytes_per_image"] == 104
    for name in ("pytorch_collapsed", "qonnx", "finn_streamlined", "finn_hw_layers"):
        assert levels[name]["executed"] and levels[name]["integer_mismatches"] == 0, name
    # no Thresholding in the accelerator: the first MVAU reads the packed bits
    assert [row["op_type"] for row in report["layers"][:2]] == ["IODMA_hls", "MVAU_hls"]
    assert report["io_bound"]["cycles"] == 13 and report["bottleneck"]["cycles"] == 13  # 832 bits / 64-bit port
    assert report["estimate"]["fps"] >= 7.5e6
    assert report["resources"]["total"]["LUT"] <= 0.8 * report["board"]["lut"]
    spec = json.loads((packed_build / "driver" / "io.json").read_text())["input"]
    assert spec["finn_datatype"] == "BINARY" and spec["shape_normal"] == [1, 832]
    assert spec["onebit_input_packing"]["thresholds"] == [128] and spec["onebit_input_packing"]["pixels"] == 784
    packing = report["input_packing"]
    assert packing["bytes_per_image"] == 104 and packing["accelerator_fps"] == report["estimate"]["fps"]
    assert packing["host_images_per_s"] > 0
    assert packing["limits_unpacked_images"] == ("host" if packing["host_images_per_s"] < packing["accelerator_fps"]
                                                 else "accelerator")
    assert "Bit-packed input" in (packed_build / "report.md").read_text()


def test_packed_driver_execute_and_execute_packed_agree_with_the_model(packed_build: Path) -> None:
    from hw.check.accel_model import AcceleratorModel
    from hw.driver.accelerator import Accelerator
    from hw.driver.io_spec import DriverError

    driver = Accelerator(packed_build / "driver" / "io.json", backend="model",
                         model=AcceleratorModel.from_build(packed_build), batch_size=64)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(100, 1, 28, 28), dtype=np.uint8)
    packed = driver.pack_images(images)
    assert packed.shape == (100, 13, 8) and packed.dtype == np.uint8
    np.testing.assert_array_equal(driver.execute_packed(packed), driver.execute(images))
    with pytest.raises(DriverError, match="pack_images"):
        driver.execute_packed(images.reshape(100, -1))


def test_host_input_level_fails_on_a_wrong_threshold(packed_build: Path, tmp_path: Path) -> None:
    from hw.check.host_input import check_host_input
    from hw.check.verify import load_test_set
    from quant_models.checkpoint import load_checkpoint

    trained, meta = load_checkpoint(packed_build / "model.pt")
    images, _, _ = load_test_set(meta, 50)
    copy = tmp_path / "build"
    shutil.copytree(packed_build / "driver", copy / "driver")
    assert check_host_input(trained, copy, images)["integer_mismatches"] == 0
    io = json.loads((copy / "driver" / "io.json").read_text())
    io["input"]["onebit_input_packing"]["thresholds"] = [129]  # off by one: pixel 128 would read 0
    (copy / "driver" / "io.json").write_text(json.dumps(io))
    entry = check_host_input(trained, copy, images)
    assert entry["pixel_value_mismatches"] == [128] and entry["integer_mismatches"] >= 1


def test_byte_input_thresholding_unfolds_to_the_dma_bound(binary_tfc: Path, tmp_path: Path) -> None:
    report = _build(binary_tfc, tmp_path / "bytes", "--input-packing", "none", "--levels", "none")
    assert report["verification"]["ok"] and "host_input_packing" not in report["verification"]["levels"]
    thresholding = [row for row in report["layers"] if row["op_type"].startswith("Thresholding")]
    assert len(thresholding) == 1 and thresholding[0]["PE"] > 1  # 784 threshold channels, not 1
    assert report["io_bound"]["cycles"] == 98 and report["bottleneck"]["cycles"] == 98


def test_input_packing_host_is_refused_for_a_pixel_input_model(tfc_build: Path, tmp_path: Path, capsys) -> None:
    from hw.pipeline import main as build_main

    code = build_main([str(tfc_build / "model.pt"), "--out", str(tmp_path / "b"), "--input-packing", "host",
                       "--levels", "none", "--no-progress", "--verify-samples", "20"])
    assert code == 2 and "--input-packing host needs a binary-input MLP" in capsys.readouterr().err


def test_board_notebooks_run_on_the_packed_build(packed_build: Path) -> None:
    """The deployment package's notebooks, as a board user opens them (backend auto = the model off-board)."""
    import os

    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    notebooks = packed_build / "deploy" / "notebooks"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEBIT_") and k != "MPLBACKEND"}
    env["ONEBIT_N"] = "64"
    env["ONEBIT_REPO"] = str(Path(__file__).resolve().parents[2])  # this checkout's onebit for backend "model"
    texts = {}
    for name in ("1_classify.ipynb", "2_validate.ipynb", "3_throughput.ipynb"):
        notebook = nbformat.read(notebooks / name, as_version=4)
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(notebooks)}}).execute(env=env)
        texts[name] = "\n".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                                for out in cell.get("outputs", []) if out.get("output_type") == "stream")
    assert "integer score mismatches:    0" in texts["2_validate.ipynb"]
    assert "bit-exact: all 64 samples" in texts["2_validate.ipynb"]
    assert "   <- predicted" in texts["1_classify.ipynb"]
    assert "\n    64 " in "\n" + texts["3_throughput.ipynb"]


def test_driver_refuses_an_io_json_whose_packing_does_not_fill_the_input(packed_build: Path) -> None:
    from hw.driver.io_spec import DriverError, IOSpec

    data = json.loads((packed_build / "driver" / "io.json").read_text())
    IOSpec(data)  # the build's own is accepted
    data["input"]["onebit_input_packing"]["bits"] = 784  # 832 BINARY values on the stream
    with pytest.raises(DriverError, match="input packing"):
        IOSpec(data)
