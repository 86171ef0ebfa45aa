"""Dataset loaders on small files written in the exact on-disk formats."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from onebit.errors import OnebitError
from quant_models.data import IDX_FILES, load_dataset, resolve_root, write_idx


def _write_idx_set(root: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    suffix = ".gz" if gz else ""
    images_name, labels_name = IDX_FILES[split]
    write_idx(root / f"{images_name}{suffix}", images)
    write_idx(root / f"{labels_name}{suffix}", labels)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_round_trip(tmp_path: Path, name: str, gz: bool) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    _write_idx_set(tmp_path, "test", images, labels, gz)
    # the header is the documented one: magic 0x803 then big-endian dims
    raw = (tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))).read_bytes()
    raw = gzip.decompress(raw) if gz else raw
    assert struct.unpack(">IIII", raw[:16]) == (0x803, 7, 28, 28)
    ds = load_dataset(name, "test", root=tmp_path)
    assert ds.images.dtype == np.uint8 and ds.images.shape == (7, 1, 28, 28)
    assert np.array_equal(ds.images[:, 0], images)
    assert ds.labels.dtype == np.int64 and np.array_equal(ds.labels, labels)
    assert len(ds.classes) == 10 and len(ds) == 7 and ds.in_shape == [1, 28, 28]


def test_idx_errors(tmp_path: Path) -> None:
    images = np.zeros((3, 4, 4), np.uint8)
    labels = np.zeros(3, np.uint8)
    with pytest.raises(OnebitError, match="t10k-images-idx3-ubyte.*missing"):
        load_dataset("mnist", "test", root=tmp_path)
    _write_idx_set(tmp_path, "test", images, labels, gz=False)
    # labels file with images magic
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((3, 1, 1), np.uint8))
    with pytest.raises(OnebitError, match="magic number 0x00000803, expected 0x00000801"):
        load_dataset("mnist", "test", root=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(OnebitError, match="3 images but.*2 labels"):
        load_dataset("mnist", "test", root=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels)
    good = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(good[:-5])
    with pytest.raises(OnebitError, match="truncated or corrupt"):
        load_dataset("mnist", "test", root=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(OnebitError, match="cannot read"):
        load_dataset("mnist", "test", root=tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(3, 12, np.uint8))
    with pytest.raises(OnebitError, match=r"labels must lie in 0\.\.9"):
        load_dataset("mnist", "test", root=tmp_path)


def _write_cifar_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": []}, f)


def test_cifar10_batches(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(2)
    batches = []
    for i in range(1, 6):
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, 2)]
        _write_cifar_batch(base / f"data_batch_{i}", data, labels)
        batches.append((data, labels))
    _write_cifar_batch(base / "test_batch", batches[0][0], batches[0][1])
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    train = load_dataset("cifar10", "train", root=tmp_path)
    assert train.images.shape == (10, 3, 32, 32) and train.images.dtype == np.uint8
    # channel-major rows: the first 1024 bytes are the red plane
    assert np.array_equal(train.images[0, 0].reshape(-1), batches[0][0][0, :1024])
    assert np.array_equal(train.images[3, 2].reshape(-1), batches[1][0][1, 2048:])
    assert train.labels.tolist() == sum((b[1] for b in batches), [])
    assert train.classes[:2] == ["c0", "c1"]
    test = load_dataset("cifar10", "test", root=base)  # the batches folder itself also works
    assert len(test) == 2


def test_cifar10_errors(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    with pytest.raises(OnebitError, match="test_batch is missing"):
        load_dataset("cifar10", "test", root=tmp_path)
    (base / "test_batch").write_text("hello")
    with pytest.raises(OnebitError, match="not a CIFAR-10 python batch"):
        load_dataset("cifar10", "test", root=tmp_path)
    with open(base / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(OnebitError, match=r"shape \(N, 3072\)"):
        load_dataset("cifar10", "test", root=tmp_path)
    with open(base / "test_batch", "wb") as f:
        pickle.dump(Path("/etc"), f)  # a class other than numpy's: refused, not instantiated
    with pytest.raises(OnebitError, match="refused to load: unpickling it would call pathlib"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_names_and_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OnebitError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet", "train", root=tmp_path)
    with pytest.raises(OnebitError, match="unknown split"):
        load_dataset("mnist", "valid", root=tmp_path)
    with pytest.raises(OnebitError, match="not a directory"):
        load_dataset("mnist", "test", root=tmp_path / "nope")
    (tmp_path / "mnist").mkdir()
    monkeypatch.setenv("ONEBIT_DATA", str(tmp_path))
    assert resolve_root("mnist") == tmp_path / "mnist"
