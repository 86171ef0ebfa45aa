"""Train a 1-bit model: `python -m quant_models.train --model tfc --estimator ste --dataset fashion-mnist
--epochs N --out model.pt`.

The library function `train(config)` does the work (benchmarks and other stages call it); `main` is the
command line around it. Adam with a per-step cosine learning-rate schedule; test accuracy is measured
every epoch on the integer scores (`OnebitNet.integer_scores`), i.e. what the accelerator computes.

With `--state PATH` (`TrainConfig.state`) the run is resumable: after every epoch the whole training state
(model, optimizer, data-order generator, random state, the estimator's step-to-step state, history) is
written atomically to PATH, and a run started with the same configuration and an existing PATH continues
after its last finished epoch, giving the same weights as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onebit import interrupts

interrupts.install()  # before torch/Brevitas imports, which can swallow a Ctrl-C (onebit/interrupts.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from onebit import faults, progress
from onebit.atomic import save_figure_atomic, write_atomic
from onebit.buildfolder import clean_stale_temporaries_of
from onebit.errors import OnebitError, cli_errors
from onebit.invocation import program_name
from quant_models.checkpoint import check_state_dict, save_checkpoint
from quant_models.custom_data import content_hash
from quant_models.data import ImageDataset, load_dataset
from quant_models.estimators import ESTIMATORS, get_estimator, parse_hparams
from quant_models.topologies import ARCHITECTURES, OnebitNet, build_model, check_arch_keys, complete_arch


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
    # resumable training state, written after every epoch (see the module docstring); None: not saved
    state: str | None = None
    # end this call once that many epochs in total are done (a later call with `state` continues);
    # the checkpoint `out` is written only when all `epochs` are done
    stop_after_epochs: int | None = None


# fields that do not change what a run computes: a state file may be resumed with other values
_RUN_INDEPENDENT = ("out", "progress", "state", "stop_after_epochs")
STATE_FORMAT = "onebit-train-state"


def train(config: TrainConfig) -> tuple[OnebitNet, dict[str, Any]]:
    """Train per `config`; save `config.out` (+ `<stem>.curve.png`) if set. Returns (model, meta)."""
    _check_config(config)
    device = _device(config.device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)

    full_train = load_dataset(config.dataset, "train", config.data_root)
    full_test = load_dataset(config.dataset, "test", config.data_root)
    # What a later build or validation checks it finds under the same name (quant_models/custom_data.py).
    content = {"train": content_hash(full_train.images, full_train.labels),
               "test": content_hash(full_test.images, full_test.labels)}
    train_set, test_set = full_train.head(config.limit_train), full_test.head(config.limit_test)
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
    if device.type == "cuda":  # the whole (small) training set on the device: no host copy per batch
        train_x, train_y = train_x.to(device), train_y.to(device)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    order_generator = torch.Generator().manual_seed(config.seed)
    optimizer = _optimizer(model, estimator, config)
    history: list[dict[str, Any]] = []
    step = 0
    first_epoch, elapsed_before = 0, 0.0
    if config.state and Path(config.state).is_file():
        model, optimizer, first_epoch, step, history, elapsed_before = _resume(
            config, estimator, order_generator, device, steps_per_epoch)
    last_epoch = config.epochs if config.stop_after_epochs is None else min(config.epochs, config.stop_after_epochs)
    started = time.perf_counter()
    for epoch in range(first_epoch, last_epoch):
        epoch_start = time.perf_counter()
        new_model = estimator.on_epoch_start(model, epoch, config.epochs)
        if new_model is not model:
            # e.g. BinaryDuo's decoupling: new parameters, so a new optimizer (Adam state restarts).
            model = new_model.to(device)
            optimizer = _optimizer(model, estimator, config)
        model.train()
        order = torch.randperm(len(train_set), generator=order_generator)
        loss_sum, correct, seen = 0.0, 0, 0
        batches = progress.bar(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                               enabled=config.progress)
        for batch in batches:
            index = order[batch * config.batch_size : (batch + 1) * config.batch_size].to(train_x.device)
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
        progress.write(f"epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.4f}  "
                       f"train {record['train_accuracy']:.4f}  test {test_accuracy:.4f}  ({record['seconds']:.1f} s)")
        if config.state:
            _save_state(config, model, optimizer, estimator, order_generator, epoch + 1, step, history,
                        elapsed_before + time.perf_counter() - started)
    elapsed = elapsed_before + time.perf_counter() - started
    complete = len(history) >= config.epochs

    interrupts.check()
    if complete:
        faults.point("train:before_save")
        model.arch = estimator.finalize_arch(model.arch)
        # The recorded arch must rebuild exactly this model, or the checkpoint would not load.
        check_state_dict(build_model(model.arch, get_estimator(config.estimator, **estimator.hparams)), model.state_dict(), where="final arch")
    model.eval()
    meta = {
        "dataset": {
            "name": train_set.name,
            "sha256": content,
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
            "config": {k: v for k, v in asdict(config).items() if k not in ("progress", "stop_after_epochs", "state")},
            "optimizer": "Adam",
            "schedule": "cosine per step to 0",
            "complete": complete,
            "epochs_done": len(history),
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
    if config.out and complete:
        out = save_checkpoint(config.out, model.cpu(), meta)
        plot_history(history, curve_path(out), title=f"{model.arch['name']}-w1a1 / {config.estimator} / {train_set.name}")
        model.to(device)
    return model, meta


def _run_config(config: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(config).items() if k not in _RUN_INDEPENDENT}


def _save_state(config: TrainConfig, model: OnebitNet, optimizer: torch.optim.Optimizer, estimator: Any,
                order_generator: torch.Generator, epochs_done: int, step: int, history: list[dict[str, Any]],
                elapsed: float) -> None:
    """The resumable training state after `epochs_done` epochs, written atomically to `config.state`."""
    state = {
        "format": STATE_FORMAT, "version": 1, "config": _run_config(config),
        "epochs_done": epochs_done, "step": step, "elapsed": elapsed, "history": history,
        "arch": model.arch,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "estimator": estimator.training_state(model),
        "order_generator": order_generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    path = Path(config.state)
    if not path.parent.is_dir():
        raise OnebitError(f"--state {path}: folder {path.parent} does not exist; create it first")
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def read_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """A training-state file written by `train(TrainConfig(state=...))` (OnebitError if it is not one)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (torch.load raises many types on foreign bytes)
        raise OnebitError(f"{path}: not a onebit training state ({type(error).__name__}); delete it to start "
                          "the run afresh") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise OnebitError(f"{path}: not a onebit training state; delete it to start the run afresh")
    return state


def _resume(config: TrainConfig, estimator: Any, order_generator: torch.Generator, device: torch.device,
            steps_per_epoch: int):
    """(model, optimizer, first epoch, step, history, elapsed) from `config.state`; the data order and
    random state continue where the saved run stopped."""
    state = read_train_state(config.state)
    saved = state["config"]
    if saved != _run_config(config):
        differing = sorted(k for k in set(saved) | set(_run_config(config)) if saved.get(k) != _run_config(config).get(k))
        raise OnebitError(f"--state {config.state} belongs to a run with other settings ({', '.join(differing)}); "
                          "give the same settings, or another --state path to start afresh")
    epochs_done, step, history = state.get("epochs_done"), state.get("step"), state.get("history")
    # an edited count would skip the epochs and report a checkpoint that was never written (issue 23)
    if not (isinstance(epochs_done, int) and not isinstance(epochs_done, bool) and 0 <= epochs_done <= config.epochs
            and isinstance(history, list) and len(history) == epochs_done
            and isinstance(step, int) and step == epochs_done * steps_per_epoch):
        raise OnebitError(f"--state {config.state} is damaged (epochs_done {epochs_done!r}, step {step!r}, "
                          f"{len(history) if isinstance(history, list) else 'no'} history entries do not fit "
                          f"{config.epochs} epochs of {steps_per_epoch} steps); delete it to start the run afresh")
    try:
        model = build_model(state["arch"], estimator).to(device)
        check_state_dict(model, state["model"], where=str(config.state))
        model.load_state_dict(state["model"])
        estimator.load_training_state(model, state["estimator"])
        optimizer = _optimizer(model, estimator, config)
        optimizer.load_state_dict(state["optimizer"])
        order_generator.set_state(state["order_generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        elapsed = float(state["elapsed"])
    except OnebitError:
        raise
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError) as error:
        # a missing field, an RNG state of the wrong size, optimizer groups of another model: all mean damaged
        first = (str(error).strip().splitlines() or [""])[0][:120]
        raise OnebitError(f"--state {config.state} is damaged ({type(error).__name__}: {first}); delete it to "
                          "start the run afresh") from None
    return model, optimizer, epochs_done, step, history, elapsed


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
    check_arch_keys(config.model, config.arch_overrides)
    if config.stop_after_epochs is not None and config.stop_after_epochs < 1:
        raise OnebitError(f"stop_after_epochs must be >= 1, got {config.stop_after_epochs}")
    if config.state and not Path(config.state).parent.is_dir():
        raise OnebitError(f"--state {config.state}: folder {Path(config.state).parent} does not exist; create it first")
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
    try:  # a fresh name (O_EXCL): a user's file called like a probe is never overwritten or removed
        handle, probe = tempfile.mkstemp(prefix=f".onebit-probe-{os.getpid()}-", dir=out.parent)
    except OSError as error:
        raise OnebitError(f"--out {out}: folder {out.parent} is not writable ({error.strerror}); choose a "
                          "writable --out (nothing was trained)") from None
    os.close(handle)
    os.unlink(probe)


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
        prog=program_name("python -m quant_models.train"),
        description="Train a w1a1 network (binary weights and activations) and write a self-describing model.pt.",
        epilog=_estimator_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=defaults.model, choices=ARCHITECTURES)
    parser.add_argument("--estimator", default=defaults.estimator, help=f"one of {', '.join(sorted(ESTIMATORS))}")
    parser.add_argument("--hparam", action="append", metavar="KEY=VALUE", help="estimator hyperparameter (repeatable)")
    parser.add_argument("--arch", action="append", metavar="KEY=JSON", help="architecture override, e.g. 'hidden=[128,128,128]'")
    parser.add_argument("--dataset", default=defaults.dataset,
                        help="mnist, fashion-mnist, cifar10, or your own: folder:PATH (a subfolder of images per "
                             "class, optionally under train/ and test/) or npz:PATH (images uint8 NCHW/NHWC + labels)")
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
    parser.add_argument("--state", default=None, metavar="PATH",
                        help="resumable training state, saved after every epoch; an existing PATH is resumed")
    # --no-progress is the spelling of every onebit command; --quiet is the older one, kept working unlisted.
    parser.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true",
                        help="no progress bars (the per-epoch lines stay)")
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
        progress=not args.no_progress,
        state=args.state,
    )
    model, meta = train(config)
    metrics, training = meta["metrics"], meta["training"]
    print(
        f"{model.arch['name']}-w1a1 ({config.estimator}, input_bits={model.arch['input_bits']}) on {config.dataset}: "
        f"test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_samples']} images "
        f"after {config.epochs} epochs in {training['seconds']:.1f} s"
    )
    if config.out and training["complete"]:
        print(f"wrote {config.out} and {curve_path(config.out)}")
    elif config.out:  # stopped early (--stop-after-epochs): only the --state file was written
        print(f"{training['epochs_done']} of {config.epochs} epochs done; {config.out} not written yet (resume with "
              f"--state {config.state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
