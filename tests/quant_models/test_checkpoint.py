"""Checkpoint round trip and every documented error."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from onebit.errors import OnebitError
from quant_models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from quant_models.estimators import get_estimator
from quant_models.topologies import build_model

ARCH = {"name": "tfc", "in_shape": [1, 12, 12], "num_classes": 4, "hidden": [16, 16, 16]}
META = {"dataset": {"name": "synthetic", "preprocessing": {"input_bits": 8}}, "training": {"epochs": 0}, "metrics": {"test_accuracy": 0.5}}


def _trained_model(arch: dict = ARCH) -> torch.nn.Module:
    torch.manual_seed(3)
    model = build_model(arch, get_estimator("ste"))
    model.train()
    x = torch.randint(0, 256, (32, *model.arch["in_shape"])).float()
    model(x)  # moves BatchNorm running statistics away from their defaults
    with torch.no_grad():
        for block in model.blocks:
            block.bn.weight.uniform_(-1, 1)
            block.bn.bias.uniform_(-1, 1)
    return model.eval()


@pytest.mark.parametrize("arch", [ARCH, {"name": "cnv", "in_shape": [1, 28, 28], "num_classes": 3, "channels": [4, 4, 8, 8, 8, 8], "fc": [16]}])
def test_round_trip_identical_outputs(tmp_path: Path, arch: dict) -> None:
    model = _trained_model(arch)
    path = save_checkpoint(tmp_path / "model.pt", model, META)
    raw = torch.load(path, weights_only=True)  # plain types + tensors only
    assert raw["format"] == "onebit-checkpoint" and raw["arch"] == model.arch
    assert raw["estimator"] == {"name": "ste", "hparams": {"clip_weights": True}}
    loaded, meta = load_checkpoint(path)
    assert meta["metrics"] == META["metrics"] and "state_dict" not in meta
    assert not loaded.training
    x = torch.randint(0, 256, (20, *model.arch["in_shape"])).float()
    assert torch.equal(loaded.integer_scores(x), model.integer_scores(x))
    assert torch.equal(loaded(x), model(x))
    assert not list(tmp_path.glob(".*.tmp"))
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600


def test_missing_and_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(OnebitError, match="no such file"):
        load_checkpoint(tmp_path / "absent.pt")
    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(OnebitError, match="not a onebit checkpoint"):
        load_checkpoint(text)
    tensor_file = tmp_path / "tensor.pt"
    torch.save(torch.randn(3, 3), tensor_file)
    with pytest.raises(OnebitError, match="not a onebit checkpoint.*Tensor"):
        load_checkpoint(tensor_file)
    dict_file = tmp_path / "dict.pt"
    torch.save({"weights": torch.ones(2)}, dict_file)
    with pytest.raises(OnebitError, match="not a onebit checkpoint"):
        load_checkpoint(dict_file)
    with pytest.raises(OnebitError, match="is not a file"):
        load_checkpoint(tmp_path)


def _edited(tmp_path: Path, edit) -> Path:
    path = save_checkpoint(tmp_path / "model.pt", _trained_model(), META)
    data = torch.load(path, weights_only=True)
    edit(data)
    torch.save(data, path)
    return path


def test_unknown_architecture_and_estimator(tmp_path: Path) -> None:
    path = _edited(tmp_path, lambda d: d["arch"].update(name="resnet50"))
    with pytest.raises(OnebitError, match="unknown architecture 'resnet50'"):
        load_checkpoint(path)
    path = _edited(tmp_path, lambda d: d["estimator"].update(name="magic"))
    with pytest.raises(OnebitError, match="unknown estimator 'magic'"):
        load_checkpoint(path)


def test_state_dict_that_does_not_fit(tmp_path: Path) -> None:
    path = _edited(tmp_path, lambda d: d["state_dict"].pop("blocks.1.bn.running_mean"))
    with pytest.raises(OnebitError, match="missing blocks.1.bn.running_mean"):
        load_checkpoint(path)
    path = _edited(tmp_path, lambda d: d["state_dict"].update({"blocks.9.weight": torch.ones(1)}))
    with pytest.raises(OnebitError, match="unexpected blocks.9.weight"):
        load_checkpoint(path)
    path = _edited(tmp_path, lambda d: d["arch"].update(hidden=[16, 32, 16]))
    with pytest.raises(OnebitError, match=r"wrong shape blocks.1.weight_layer.weight \(16, 16\) vs \(32, 16\)"):
        load_checkpoint(path)


def test_newer_version_refused(tmp_path: Path) -> None:
    path = _edited(tmp_path, lambda d: d.update(version=99))
    with pytest.raises(OnebitError, match="newer"):
        read_checkpoint(path)


def test_not_a_checkpoint_message_keeps_whole_words_and_points_onnx_to_its_door(tmp_path) -> None:
    from quant_models.checkpoint import read_checkpoint

    onnx_bytes = tmp_path / "TFC_1W1A.bin"
    onnx_bytes.write_bytes(b"\x08\x08\x12\x07pytorch" + b"x" * 300)  # what an ONNX file starts with
    with pytest.raises(OnebitError) as info:
        read_checkpoint(onnx_bytes)
    message = str(info.value)
    assert "onebit build model.onnx" in message
    failed = message.split("torch.load failed: ", 1)[1].split(")", 1)[0]
    assert len(failed) <= 124 and (failed.endswith(" ...") or len(failed) < 120)
