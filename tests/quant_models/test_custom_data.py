"""Your own datasets: folder:PATH (Pillow, a folder per class) and npz:PATH (images + labels), written here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onebit.errors import OnebitError
from quant_models.custom_data import content_hash, content_warning, with_dataset
from quant_models.data import load_dataset


def _write_folder(root: Path, images: np.ndarray, labels: np.ndarray, names: list[str], fmt: str = "png") -> None:
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        Image.fromarray(pixels).save(folder / f"{index:04d}.{fmt}")


def test_folder_with_splits_reads_pixels_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = ["cat", "dog", "emu"]
    written = {}
    for split, n in (("train", 12), ("test", 6)):
        written[split] = rng.integers(0, 256, (n, 3, 5, 7), dtype=np.uint8), np.arange(n) % 3
        _write_folder(tmp_path / split, *written[split], names)
    for split, (images, labels) in written.items():
        n = len(labels)
        data = load_dataset(f"folder:{tmp_path}", split)
        assert data.images.shape == (n, 3, 5, 7) and data.images.dtype == np.uint8
        assert data.classes == names and data.name == f"folder:{tmp_path.resolve()}"
        # files are read class by class in sorted order: compare as sets of (image, label)
        expected = sorted((labels[i], images[i].tobytes()) for i in range(n))
        assert sorted((int(data.labels[i]), data.images[i].tobytes()) for i in range(n)) == expected


def test_folder_without_splits_holds_out_every_fifth_grayscale(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (20, 1, 6, 6), dtype=np.uint8)
    labels = np.repeat([0, 1], 10)
    _write_folder(tmp_path, images, labels, ["a", "b"])
    train, test = load_dataset(f"folder:{tmp_path}", "train"), load_dataset(f"folder:{tmp_path}", "test")
    assert len(train) == 16 and len(test) == 4 and train.in_shape == [1, 6, 6]
    assert set(map(bytes, (im.tobytes() for im in np.concatenate([train.images, test.images])))) == \
        set(im.tobytes() for im in images)
    # one image of another size is refused, naming it
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "a" / "odd.png")
    with pytest.raises(OnebitError, match="odd.png: 3x3 pixels"):
        load_dataset(f"folder:{tmp_path}", "train")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NHW"])
def test_npz_layouts_and_splits(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(2)
    # 20 samples: 5 per class, so every class has its 5th in the test split (an empty split is refused)
    nchw = rng.integers(0, 256, (20, 3 if layout != "NHW" else 1, 8, 9), dtype=np.uint8)
    stored = {"NCHW": nchw, "NHWC": nchw.transpose(0, 2, 3, 1), "NHW": nchw[:, 0]}[layout]
    labels = np.arange(20) % 4
    np.savez(tmp_path / "d.npz", images=stored, labels=labels, classes=np.array(["w", "x", "y", "z"]))
    train, test = load_dataset(f"npz:{tmp_path / 'd.npz'}", "train"), load_dataset(f"npz:{tmp_path / 'd.npz'}", "test")
    assert train.images.shape[1:] == nchw.shape[1:] and len(train) + len(test) == 20 and len(test) == 4
    assert train.classes == ["w", "x", "y", "z"]
    # the held-out test samples are the 5th of each class (indices 16..19 for classes 0..3 in order)
    held = [i for c in range(4) for i in np.flatnonzero(labels == c)[4::5]]
    assert np.array_equal(test.images, nchw[held]) and np.array_equal(test.labels, labels[held])


def test_npz_explicit_splits_and_errors(tmp_path: Path) -> None:
    images = np.zeros((4, 1, 4, 4), np.uint8)
    np.savez(tmp_path / "s.npz", train_images=images, train_labels=np.array([0, 1, 0, 1]),
             test_images=images[:2] + 7, test_labels=np.array([1, 0]))
    test = load_dataset(f"npz:{tmp_path / 's.npz'}", "test")
    assert len(test) == 2 and int(test.images.max()) == 7 and test.classes == ["0", "1"]
    np.savez(tmp_path / "f.npz", images=np.zeros((4, 4, 4), np.float32), labels=np.zeros(4, int))
    with pytest.raises(OnebitError, match="must be uint8"):
        load_dataset(f"npz:{tmp_path / 'f.npz'}", "train")
    with pytest.raises(OnebitError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}", "train")


def test_content_hash_detects_changed_data(tmp_path: Path) -> None:
    images = np.zeros((5, 1, 4, 4), np.uint8)
    np.savez(tmp_path / "d.npz", test_images=images, test_labels=np.zeros(5, int),
             train_images=images, train_labels=np.zeros(5, int))
    test = load_dataset(f"npz:{tmp_path / 'd.npz'}", "test")
    recorded = {"test": content_hash(test.images, test.labels)}
    assert content_warning(test, recorded) is None
    np.savez(tmp_path / "d.npz", test_images=images + 1, test_labels=np.zeros(5, int),
             train_images=images, train_labels=np.zeros(5, int))
    assert "not what the model was trained with" in content_warning(load_dataset(f"npz:{tmp_path / 'd.npz'}", "test"),
                                                                   recorded)
    meta = {"dataset": {"name": "mnist", "sha256": recorded}}
    assert with_dataset(meta, f"npz:{tmp_path / 'd.npz'}")["dataset"] == {"name": f"npz:{(tmp_path / 'd.npz').resolve()}"}
    assert with_dataset(meta, None) is meta
