"""Your own image datasets: a folder of images per class (`folder:PATH`) or an `.npz` file (`npz:PATH`).

Both give what the built-in loaders give (quant_models/data.py): uint8 images (N, C, H, W) as raw pixels,
int64 labels and class names, so training, the build's verification and `onebit validate` take them
unchanged (`--dataset folder:PATH`, `--dataset npz:PATH`).

folder:PATH   PATH/train/<class>/*.png|jpg|... and PATH/test/<class>/... (torchvision's ImageFolder layout
              per split). Without train/ and test/ subfolders, PATH/<class>/... is split by a fixed rule:
              every 5th image of each class (sorted file names) is the test split. Images are read with
              Pillow; all must have one size; the set is grayscale (C=1) when every image is, else RGB (C=3).
              Class names are the folder names in sorted order (label = index), as ImageFolder does.
npz:PATH      `train_images`, `train_labels`, `test_images`, `test_labels`, or `images` and `labels` (split as
              above, every 5th sample is test); optional `classes` (names). Images uint8, N x C x H x W or
              N x H x W x C (C = 1 or 3; detected from where the 1/3 sits) or N x H x W (grayscale).

A checkpoint records the spec (absolute path) and a sha256 of each split's content (`content_hash`), so
a later build or validation that finds different bytes under the same path says so.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from onebit.errors import OnebitError

PREFIXES = ("folder:", "npz:")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
HOLDOUT_EVERY = 5  # without explicit splits, every 5th sample (per class for folders) is the test split
# Labels without class names make one name per integer up to the largest: bounded before anything is made
# (one label 10**9 grew to the whole machine's memory, issue 23). topologies.MAX_WIDTH bounds the classes too.
MAX_CLASSES = 1 << 16


def is_custom_spec(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIXES)


def normalize_spec(name: str) -> str:
    """`folder:rel/path` -> `folder:/abs/path` (what a checkpoint records); other names unchanged."""
    if not is_custom_spec(name):
        return name
    kind, _, path = name.partition(":")
    return f"{kind}:{Path(path).expanduser().resolve()}"


def load_custom(name: str, split: str, root: str | os.PathLike | None = None):
    """The ImageDataset of `split` for a `folder:` or `npz:` spec; `root` (--data-root) replaces its path."""
    from quant_models.data import ImageDataset

    kind, _, path_text = name.partition(":")
    path = Path(root if root is not None else path_text).expanduser()
    if not path_text and root is None:
        raise OnebitError(f"dataset spec {name!r} has no path; write {kind}:PATH")
    if kind == "folder":
        images, labels, classes = _load_folder(path, split)
    else:
        images, labels, classes = _load_npz(path, split)
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise OnebitError(f"{path}: labels must lie in 0..{len(classes) - 1} ({len(classes)} classes), "
                          f"found {labels.min()}..{labels.max()}; fix the labels or add class names")
    if not len(labels):
        raise OnebitError(f"{path}: the {split} split has no images; add some (or use a dataset with both splits)")
    spec = f"{kind}:{path.resolve()}"
    return ImageDataset(spec, split, np.ascontiguousarray(images), labels, classes, str(path.resolve()))


def content_hash(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of a split's pixels, shape and labels: the same bytes give the same hash on any machine."""
    digest = hashlib.sha256()
    digest.update(repr(tuple(int(v) for v in images.shape)).encode())
    digest.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def holdout_mask(labels: np.ndarray) -> np.ndarray:
    """True for the test samples of an unsplit set: every HOLDOUT_EVERY-th sample of each class."""
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        mask[where[HOLDOUT_EVERY - 1::HOLDOUT_EVERY]] = True
    return mask


# ---------------------------------------------------------------------------------------------------
# folder of images per class

def _class_folders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _load_folder(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if not path.is_dir():
        raise OnebitError(f"dataset folder {path} does not exist; give folder:PATH with one subfolder per class")
    explicit = (path / "train").is_dir() and (path / "test").is_dir()
    base = path / split if explicit else path
    classes_dir = _class_folders(base)
    if not classes_dir:
        raise OnebitError(f"{base}: no class subfolders; put the images of each class in {base}/<class name>/")
    if explicit:  # the class list is the union over both splits, so labels agree between them
        names = sorted({p.name for s in ("train", "test") for p in _class_folders(path / s)})
    else:
        names = [p.name for p in classes_dir]
    files: list[Path] = []
    labels: list[int] = []
    for folder in classes_dir:
        found = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not found:
            import sys

            print(f"onebit: warning: class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); class "
                  f"{folder.name!r} has no {split} samples", file=sys.stderr)
        files += found
        labels += [names.index(folder.name)] * len(found)
    if not files:
        raise OnebitError(f"{base}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class subfolders")
    label_array = np.asarray(labels, dtype=np.int64)
    if not explicit:
        keep = holdout_mask(label_array) if split == "test" else ~holdout_mask(label_array)
        files = [f for f, k in zip(files, keep) if k]
        label_array = label_array[keep]
        if not files:
            raise OnebitError(f"{path}: too few images for a {split} split (every {HOLDOUT_EVERY}th image of a class "
                              "is test); add images or use train/ and test/ subfolders")
    return _read_images(files), label_array, names


def _read_images(files: list[Path]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    opened = []
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                opened.append(image.copy())
        except Image.DecompressionBombError as error:  # Pillow's guard against a small file of huge pixels
            raise OnebitError(f"{file}: too many pixels ({error}); resize the image") from None
        except (OSError, UnidentifiedImageError) as error:
            raise OnebitError(f"{file}: not a readable image ({error}); remove or replace it") from None
    # Grayscale (C=1) when every image is: mode L and friends, or colour modes whose channels are equal
    # (gray PNGs saved as RGB); otherwise RGB (C=3). Alpha is dropped.
    for file, image in zip(files, opened):
        if image.mode in WIDE_MODES and not image.mode.startswith("I;16"):
            raise OnebitError(f"{file}: {WIDE_MODES[image.mode]} pixels (Pillow mode {image.mode}), which onebit cannot "
                              "map to 0..255 without knowing their range; save the image with 8 or 16 bits per pixel")
    grayscale = all(im.mode in ("1", "L", "I;16", "I;16B", "I;16L", "I;16N") or _is_gray(im) for im in opened)
    mode = "L" if grayscale else "RGB"
    size = opened[0].size
    arrays = []
    for file, image in zip(files, opened):
        if image.size != size:
            raise OnebitError(f"{file}: {image.size[0]}x{image.size[1]} pixels, but {files[0].name} has "
                              f"{size[0]}x{size[1]}; all images of a dataset must have one size (resize them first)")
        if image.mode.startswith("I;16"):
            # 16-bit pixels: Pillow's convert("L") clips them to {0, 255} (issue 23); scale 0..65535 to 0..255
            wide = np.asarray(image).astype(np.uint32)
            gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)
            array = gray if mode == "L" else np.repeat(gray[..., None], 3, axis=2)
        else:
            array = np.asarray(image.convert(mode), dtype=np.uint8)
        arrays.append(array[None] if mode == "L" else array.transpose(2, 0, 1))
    return np.stack(arrays)


# Pillow modes wider than 8 bits per channel: 16-bit ones are scaled, the others refused (their range is unknown)
WIDE_MODES = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I;16N": "16-bit", "I": "32-bit integer",
              "F": "32-bit float"}


def _is_gray(image) -> bool:
    rgb = np.asarray(image.convert("RGB"))
    return bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))


# ---------------------------------------------------------------------------------------------------
# .npz

def _load_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if not path.is_file():
        raise OnebitError(f"dataset file {path} does not exist; give npz:PATH of an .npz with images and labels")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as error:  # zipfile/ValueError/pickle refusal: all mean "not a plain npz"
        raise OnebitError(f"{path}: not a readable .npz of plain arrays ({type(error).__name__}: {error}); "
                          "save it with numpy.savez") from None
    classes = [str(c) for c in np.asarray(arrays["classes"]).ravel()] if "classes" in arrays else None
    for name in ("labels", "train_labels", "test_labels"):  # before any use: bounded, or names/masks explode
        if name in arrays:
            _check_labels(arrays[name], f"{path}[{name}]", classes)
    if f"{split}_images" in arrays and f"{split}_labels" in arrays:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        key = f"{split}_images"
    elif "images" in arrays and "labels" in arrays:
        images, labels, key = arrays["images"], arrays["labels"], "images"
        if len(images) == len(labels):
            mask = holdout_mask(np.asarray(labels).astype(np.int64))
            keep = mask if split == "test" else ~mask
            images, labels = images[keep], labels[keep]
    else:
        raise OnebitError(f"{path}: holds {sorted(arrays)}; expected 'images' and 'labels' (or "
                          "'train_images', 'train_labels', 'test_images', 'test_labels')")
    images = _as_nchw(np.asarray(images), f"{path}[{key}]")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise OnebitError(f"{path}: labels must be integers, one per image ({len(images)}), got {labels.dtype} "
                          f"{labels.shape}")
    labels = labels.astype(np.int64)
    if classes is None:
        every = [arrays[k] for k in ("labels", "train_labels", "test_labels") if k in arrays]
        count = int(max(int(np.max(v)) for v in every if np.size(v)) + 1) if any(np.size(v) for v in every) else 1
        classes = [str(i) for i in range(count)]
    return images, labels, classes


def _check_labels(labels: np.ndarray, where: str, classes: list[str] | None) -> None:
    """Integer labels in 0..classes-1 (0..MAX_CLASSES-1 without names), compared as Python ints (uint64 2**63
    would wrap to a negative int64)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise OnebitError(f"{where}: labels must be a 1-D array of integers, got {labels.dtype} {labels.shape}")
    if not labels.size:
        return
    low, high = int(labels.min()), int(labels.max())
    limit = len(classes) if classes is not None else MAX_CLASSES
    if low < 0 or high >= limit:
        bad = high if high >= limit else low
        what = (f"{len(classes)} class names" if classes is not None else
                f"without a `classes` array at most {MAX_CLASSES:,} classes (MAX_CLASSES)")
        raise OnebitError(f"{where}: label {bad} (at index {int(np.flatnonzero(labels == bad)[0])}) is outside "
                          f"0..{limit - 1} ({what}); fix the labels")


def _as_nchw(images: np.ndarray, where: str) -> np.ndarray:
    if images.dtype != np.uint8:
        raise OnebitError(f"{where}: images must be uint8 raw pixels 0..255, got {images.dtype}; convert with "
                          "(x * 255).round().astype(numpy.uint8) if they are floats in [0, 1]")
    if images.ndim == 3:
        return images[:, None]
    if images.ndim != 4:
        raise OnebitError(f"{where}: images must be N x C x H x W, N x H x W x C or N x H x W, got shape "
                          f"{images.shape}")
    channels_first, channels_last = images.shape[1] in (1, 3), images.shape[3] in (1, 3)
    if channels_last and not channels_first:
        return images.transpose(0, 3, 1, 2)
    if channels_first:
        return images
    raise OnebitError(f"{where}: cannot tell the channel axis of shape {images.shape} (neither axis 1 nor axis 3 "
                      "is 1 or 3); store N x C x H x W with C = 1 or 3")


def check_classes_fit(labels: np.ndarray, outputs: int | None, name: str) -> None:
    """OnebitError when a dataset's labels reach past the model's `outputs` classes (checked before any work:
    it was an IndexError after the whole comparison had run, issue 23)."""
    if outputs and np.size(labels) and int(np.max(labels)) >= int(outputs):
        raise OnebitError(f"dataset {name} has labels up to {int(np.max(labels))}, but the model has {outputs} "
                          f"classes; pass a dataset with at most {outputs} classes (the one it was trained on)")


def content_warning(dataset, recorded: dict | None) -> str | None:
    """A one-line warning when `dataset` (an ImageDataset split) is not the content a checkpoint recorded."""
    expected = (recorded or {}).get(dataset.split)
    if not expected:
        return None
    found = content_hash(dataset.images, dataset.labels)
    if found == expected:
        return None
    return (f"warning: dataset {dataset.name} {dataset.split} split is not what the model was trained with "
            f"(sha256 {found[:12]} != recorded {expected[:12]}); results are on the data found now")


def with_dataset(meta: dict, dataset: str | None) -> dict:
    """`meta` with its dataset replaced by `dataset` (--dataset on build/validate); unchanged when None."""
    if not dataset:
        return meta
    recorded = dict(meta.get("dataset") or {})
    spec = normalize_spec(dataset)
    if spec != recorded.get("name"):
        recorded = {**{k: v for k, v in recorded.items() if k not in ("sha256", "root")}, "name": spec}
    return {**meta, "dataset": recorded}
