"""Train a 1-bit model: `python -m quant_models.train --model tfc --estimator ste --dataset fashion-mnist
--epochs N --out model.pt`.

The library function `train(config)` does the work (benchmarks and other stages call it); `main` is the
command line around it. Adam with a per-step cosine learning-rate schedule; test accuracy is measured
every epoch on the integer scores (`OnebitNet.integer_scores`), i.e. what the accelerator computes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onebit import interrupts

interrupts.install()  # before torch/Brevitas imports, which can swallow a Ctrl-C (onebit/interrupts.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from onebit import faults
from onebit.atomic import save_figure_atomic
from onebit.buildfolder import clean_stale_temporaries_of
from onebit.errors import OnebitError, cli_errors
from quant_models.checkpoint import check_state_dict, save_checkpoint
from quant_models.data import ImageDataset, load_dataset
from quant_models.estimators import ESTIMATORS, get_estimator, parse_hparams
from quant_models.topologies import ARCHITECTURES, OnebitNet, build_model, complete_arch


@dataclass
class TrainConfig:
    """Everything a run depends on; recorded in the checkpoint under `training.config`."""

    model: str = "tfc"
    estimator: str = "ste"
    hparams: dict[str, Any] = field(default_factory=dict)
    arch_overrides: dict[str, Any] = field(default_factory=dict)
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    input_bits: int = 8
    epochs: int = 10
    batch_size: int = 100
    lr: float = 0.02  # bnn_pynq's Adam lr; measured 85.9% TFC Fashion-MNIST at 10 epochs (0.01: 85.3%)
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"
    limit_train: int | None = None
    limit_test: int | None = None
    out: str | None = None
    progress: bool = True


def train(config: TrainConfig) -> tuple[OnebitNet, dict[str, Any]]:
    """Train per `config`; save `config.out` (+ `<stem>.curve.png`) if set. Returns (model, meta)."""
    _check_config(config)
    device = _device(config.device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)

    train_set = load_dataset(config.dataset, "train", config.data_root).head(config.limit_train)
    test_set = load_dataset(config.dataset, "test", config.data_root).head(config.limit_test)
    estimator = get_estimator(config.estimator, **config.hparams)
    arch = complete_arch(
        {
            "name": config.model,
            "in_shape": train_set.in_shape,
            "num_classes": len(train_set.classes),
            "input_bits": config.input_bits,
            **config.arch_overrides,
        }
    )
    model = build_model(arch, estimator).to(device)

    train_x = torch.from_numpy(train_set.images)
    train_y = torch.from_numpy(train_set.labels)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    order_generator = torch.Generator().manual_seed(config.seed)
    optimizer = _optimizer(model, estimator, config)
    history: list[dict[str, Any]] = []
    step = 0
    started = time.perf_counter()
    for epoch in range(config.epochs):
        epoch_start = time.perf_counter()
        new_model = estimator.on_epoch_start(model, epoch, config.epochs)
        if new_model is not model:
            # e.g. BinaryDuo's decoupling: new parameters, so a new optimizer (Adam state restarts).
            model = new_model.to(device)
            optimizer = _optimizer(model, estimator, config)
        model.train()
        order = torch.randperm(len(train_set), generator=order_generator)
        loss_sum, correct, seen = 0.0, 0, 0
        batches = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not config.progress,
            leave=False,
            unit="batch",
        )
        for batch in batches:
            index = order[batch * config.batch_size : (batch + 1) * config.batch_size]
            x = train_x[index].to(device, torch.float32)
            y = train_y[index].to(device)
            _set_lr(optimizer, _cosine(step, total_steps))
            estimator.on_step_start(model, step, total_steps)
            scores = model(x)
            loss = nn.functional.cross_entropy(scores, y) + estimator.extra_loss(model)
            if not torch.isfinite(loss.detach()):
                raise OnebitError(
                    f"training stopped: the loss is {float(loss.detach())} at epoch {epoch + 1}, step {step + 1} "
                    f"(lr {config.lr}); lower --lr or check the data. Nothing was written"
                    + (f" ({config.out} is unchanged)" if config.out else ""))
            interrupts.check()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            estimator.on_step_end(model)
            step += 1
            loss_sum += loss.detach().item() * len(index)
            correct += int((scores.argmax(1) == y).sum())
            seen += len(index)
            if batch % 20 == 0:
                batches.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        train_seconds = time.perf_counter() - epoch_start
        test_accuracy = evaluate(model, test_set, device)
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "test_accuracy": test_accuracy,
            "lr": config.lr * _cosine(step - 1, total_steps),
            "seconds": time.perf_counter() - epoch_start,
            "train_seconds": train_seconds,
            "images_per_second": seen / max(train_seconds, 1e-9),
        }
        history.append(record)
        if config.progress:
            tqdm.write(
                f"epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.4f}  "
                f"train {record['train_accuracy']:.4f}  test {test_accuracy:.4f}  ({record['seconds']:.1f} s)",
                file=sys.stderr,
            )
    elapsed = time.perf_counter() - started

    interrupts.check()
    faults.point("train:before_save")
    model.arch = estimator.finalize_arch(model.arch)
    # The recorded arch must rebuild exactly this model, or the checkpoint would not load.
    check_state_dict(build_model(model.arch, get_estimator(config.estimator, **estimator.hparams)), model.state_dict(), where="final arch")
    model.eval()
    meta = {
        "dataset": {
            "name": train_set.name,
            # where the data came from when given explicitly (--data-root), so build/validate find it again
            "root": str(Path(config.data_root).expanduser().resolve()) if config.data_root else None,
            "classes": train_set.classes,
            "in_shape": train_set.in_shape,
            "num_train": len(train_set),
            "num_test": len(test_set),
            "preprocessing": {
                "input": "raw uint8 pixels as float32, N x C x H x W, no normalisation",
                "input_bits": model.arch["input_bits"],
                "input_offset": model.input_quant.offset,
            },
        },
        "training": {
            "config": {k: v for k, v in asdict(config).items() if k != "progress"},
            "optimizer": "Adam",
            "schedule": "cosine per step to 0",
            "steps": step,
            "seconds": elapsed,
            "torch": torch.__version__,
            "device": str(device),
        },
        "metrics": {
            "test_accuracy": history[-1]["test_accuracy"] if history else evaluate(model, test_set, device),
            "test_samples": len(test_set),
            "accuracy_on": "argmax of integer scores",
            "history": history,
        },
    }
    if config.out:
        out = save_checkpoint(config.out, model.cpu(), meta)
        plot_history(history, curve_path(out), title=f"{model.arch['name']}-w1a1 / {config.estimator} / {train_set.name}")
        model.to(device)
    return model, meta


@torch.no_grad()
def evaluate(model: OnebitNet, dataset: ImageDataset, device: torch.device | str = "cpu", batch_size: int = 1000) -> float:
    """Accuracy of the argmax of the integer scores over `dataset`."""
    model.eval()
    correct = 0
    for start in range(0, len(dataset), batch_size):
        x = torch.from_numpy(dataset.images[start : start + batch_size]).to(device, torch.float32)
        y = torch.from_numpy(dataset.labels[start : start + batch_size]).to(device)
        correct += int((model.integer_scores(x).argmax(1) == y).sum())
    return correct / max(len(dataset), 1)


def curve_path(checkpoint: str | os.PathLike) -> Path:
    """Where the training curve of a checkpoint goes: `model.pt` -> `model.curve.png`."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".curve.png")


def plot_history(history: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Loss and accuracy per epoch as a PNG (atomic write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="loss")
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], marker="o", label="train (running, train-mode BN)")
    ax_acc.plot(epochs, [h["test_accuracy"] for h in history], marker="o", label="test (integer scores)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure_atomic(fig, path, dpi=100)


def _optimizer(model: nn.Module, estimator: Any, config: TrainConfig) -> torch.optim.Optimizer:
    groups = estimator.optimizer_param_groups(model, config.lr)
    for group in groups:
        group.setdefault("lr", config.lr)
        group["base_lr"] = group["lr"]
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(max(step, 0), total) / max(total, 1)))


def _set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise OnebitError("--device cuda requested but this torch has no CUDA device; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise OnebitError(f"unknown device {name!r}; use cpu or cuda")
    return torch.device(name)


def _check_config(config: TrainConfig) -> None:
    if config.model not in ARCHITECTURES:
        raise OnebitError(f"unknown model {config.model!r}; available: {', '.join(ARCHITECTURES)}")
    for key, value, minimum in (("epochs", config.epochs, 1), ("batch-size", config.batch_size, 1)):
        if value < minimum:
            raise OnebitError(f"--{key} must be >= {minimum}, got {value}")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise OnebitError(f"--lr must be a positive finite number, got {config.lr}")
    if not math.isfinite(config.weight_decay) or config.weight_decay < 0:
        raise OnebitError(f"--weight-decay must be a finite number >= 0, got {config.weight_decay}")
    for key, value in (("limit-train", config.limit_train), ("limit-test", config.limit_test)):
        if value is not None and value < 1:
            raise OnebitError(f"--{key} must be >= 1, got {value}")
    if config.out and not Path(config.out).parent.is_dir():
        raise OnebitError(f"--out {config.out}: folder {Path(config.out).parent} does not exist; create it first")
    if config.out:
        _check_writable(Path(config.out))


def _check_writable(out: Path) -> None:
    """Fail before training, not after it, when the checkpoint (and its curve PNG) cannot be written."""
    for target in (out, curve_path(out)):
        if target.is_dir():
            raise OnebitError(f"--out {out}: {target} is a folder; give a file name such as {target / 'model.pt'}")
    clean_stale_temporaries_of(out)  # what a killed earlier run left beside the checkpoint
    probe = out.parent / f".onebit-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"onebit writability probe\n")
    except OSError as error:
        raise OnebitError(f"--out {out}: folder {out.parent} is not writable ({error.strerror}); choose a "
                          "writable --out (nothing was trained)") from None
    finally:
        probe.unlink(missing_ok=True)


def _parse_arch_overrides(items: list[str] | None) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise OnebitError(f"--arch {item!r} is not KEY=VALUE; e.g. --arch 'hidden=[128,128,128]'")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            raise OnebitError(f"--arch {item!r}: value is not JSON; e.g. --arch 'hidden=[128,128,128]'") from None
    return overrides


def _estimator_help() -> str:
    lines = ["estimator hyperparameters (--hparam KEY=VALUE):"]
    for name, cls in sorted(ESTIMATORS.items()):
        params = ", ".join(f"{k}={v!r}" for k, v in cls.hparam_defaults.items()) or "none"
        lines.append(f"  {name}: {params}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m quant_models.train",
        description="Train a w1a1 network (binary weights and activations) and write a self-describing model.pt.",
        epilog=_estimator_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=defaults.model, choices=ARCHITECTURES)
    parser.add_argument("--estimator", default=defaults.estimator, help=f"one of {', '.join(sorted(ESTIMATORS))}")
    parser.add_argument("--hparam", action="append", metavar="KEY=VALUE", help="estimator hyperparameter (repeatable)")
    parser.add_argument("--arch", action="append", metavar="KEY=JSON", help="architecture override, e.g. 'hidden=[128,128,128]'")
    parser.add_argument("--dataset", default=defaults.dataset)
    parser.add_argument("--data-root", default=None, help="folder with the dataset files")
    parser.add_argument("--input-bits", type=int, default=defaults.input_bits, choices=(8, 1))
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device, choices=("cpu", "cuda"))
    parser.add_argument("--limit-train", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--limit-test", type=int, default=None, help="evaluate on the first N test images")
    parser.add_argument("--out", default="model.pt", help="checkpoint path (default: model.pt)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


@cli_errors
def main(argv: list[str] | None = None) -> int:
    interrupts.check()  # a Ctrl-C during the imports above, even if a library swallowed it
    args = build_parser().parse_args(argv)
    config = TrainConfig(
        model=args.model,
        estimator=args.estimator,
        hparams=parse_hparams(args.hparam),
        arch_overrides=_parse_arch_overrides(args.arch),
        dataset=args.dataset,
        data_root=args.data_root,
        input_bits=args.input_bits,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        device=args.device,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        out=args.out,
        progress=not args.quiet,
    )
    model, meta = train(config)
    metrics, training = meta["metrics"], meta["training"]
    print(
        f"{model.arch['name']}-w1a1 ({config.estimator}, input_bits={model.arch['input_bits']}) on {config.dataset}: "
        f"test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_samples']} images "
        f"after {config.epochs} epochs in {training['seconds']:.1f} s"
    )
    print(f"wrote {config.out} and {curve_path(config.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
