"""The self-describing `model.pt` (docs/design.md §2).

A checkpoint is a dict of plain types and tensors, so `torch.load(path, weights_only=True)` reads it
without unpickling code:

    {"format": "onebit-checkpoint", "version": 1,
     "arch": {...complete arch dict...}, "estimator": {"name": ..., "hparams": {...}},
     "dataset": {"name": ..., "preprocessing": {...}}, "training": {...}, "metrics": {...},
     "state_dict": {name: tensor}}

Loading rebuilds the model from `arch` and `estimator` and checks the state dict against it first, so a
mismatch names the offending keys instead of surfacing as a torch traceback.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from onebit.atomic import write_atomic
from onebit.errors import OnebitError
from quant_models.estimators import get_estimator
from quant_models.topologies import OnebitNet, build_model

FORMAT = "onebit-checkpoint"
VERSION = 1
META_KEYS: tuple[str, ...] = ("dataset", "training", "metrics")


def save_checkpoint(path: str | os.PathLike, model: OnebitNet, meta: dict[str, Any]) -> Path:
    """Write `model` with `meta` (keys dataset/training/metrics) to `path` atomically; returns the path.

    The arch and estimator come from the model itself (`model.arch`, `model.estimator`).
    """
    path = Path(path)
    unknown = sorted(set(meta) - set(META_KEYS))
    if unknown:
        raise OnebitError(f"checkpoint meta has unknown keys {unknown}; allowed: {', '.join(META_KEYS)}")
    check_finite(model.state_dict(), where=f"model to save as {path}")
    checkpoint: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "arch": _plain(model.arch, "arch"),
        "estimator": _plain(model.estimator.describe(), "estimator"),
        **{key: _plain(meta.get(key, {}), key) for key in META_KEYS},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    if not path.parent.is_dir():
        raise OnebitError(f"cannot write {path}: folder {path.parent} does not exist; create it first")
    return write_atomic(path, lambda tmp: torch.save(checkpoint, tmp))


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw checkpoint dict, validated as a onebit checkpoint (no model is built)."""
    path = Path(path)
    if not path.exists():
        raise OnebitError(f"{path}: no such file; give the model.pt written by `python -m quant_models.train`")
    if not path.is_file():
        raise OnebitError(f"{path} is not a file; give a model.pt checkpoint")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    # Arbitrary bytes make torch.load raise almost any exception type (IndexError for a text file).
    except Exception as error:  # noqa: BLE001
        raise OnebitError(_load_failure(path, error)) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        what = f"a {type(data).__name__}" if not isinstance(data, dict) else "a dict without format='onebit-checkpoint'"
        raise OnebitError(f"{path}: not a onebit checkpoint (it holds {what}); give a model.pt written by onebit")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise OnebitError(f"{path}: checkpoint version {version!r} is not a version number (a positive integer); "
                          "the file is damaged or was edited: retrain or re-save it")
    if version > VERSION:
        raise OnebitError(f"{path}: checkpoint version {version} is newer than this onebit reads ({VERSION}); update onebit")
    for key in ("arch", "estimator", "state_dict"):
        if not isinstance(data.get(key), dict):
            raise OnebitError(f"{path}: checkpoint has no '{key}' dict; the file is damaged, retrain or re-save it")
    hparams = data["estimator"].get("hparams", {})
    if not isinstance(hparams, dict) or not isinstance(data["estimator"].get("name"), str):
        raise OnebitError(f"{path}: estimator must be {{'name': str, 'hparams': dict}}, got name "
                          f"{type(data['estimator'].get('name')).__name__} and hparams {type(hparams).__name__}; "
                          "the file is damaged or was edited: retrain or re-save it")
    check_finite(data["state_dict"], where=str(path))
    return data


def _looks_like_onnx(path: Path) -> bool:
    """An ONNX protobuf starts with field 1 (ir_version, varint): byte 0x08."""
    try:
        with open(path, "rb") as handle:
            return handle.read(1) == b"\x08"
    except OSError:
        return False
def _load_failure(path: Path, error: Exception) -> str:
    """One line for a failed torch.load; a refused pickle names what it would have run."""
    import re

    text = str(error)
    refused = re.search(r"unsupported global:?\s*(?:GLOBAL\s+)?([\w.]+)", text, re.IGNORECASE)
    if refused:
        return (f"{path}: refused to load: unpickling it would call {refused.group(1)}, which a onebit checkpoint "
                "never holds (torch.load weights_only=True stopped it, nothing ran); give a model.pt written by onebit")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first_line = lines[0] if lines else type(error).__name__
    if len(first_line) > 120:  # whole words: a cut mid-word reads like a different word
        first_line = first_line[:120].rsplit(" ", 1)[0] + " ..."
    hint = ("; a QONNX model goes in as model.onnx: `onebit build model.onnx --input-scale ...` (README 'Bring "
            "your own model')" if path.suffix.lower() == ".onnx" or _looks_like_onnx(path) else
            "; give a model.pt written by onebit")
    return f"{path}: not a onebit checkpoint (torch.load failed: {first_line}){hint}"


def check_finite(state_dict: dict[str, Any], where: str = "checkpoint") -> None:
    """OnebitError naming the first tensor with NaN/Inf values, or a BatchNorm with a negative variance.

    A non-finite weight or BatchNorm statistic makes every threshold derived from it meaningless, yet
    the collapse and FINN would still build something; refuse it where it enters.
    """
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            kind = "NaN" if bool(torch.isnan(value).any()) else "Inf"
            raise OnebitError(f"{where}: tensor {name} holds {int(bad.sum())} non-finite value(s) ({kind}) of "
                              f"{value.numel()}; the training diverged (lower --lr) or the file was edited: retrain")
        if name.endswith("running_var") and bool((value < 0).any()):
            raise OnebitError(f"{where}: BatchNorm statistic {name} has negative variances; the file was edited "
                              "or damaged: retrain")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[OnebitNet, dict[str, Any]]:
    """(model in eval mode, meta) from a checkpoint; meta is the checkpoint dict without `state_dict`."""
    data = read_checkpoint(path)
    estimator_info = data["estimator"]
    try:
        estimator = get_estimator(str(estimator_info.get("name")), **recorded_hparams(estimator_info))
        model = build_model(data["arch"], estimator)
    except OnebitError as error:
        raise OnebitError(f"{path}: {error}") from None
    check_state_dict(model, data["state_dict"], where=str(path))
    model.load_state_dict(data["state_dict"], strict=True)
    model.to(device).eval()
    meta = {k: v for k, v in data.items() if k != "state_dict"}
    return model, meta


def recorded_hparams(estimator_info: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters a checkpoint's model was trained with: the recorded ones, plus the estimator's
    `hparam_legacy` value for any hyperparameter added after the checkpoint was written (its default
    may since have changed, e.g. Hyper-BinaryNet's linear layers)."""
    from quant_models.estimators import ESTIMATORS

    hparams = dict(estimator_info.get("hparams", {}))
    legacy = getattr(ESTIMATORS.get(str(estimator_info.get("name"))), "hparam_legacy", {})
    return {**{k: v for k, v in legacy.items() if k not in hparams}, **hparams}


def check_state_dict(model: nn.Module, state_dict: dict[str, Any], where: str = "checkpoint") -> None:
    """OnebitError naming missing, unexpected and wrong-shape keys, if `state_dict` does not fit `model`."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and (not isinstance(state_dict[k], torch.Tensor) or state_dict[k].shape != v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {_first(missing)}")
    if extra:
        problems.append(f"unexpected {_first(extra)}")
    if wrong:
        problems.append(f"wrong shape {_first(wrong)} (file vs architecture)")
    if problems:
        arch = getattr(model, "arch", {}).get("name", "model")
        raise OnebitError(
            f"{where}: state dict does not fit architecture {arch}: {'; '.join(problems)}; "
            "the weights belong to a different architecture or were edited"
        )


def _first(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _plain(value: Any, where: str) -> Any:
    """`value` converted to plain types (dict/list/str/int/float/bool/None) for a weights_only load."""
    # Exact builtin types: subclasses (torch.__version__ is a TorchVersion str) are refused by
    # the weights_only unpickler.
    if value is None:
        return None
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, np.generic):
        return _plain(value.item(), where)
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise OnebitError(f"checkpoint field {where} holds a {type(value).__name__}, which is not a plain type")
