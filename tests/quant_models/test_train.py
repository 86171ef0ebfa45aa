"""A tiny real training run through the CLI and the library function."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from quant_models.checkpoint import load_checkpoint
from quant_models.data import IDX_FILES, write_idx
from quant_models.train import TrainConfig, curve_path, evaluate, main, train
from quant_models.data import load_dataset


@pytest.fixture(scope="module")
def tiny_fmnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred real Fashion-MNIST images rewritten as a small idx dataset (or synthetic ones)."""
    root = tmp_path_factory.mktemp("fmnist")
    try:
        train_set = load_dataset("fashion-mnist", "train").head(400)
        test_set = load_dataset("fashion-mnist", "test").head(200)
        parts = {"train": train_set, "test": test_set}
        for split, ds in parts.items():
            write_idx(root / f"{IDX_FILES[split][0]}.gz", ds.images[:, 0])
            write_idx(root / f"{IDX_FILES[split][1]}.gz", ds.labels.astype(np.uint8))
    except Exception:  # no system dataset: class-dependent synthetic blobs are learnable too
        rng = np.random.default_rng(0)
        for split, n in (("train", 400), ("test", 200)):
            labels = rng.integers(0, 10, n).astype(np.uint8)
            images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
            for i, label in enumerate(labels):
                images[i, 2 * label : 2 * label + 6, :] = 250
            write_idx(root / f"{IDX_FILES[split][0]}.gz", images)
            write_idx(root / f"{IDX_FILES[split][1]}.gz", labels)
    return root


def test_cli_writes_loadable_checkpoint_and_png(tiny_fmnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    rc = main(["--model", "tfc", "--estimator", "ste", "--dataset", "fashion-mnist", "--data-root", str(tiny_fmnist),
               "--epochs", "2", "--batch-size", "50", "--out", str(out), "--quiet"])
    assert rc == 0
    assert out.is_file() and curve_path(out).is_file() and curve_path(out).read_bytes()[:4] == b"\x89PNG"
    model, meta = load_checkpoint(out)
    history = meta["metrics"]["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert meta["dataset"]["name"] == "fashion-mnist" and meta["arch"]["in_shape"] == [1, 28, 28]
    test_set = load_dataset("fashion-mnist", "test", root=tiny_fmnist)
    # the recorded accuracy is the loaded model's integer-score accuracy, and better than chance
    assert evaluate(model, test_set) == pytest.approx(meta["metrics"]["test_accuracy"])
    assert meta["metrics"]["test_accuracy"] > 0.3


def test_library_run_is_deterministic(tiny_fmnist: Path) -> None:
    config = TrainConfig(model="tfc", dataset="fashion-mnist", data_root=str(tiny_fmnist), epochs=1,
                         batch_size=100, limit_train=200, progress=False, arch_overrides={"hidden": [32, 32, 32]},
                         input_bits=1)
    model_a, meta_a = train(config)
    model_b, meta_b = train(config)
    for (k, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), k
    assert meta_a["metrics"]["history"][0]["train_loss"] == meta_b["metrics"]["history"][0]["train_loss"]
    assert model_a.arch["input_bits"] == 1 and meta_a["training"]["config"]["limit_train"] == 200


def test_cli_errors(tiny_fmnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--dataset", "fashion-mnist", "--data-root", str(tiny_fmnist), "--epochs", "1", "--quiet"]
    assert main(base + ["--estimator", "nope", "--out", str(tmp_path / "m.pt")]) == 2
    assert "onebit: unknown estimator 'nope'" in capsys.readouterr().err
    assert main(base + ["--hparam", "bogus=1", "--out", str(tmp_path / "m.pt")]) == 2
    assert "no hyperparameter bogus" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "no" / "dir" / "m.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(base + ["--model", "cnv", "--input-bits", "1", "--out", str(tmp_path / "m.pt")]) == 2
    assert "input_bits=8" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("method", ["ste", "irnet", "binaryduo", "rbonn", "hyper"])
def test_resumed_run_equals_uninterrupted_run(method: str, tiny_fmnist: Path, tmp_path: Path) -> None:
    """Stopped after epoch 2 of 4 (BinaryDuo: just before decoupling at epoch 3) and resumed from the state
    file, a run ends with the uninterrupted run's weights, bit for bit, and the same history."""
    base = dict(model="tfc", estimator=method, dataset="fashion-mnist", data_root=str(tiny_fmnist), epochs=4,
                batch_size=50, limit_train=200, limit_test=100, progress=False, arch_overrides={"hidden": [16, 16]})
    whole, whole_meta = train(TrainConfig(**base))
    state = tmp_path / "state.pt"
    out = tmp_path / "model.pt"
    part, part_meta = train(TrainConfig(**base, state=str(state), out=str(out), stop_after_epochs=2))
    assert not part_meta["training"]["complete"] and part_meta["training"]["epochs_done"] == 2
    assert state.is_file() and not out.exists()  # no checkpoint of an unfinished run
    resumed, meta = train(TrainConfig(**base, state=str(state), out=str(out)))
    assert meta["training"]["complete"] and out.is_file()
    assert resumed.arch == whole.arch
    for (key, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key
    strip = lambda h: [{k: v for k, v in e.items() if "second" not in k} for e in h]  # noqa: E731
    assert strip(meta["metrics"]["history"]) == strip(whole_meta["metrics"]["history"])
    # a finished state resumes to the same model without training again
    again, again_meta = train(TrainConfig(**base, state=str(state)))
    for (key, a), b in zip(resumed.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), key
    assert again_meta["training"]["steps"] == meta["training"]["steps"]


def test_state_of_other_settings_is_refused(tiny_fmnist: Path, tmp_path: Path) -> None:
    from onebit.errors import OnebitError

    base = dict(model="tfc", dataset="fashion-mnist", data_root=str(tiny_fmnist), epochs=2, batch_size=50,
                limit_train=100, limit_test=50, progress=False, arch_overrides={"hidden": [16]})
    state = tmp_path / "state.pt"
    train(TrainConfig(**base, state=str(state), stop_after_epochs=1))
    with pytest.raises(OnebitError, match="other settings .*seed"):
        train(TrainConfig(**base, seed=1, state=str(state)))
    state.write_bytes(b"not a state")
    with pytest.raises(OnebitError, match="not a onebit training state"):
        train(TrainConfig(**base, state=str(state)))
