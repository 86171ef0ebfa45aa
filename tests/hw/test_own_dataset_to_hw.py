"""Your own data end to end: a folder of PNGs per class and an .npz (NHWC RGB), each written here, through
`quant_models.train --dataset folder:PATH|npz:PATH` -> `export/to_finn.py model.pt` (finds the data from the
checkpoint, 0 mismatches at every level) -> `onebit validate` (accelerator model, 0 mismatches)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.to_finn import main as to_finn_main
from hw.check.validate import main as validate_main
from quant_models.checkpoint import read_checkpoint
from quant_models.train import main as train_main


def _images(rng: np.random.Generator, n: int, shape: tuple[int, ...], classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images whose brightness pattern depends on the class, so training has something to learn."""
    labels = np.arange(n) % classes
    base = np.linspace(0, 255, classes)[labels][:, None, None, None]
    images = np.clip(base + rng.normal(0, 40, (n, *shape)), 0, 255).astype(np.uint8)
    return images, labels


def _folder_dataset(root: Path) -> str:
    rng = np.random.default_rng(0)
    for split, n in (("train", 90), ("test", 30)):
        images, labels = _images(rng, n, (1, 12, 12), 3)
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / f"class_{'abc'[label]}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0]).save(folder / f"{i:03d}.png")
    return f"folder:{root}"


def _npz_dataset(root: Path) -> str:
    rng = np.random.default_rng(1)
    images, labels = _images(rng, 150, (3, 8, 8), 4)
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "data.npz", images=images.transpose(0, 2, 3, 1), labels=labels,
             classes=np.array(["w", "x", "y", "z"]))  # NHWC, split by the 1-in-5 hold-out
    return f"npz:{root / 'data.npz'}"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "npz"])
def test_own_dataset_trains_builds_and_validates(kind: str, tmp_path: Path, capsys) -> None:
    spec = _folder_dataset(tmp_path / "data") if kind == "folder" else _npz_dataset(tmp_path / "data")
    checkpoint, build = tmp_path / "model.pt", tmp_path / "build"
    assert train_main(["--model", "tfc", "--dataset", spec, "--arch", "hidden=[16,16]", "--epochs", "1",
                       "--batch-size", "20", "--quiet", "--out", str(checkpoint)]) == 0
    dataset = read_checkpoint(checkpoint)["dataset"]
    assert dataset["name"] == f"{kind}:{Path(spec.split(':', 1)[1]).resolve()}"
    assert set(dataset["sha256"]) == {"train", "test"} and all(len(h) == 64 for h in dataset["sha256"].values())
    assert to_finn_main([str(checkpoint), "--out", str(build), "--verify-samples", "0", "--no-progress"]) == 0
    report = json.loads((build / "report.json").read_text())
    verification = report["verification"]
    test_size = 30 if kind == "folder" else 4 * 7  # npz: every 5th of each class's 37-38 images is test
    assert verification["ok"] and verification["samples"] == test_size and verification["dataset"] == dataset["name"]
    for name, level in verification["levels"].items():
        assert level["executed"] and level["integer_mismatches"] == 0, name
    capsys.readouterr()
    assert validate_main([str(build), "--backend", "model"]) == 0
    validation = json.loads((build / "validation" / "validation.json").read_text())
    assert validation["samples"] == test_size and validation["mismatches"] == 0
    assert "not what the model was trained with" not in capsys.readouterr().out


def test_build_dataset_of_another_image_shape_is_refused(tmp_path: Path) -> None:
    from hw.check.verify import VerificationError, load_test_set
    from quant_models.custom_data import with_dataset

    spec = _npz_dataset(tmp_path)  # 3 x 8 x 8
    meta = {"arch": {"in_shape": [1, 28, 28]}, "dataset": {"name": "fashion-mnist", "sha256": {"test": "0" * 64}}}
    with pytest.raises(VerificationError, match=r"has images \[3, 8, 8\], the model takes \[1, 28, 28\]"):
        load_test_set(with_dataset(meta, spec), 10)
    images, labels, name = load_test_set(with_dataset({**meta, "arch": {"in_shape": [3, 8, 8]}}, spec), 10)
    assert images.shape == (10, 3, 8, 8) and name == spec.replace(spec.split(":", 1)[1],
                                                                   str(Path(spec.split(":", 1)[1]).resolve()))
