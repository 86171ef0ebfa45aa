"""Datasets as raw uint8 pixels: MNIST / Fashion-MNIST (idx files) and CIFAR-10 (python batches).

The model input is the dataset's bytes (docs/design.md §1), so loaders return uint8 (N, C, H, W)
images and do no normalisation. The file formats are simple and fixed, so they are parsed here with
numpy rather than pulling in torchvision (which would drag its own torch build into the environment).

Root resolution (first that applies): the `root` argument, `$ONEBIT_DATA/<name>`, the Debian package
path for Fashion-MNIST (`/usr/share/datasets/fashion-mnist`, package dataset-fashion-mnist), and
`~/.cache/onebit/<name>`, downloaded there if missing and a network is reachable.
"""
from __future__ import annotations

import gzip
import math
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onebit.errors import OnebitError

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "cifar10")
SPLITS: tuple[str, ...] = ("train", "test")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

CLASS_NAMES: dict[str, list[str]] = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}

IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_FILES: dict[str, list[str]] = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

DOWNLOAD_URLS: dict[str, list[str]] = {
    "mnist": [f"https://ossci-datasets.s3.amazonaws.com/mnist/{f}.gz" for pair in IDX_FILES.values() for f in pair],
    "fashion-mnist": [
        f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{f}.gz" for pair in IDX_FILES.values() for f in pair
    ],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"],
}

IDX_MAGIC_IMAGES = 0x00000803  # unsigned byte, 3 dimensions
IDX_MAGIC_LABELS = 0x00000801  # unsigned byte, 1 dimension


@dataclass
class ImageDataset:
    """uint8 images (N, C, H, W), int64 labels (N,), class names, and where they came from."""

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    root: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def in_shape(self) -> list[int]:
        return [int(v) for v in self.images.shape[1:]]

    def head(self, n: int | None) -> "ImageDataset":
        """The first n samples (all if n is None), e.g. for --limit-train."""
        if n is None or n >= len(self):
            return self
        return ImageDataset(self.name, self.split, self.images[:n], self.labels[:n], self.classes, self.root)


def load_dataset(name: str, split: str, root: str | os.PathLike | None = None) -> ImageDataset:
    """Load `split` ("train" or "test") of dataset `name` from `root` (resolved as the module says).

    `name` may also be your own data: `folder:PATH` or `npz:PATH` (quant_models/custom_data.py).
    """
    if split not in SPLITS:
        raise OnebitError(f"unknown split {split!r} for dataset {name}; use one of {', '.join(SPLITS)}")
    from quant_models.custom_data import is_custom_spec, load_custom

    if is_custom_spec(name):
        return load_custom(name, split, root)
    name = _check_name(name)
    directory = resolve_root(name, root)
    if name == "cifar10":
        images, labels, classes = _load_cifar10(directory, split)
    else:
        images_file, labels_file = IDX_FILES[split]
        images = read_idx(_find_idx(directory, images_file), IDX_MAGIC_IMAGES)
        labels = read_idx(_find_idx(directory, labels_file), IDX_MAGIC_LABELS)
        if images.shape[0] != labels.shape[0]:
            raise OnebitError(
                f"{directory}: {images_file} has {images.shape[0]} images but {labels_file} has "
                f"{labels.shape[0]} labels; the files are from different datasets or truncated"
            )
        images = images[:, None, :, :]
        labels = labels.astype(np.int64)
        classes = list(CLASS_NAMES[name])
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise OnebitError(
            f"{directory}: {name} {split} labels must lie in 0..{len(classes) - 1}, found {labels.min()}..{labels.max()}"
        )
    return ImageDataset(name, split, np.ascontiguousarray(images), labels, classes, str(directory))


def resolve_root(name: str, root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The directory holding dataset `name` (see the module docstring); downloads into the cache."""
    name = _check_name(name)
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise OnebitError(f"data root {path} for {name} is not a directory; pass an existing folder")
        return path
    env = os.environ.get("ONEBIT_DATA")
    if env:
        path = Path(env).expanduser() / name
        if path.is_dir():
            return path
    if name == "fashion-mnist" and DEBIAN_FASHION_MNIST.is_dir():
        return DEBIAN_FASHION_MNIST
    cache = Path.home() / ".cache" / "onebit" / name
    if _looks_complete(name, cache):
        return cache
    if not download:
        raise OnebitError(f"dataset {name} not found (looked in $ONEBIT_DATA/{name} and {cache}); pass --data-root")
    return download_dataset(name, cache)


def download_dataset(name: str, target: str | os.PathLike) -> Path:
    """Download `name` into `target` (atomic: a temporary folder renamed when complete)."""
    name = _check_name(name)
    target = Path(target).expanduser()
    if _looks_complete(name, target):
        return target
    if target.is_dir() and any(target.iterdir()):
        # an incomplete folder there is not onebit's (downloads land whole, by one rename): never remove it
        raise OnebitError(f"{target} holds an incomplete {name} (files missing); complete it, or move it away so "
                          "onebit can download the dataset there")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        for url in DOWNLOAD_URLS[name]:
            file = staging / url.rsplit("/", 1)[1]
            try:
                with urllib.request.urlopen(url, timeout=60) as response, open(file, "wb") as out:
                    shutil.copyfileobj(response, out)
            except OSError as error:
                hint = " or install Debian's dataset-fashion-mnist" if name == "fashion-mnist" else ""
                raise OnebitError(
                    f"cannot download {name} from {url} ({error}); copy the files into {target}, set "
                    f"$ONEBIT_DATA{hint}, or pass --data-root"
                ) from None
            if file.name.endswith(".tar.gz"):
                with tarfile.open(file) as archive:
                    archive.extractall(staging, filter="data")
                file.unlink()
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()  # empty: nothing to lose
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """An idx file (gzipped or not) of unsigned bytes as a numpy array of its declared shape."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise OnebitError(f"{path}: cannot read ({error}); re-download the dataset file") from None
    if len(raw) < 4:
        raise OnebitError(f"{path}: too short to be an idx file; re-download the dataset file")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        raise OnebitError(
            f"{path}: idx magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"({'images' if expected_magic == IDX_MAGIC_IMAGES else 'labels'}); not the right idx file"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise OnebitError(f"{path}: truncated idx header; re-download the dataset file")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = math.prod(shape)  # Python ints: numpy's int64 product wraps negative for a forged header
    if len(raw) - header != count:
        raise OnebitError(
            f"{path}: idx header declares shape {tuple(shape)} ({count} bytes) but the file holds "
            f"{len(raw) - header}; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file (gzipped if the name ends in .gz); used by tests and tools."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = struct.pack(">I", 0x00000800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles of dicts of numpy arrays; refuse any other class so that loading a
    dataset file cannot run arbitrary code."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) not in self._ALLOWED:
            raise _RefusedGlobal(f"unpickling it would call {module}.{name}")
        return super().find_class(module, name)


class _RefusedGlobal(pickle.UnpicklingError):
    """A global the file asks for that a CIFAR-10 batch never holds (told apart from a corrupt file)."""


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            obj = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
    except _RefusedGlobal as error:
        raise OnebitError(f"{path}: refused to load: {error} (a CIFAR-10 batch holds numpy arrays only; "
                          "unpickling stopped before anything ran); re-download cifar-10-python.tar.gz") from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError, pickle.UnpicklingError) as error:
        raise OnebitError(f"{path}: not a CIFAR-10 python batch ({error}); re-download cifar-10-python.tar.gz") from None
    if not isinstance(obj, dict):
        raise OnebitError(f"{path}: not a CIFAR-10 python batch (no dict inside); re-download the dataset")
    return obj


def _load_cifar10(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    base = directory / CIFAR_DIR if (directory / CIFAR_DIR).is_dir() else directory
    images, labels = [], []
    for file_name in CIFAR_FILES[split]:
        path = base / file_name
        if not path.is_file():
            raise OnebitError(
                f"{path} is missing; expected CIFAR-10 python batches ({', '.join(CIFAR_FILES[split])}) "
                f"in {base}"
            )
        batch = _unpickle(path)
        data, batch_labels = batch.get(b"data"), batch.get(b"labels")
        if data is None or batch_labels is None:
            raise OnebitError(f"{path}: CIFAR-10 batch without b'data'/b'labels' keys; re-download the dataset")
        data = np.asarray(data)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(batch_labels):
            raise OnebitError(
                f"{path}: b'data' must be uint8 of shape (N, 3072) matching {len(batch_labels)} labels, "
                f"got {data.dtype} {data.shape}"
            )
        images.append(data.reshape(-1, 3, 32, 32))  # stored channel-major: R plane, G plane, B plane
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    classes = list(CLASS_NAMES["cifar10"])
    meta = base / "batches.meta"
    if meta.is_file():
        names = _unpickle(meta).get(b"label_names")
        if names:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return np.concatenate(images), np.concatenate(labels), classes


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise OnebitError(f"{directory / stem}[.gz] is missing; put the idx files of the dataset into {directory}")


def _looks_complete(name: str, directory: Path) -> bool:
    if not directory.is_dir():
        return False
    if name == "cifar10":
        return (directory / CIFAR_DIR / "test_batch").is_file() or (directory / "test_batch").is_file()
    return all(
        (directory / stem).is_file() or (directory / f"{stem}.gz").is_file()
        for pair in IDX_FILES.values()
        for stem in pair
    )


def _check_name(name: str) -> str:
    key = name.lower().replace("_", "-")
    key = {"fashion": "fashion-mnist", "fmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(key, key)
    if key not in DATASETS:
        raise OnebitError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}, or your own as "
                          "folder:PATH (a folder per class) or npz:PATH (images + labels)")
    return key
