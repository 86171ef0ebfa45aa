"""Which training method to pick for FINN: the full-length comparison (issue 16), hardware accuracy.

CNV-w1a1 and TFC-w1a1 on Fashion-MNIST (CNV pads the 28x28 images to 32x32, as the trainer does), every
method (ste, irnet, binaryduo, rbonn, hyper with `linear=authors`) with its papers' defaults, plus onebit's
extension `hyper-hyperlinear` (hyper with `linear=hyper`), `--seeds` seeds each (the same data order for the
same seed: `quant_models.train`'s seeded generator), long enough for STE to plateau (the report checks it against a longer schedule),
and a tuned float reference of the same topology (ReLU, its own Adam learning rate chosen on a held-out
validation split of the training set, never on the test set). `--input-bits 8,1` runs every table for both
input forms users pick (UINT8 pixels, and the trainer's `--input-bits 1`; TFC only, see `configs`), the
first form's runs all before the second's; the float reference sees the same input form. Every BNN checkpoint
then goes through `export/to_finn.py` (collapse, QONNX, FINN build, verification at every level) and
`onebit validate --backend model` (the bit-exact accelerator model, whole test set): the reported
accuracy is the hardware's, with the mismatch count of every level.

Phases (`--phase`, comma list, default all, each skipping what is already done in `--work`):
  timing    each method alone on the device for a few epochs of `--timing-steps` steps: time per epoch
            relative to STE on the same device (the concurrent runs share it, so their times are not
            comparable)
  train     all trainings as tasks of onebit's sweep runner on Ray (`--runner ray`, the default: local Ray
            running `--jobs` at a time, default all at once on CUDA, one at a time on CPU; or the Ray cluster at
            `--address`, each run asking for `--cpus-per-run` CPUs and `--gpus-per-run` GPUs, docs/sweeps.md),
            or as worker processes of this script (`--runner processes`, where Ray is not installed); every
            run saves its resumable state after every epoch (`quant_models.train --state`); a rerun, with
            either runner, resumes unfinished runs and skips finished ones. `--budget-minutes` stops the
            trainings at a deadline (exit 3: rerun to continue).
            A finished run is collapsed at once and checked equal to the trained model on every test
            image; collapsed.pt (the plain binary network, an STE checkpoint) is what hardware reads when
            the trained model.pt is not on the machine (it stays where it was trained, see --pack).
  hardware  export/to_finn.py + onebit validate for every finished BNN run (CPU only, no device needed)
  report    bench/results/estimators_full.{json,md} and estimators_full.png (accuracy curves, mean and
            spread over seeds)
  render    the report again from its JSON alone (no run folders needed), e.g. to attach the plateau check

    python bench/estimators_full.py --device cuda --phase timing,train --budget-minutes 10 --pack OUT.tar.xz
    python bench/estimators_full.py --unpack OUT.tar.xz --phase hardware,report   # then, on any CPU machine

TFC on the CPU (issue 25; `--jobs 2`: one thread per worker, which a loaded 2-core machine runs faster
than one worker of two threads), then the report with the CNV tables marked "needs a GPU":

    python bench/estimators_full.py --models tfc --input-bits 8,1 --jobs 2 --phase train,hardware
    python bench/estimators_full.py --models tfc,cnv --input-bits 8,1 --phase report

STE plateau check: the same STE seeds on a longer schedule, as a second call writing its own report, compared
seed by seed (`--schedule-check` names that report's JSON; other methods may join the longer call, its own
table then compares them with STE at that length):

    python bench/estimators_full.py --models tfc --methods ste,binaryduo --input-bits 8,1 --epochs 60 --jobs 2 \
        --runner processes --phase train,hardware,report --work build/estimators_60ep --out bench/results/estimators_full_60ep
    python bench/estimators_full.py --models tfc,cnv --input-bits 8,1 --phase report \
        --schedule-check bench/results/estimators_full_60ep.json    # or --phase render without the run folders

The GPU session recipe (wheels, data, expected minutes) is in bench/results/estimators_full.md.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from onebit.atomic import save_figure_atomic, write_atomic, write_text_atomic  # noqa: E402
from onebit.errors import OnebitError, cli_errors  # noqa: E402

METHODS = ("ste", "irnet", "binaryduo", "rbonn", "hyper", "hyper-hyperlinear")
# a method's trainer estimator and hyperparameters: every paper's method with its authors' defaults
# (hyper: `linear=authors`, the authors' plain latent linear weights), plus onebit's extension
# `hyper-hyperlinear` (HyperLinear: the hypernetwork also generates the fully connected layers' weights)
ESTIMATOR_OF = {"hyper": ("hyper", {"linear": "authors"}), "hyper-hyperlinear": ("hyper", {"linear": "hyper"})}
METHOD_LABELS = {"hyper": "hyper (linear=authors)", "hyper-hyperlinear": "hyper, linear=hyper (onebit's extension)"}
FLOAT = "float"
MODELS = ("cnv", "tfc")
RESULTS = ROOT / "bench" / "results"
DEFAULT_WORK = ROOT / "build" / "estimators_full"
DEFAULT_EPOCHS = {"cnv": 30, "tfc": 30}
FLOAT_LRS = (1e-3, 3e-3, 1e-2)
VALIDATION_FRACTION = 1 / 12  # 5,000 of Fashion-MNIST's 60,000 training images
INCOMPLETE = 3  # exit code: runs left to do, rerun the same command
PART_BYTES = 15 * 2**20  # --pack writes parts below the device machine's 16 MiB per returned file


RUN_RECIPE = """## How to run it (GPU session)

The device machine has PyTorch but not Brevitas, nor the dataset, and returns at most 8 files of 16 MiB
(64 MiB in all). Prepare here, in the repository root:

    echo /.whl/ >> .git/info/exclude; echo /.data/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux2014_x86_64 -d .whl brevitas==0.13.0 dependencies unfoldNd
    mkdir -p .data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/

then one device call (carry `.whl` and `.data`, timeout 600 s):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    ONEBIT_DATA=$PWD/.data PYTHONUNBUFFERED=1 python3 bench/estimators_full.py --device cuda --models cnv \\
        --runner processes --phase timing,train --budget-minutes 9 --pack $OUT/estimators_full_work.tar.xz

(`--runner processes`: Ray's wheel alone is larger than what a device call carries; on a Ray cluster with GPUs,
the default `--runner ray` with `--address`, see docs/sweeps.md)

(TFC trains on the CPU, see the tables above: `--models cnv` keeps the device for CNV) and back here, on
the CPU (FINN builds and the accelerator model; about 5 min per CNV checkpoint on 2 cores), then the
report of every table (from the same build/estimators_full, which holds the TFC runs):

    python bench/estimators_full.py --unpack /work/.device/.../estimators_full_work.tar.xz --models cnv --phase hardware
    python bench/estimators_full.py --models tfc,cnv --input-bits 8,1 --phase report

Device time: the timing phase (about a minute) prints how long the trainings would take one after another;
all of them then run as concurrent processes (`--jobs`, default all 42 plus the float tuning runs). On an H200 this is not measured
yet: the 21 CNV trainings of 30 epochs are 378,000 steps of batch 100 (and TFC as many, much smaller
ones), which fit in ~9 minutes only if all processes together make ~600 CNV steps per second (1.7 ms per
step). What does not finish stops at the budget with its last epoch saved; the archive carries the
finished runs (small: collapsed networks, histories) and as many unfinished runs' resumable states as fit
in 25 MiB (a CNV state is ~19 MB, a TFC state ~1 MB; the others restart), in parts of at most 15 MiB
(`.part0`, `.part1`, ...; `--unpack` takes the name without the suffix). A second session `--unpack`s it
into build/estimators_full and runs the same device command, carrying that folder too (the carried data,
31 MB, wheels and work must stay under the 64 MiB a call takes along). A session short of time can give
CNV priority with `--models cnv` (the default runs both models).
"""


# ------------------------------------------------------------------------------------------------
# what is run
# ------------------------------------------------------------------------------------------------
@dataclass
class RunSpec:
    """One training run; `kind` is "bnn", "float" (a seed of the tuned reference) or "tune" (one lr of
    the float reference on the validation split)."""

    kind: str
    model: str
    method: str
    seed: int
    epochs: int
    lr: float
    batch_size: int
    device: str
    limit_train: int | None = None
    limit_test: int | None = None
    data_root: str | None = None
    arch: dict[str, Any] = field(default_factory=dict)
    stop_after_epochs: int | None = None
    threads: int = 1
    input_bits: int = 8

    @property
    def config(self) -> str:
        return config_name(self.model, self.input_bits)

    @property
    def key(self) -> str:
        if self.kind == "tune":
            return f"{self.config}-float-tune-lr{self.lr:g}"
        return f"{self.config}-{self.method}-s{self.seed}"


def config_name(model: str, input_bits: int) -> str:
    """"tfc" (UINT8 input) or "tfc-in1" (`--input-bits 1`): a table of the report, a prefix of run keys."""
    return model if input_bits == 8 else f"{model}-in{input_bits}"


def run_dir(work: Path, key: str) -> Path:
    return work / "runs" / key


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1))


# ------------------------------------------------------------------------------------------------
# the float reference: same topology, real weights, ReLU, its own learning rate (benchmark-only: it
# never goes to hardware, so it is written here and not in quant_models)
# ------------------------------------------------------------------------------------------------
def float_net(arch: dict[str, Any], activation=None):
    """The topology of `arch` with real weights; `activation` a module class (default ReLU; bench/estimators.py's
    quick baseline uses Hardtanh, the BNN's own)."""
    from torch import nn

    activation = activation or nn.ReLU

    from quant_models.topologies import KERNEL_SIZE

    layers: list[nn.Module] = []
    channels, height, width = arch["in_shape"]
    if arch["name"] == "cnv":
        padding = arch.get("first_padding", 0)
        for out_ch, pool in zip(arch["channels"], arch["pool"]):
            layers += [nn.Conv2d(channels, out_ch, KERNEL_SIZE, padding=padding, bias=False),
                       nn.BatchNorm2d(out_ch), activation()]
            height, width = height + 2 * padding - KERNEL_SIZE + 1, width + 2 * padding - KERNEL_SIZE + 1
            if pool:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels, padding = out_ch, 0
        widths = arch["fc"]
    else:
        widths = arch["hidden"]
    layers.append(nn.Flatten())
    features = channels * height * width
    for out_f in widths:
        layers += [nn.Linear(features, out_f, bias=False), nn.BatchNorm1d(out_f), activation()]
        features = out_f
    layers.append(nn.Linear(features, arch["num_classes"]))
    return nn.Sequential(*layers)


def _splits(spec: RunSpec):
    """(train, evaluation) datasets of a run: the test set, or for a tuning run the validation split
    (the last VALIDATION_FRACTION of the training images, which the tuning run does not train on)."""
    from quant_models.data import ImageDataset, load_dataset

    train_set = load_dataset("fashion-mnist", "train", spec.data_root).head(spec.limit_train)
    if spec.kind != "tune":
        return train_set, load_dataset("fashion-mnist", "test", spec.data_root).head(spec.limit_test)
    cut = len(train_set) - max(1, round(len(train_set) * VALIDATION_FRACTION))
    part = lambda a, b: ImageDataset(train_set.name, "train", train_set.images[a:b], train_set.labels[a:b],  # noqa: E731
                                     train_set.classes, train_set.root)
    return part(0, cut), part(cut, len(train_set))


def train_float(spec: RunSpec, folder: Path) -> dict[str, Any]:
    """A resumable float run: state after every epoch in folder/state.pt; the same data order per seed as
    `quant_models.train` (a generator seeded with the seed, one permutation per epoch), Adam, per-step
    cosine schedule, like the BNNs; only the learning rate and the activation (ReLU) are the float net's."""
    import torch
    from torch import nn

    from quant_models.topologies import complete_arch

    device = torch.device(spec.device)
    torch.manual_seed(spec.seed)
    train_set, eval_set = _splits(spec)
    arch = complete_arch({"name": spec.model, "in_shape": train_set.in_shape, "num_classes": len(train_set.classes),
                          "input_bits": spec.input_bits, **spec.arch})
    net = float_net(arch).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=spec.lr)
    x_all = torch.from_numpy(train_set.images).to(device)
    y_all = torch.from_numpy(train_set.labels).to(device)
    steps = math.ceil(len(train_set) / spec.batch_size)
    total = steps * spec.epochs
    generator = torch.Generator().manual_seed(spec.seed)
    history: list[dict[str, Any]] = []
    step, first = 0, 0
    state_path = folder / "state.pt"
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["order_generator"])
        torch.set_rng_state(state["torch_rng"])
        first, step, history = int(state["epochs_done"]), int(state["step"]), list(state["history"])
    last = spec.epochs if spec.stop_after_epochs is None else min(spec.epochs, spec.stop_after_epochs)
    for epoch in range(first, last):
        started = time.perf_counter()
        net.train()
        order = torch.randperm(len(train_set), generator=generator)
        for batch in range(steps):
            index = order[batch * spec.batch_size : (batch + 1) * spec.batch_size].to(device)
            for group in optimizer.param_groups:
                group["lr"] = spec.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            scores = net(_float_input(x_all[index], spec.input_bits))
            loss = nn.functional.cross_entropy(scores, y_all[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        train_seconds = time.perf_counter() - started
        net.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(eval_set), 1000):
                x = _float_input(torch.from_numpy(eval_set.images[start : start + 1000]).to(device), spec.input_bits)
                correct += int((net(x).argmax(1).cpu() == torch.from_numpy(eval_set.labels[start : start + 1000])).sum())
        history.append({"epoch": epoch + 1, "test_accuracy": correct / len(eval_set), "train_seconds": train_seconds,
                        "seconds": time.perf_counter() - started})
        state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "order_generator": generator.get_state(),
                 "torch_rng": torch.get_rng_state(), "epochs_done": epoch + 1, "step": step, "history": history}
        write_atomic(state_path, lambda tmp: torch.save(state, tmp))
    return {"complete": len(history) >= spec.epochs, "history": history,
            "final_accuracy": history[-1]["test_accuracy"] if history else None,
            "evaluated_on": "validation split" if spec.kind == "tune" else "test set"}


def _float_input(pixels, input_bits: int):
    """The float reference sees what the BNN's input quantizer gives it: pixels scaled to [0, 1] (UINT8
    input), or with `--input-bits 1` the same +-1 the binarized-input BNN sees (sign(pixel - 127.5))."""
    x = pixels.float()
    if input_bits == 1:
        from quant_models.topologies import BINARY_INPUT_OFFSET

        return (x > BINARY_INPUT_OFFSET).float() * 2 - 1
    return x / 255.0


def train_bnn(spec: RunSpec, folder: Path) -> dict[str, Any]:
    """A resumable BNN run through `quant_models.train` (state after every epoch); when finished, the
    collapse to the plain binary network, checked equal to the trained model on every test image."""
    import numpy as np

    from export.collapse import collapse
    from quant_models.checkpoint import save_checkpoint
    from quant_models.data import load_dataset
    from quant_models.train import TrainConfig, train

    estimator, hparams = ESTIMATOR_OF.get(spec.method, (spec.method, {}))
    config = TrainConfig(model=spec.model, estimator=estimator, hparams=dict(hparams), input_bits=spec.input_bits,
                         epochs=spec.epochs, seed=spec.seed, lr=spec.lr,
                         batch_size=spec.batch_size, device=spec.device, limit_train=spec.limit_train,
                         limit_test=spec.limit_test, data_root=spec.data_root, arch_overrides=dict(spec.arch),
                         out=str(folder / "model.pt"), state=str(folder / "state.pt"), progress=False,
                         stop_after_epochs=spec.stop_after_epochs)
    model, meta = train(config)
    history = [{k: h[k] for k in ("epoch", "test_accuracy", "train_seconds", "seconds")} for h in meta["metrics"]["history"]]
    result: dict[str, Any] = {"complete": meta["training"]["complete"], "history": history}
    if not result["complete"]:
        return result
    test_set = load_dataset("fashion-mnist", "test", spec.data_root).head(spec.limit_test)
    plain, _ = collapse(model.cpu().eval(), meta)
    # both on the run's device (a CPU pass over the CNV test set would hold the device's session for minutes)
    trained_scores = _integer_scores(model, test_set.images, spec.device)
    plain_scores = _integer_scores(plain, test_set.images, spec.device)
    model.cpu(), plain.cpu()
    collapsed_meta = {**{k: meta[k] for k in ("dataset", "training")},
                      "metrics": {**meta["metrics"], "collapsed_from": model.estimator.describe()}}
    save_checkpoint(folder / "collapsed.pt", plain, collapsed_meta)
    result.update({
        "final_accuracy": float((plain_scores.argmax(1) == test_set.labels).mean()),
        "collapse_mismatches": int((trained_scores != plain_scores).any(axis=1).sum()),
        "test_images": int(len(test_set)),
        "estimator": model.estimator.describe(),
        "final_arch": model.arch,
    })
    return result


def _integer_scores(model, images, device: str, batch_size: int = 1000):
    """int64 (N, classes) integer scores of `model` on `device` (export.collapse.integer_scores runs on CPU)."""
    import numpy as np
    import torch

    model = model.to(device).eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.asarray(images[start : start + batch_size], dtype=np.float32)).to(device)
            outputs.append(model.integer_scores(x).cpu().numpy())
    return np.concatenate(outputs).astype(np.int64)


def run_worker(spec: RunSpec, work: Path, float_lrs: list[float] | None = None) -> int:
    """Train one run (resuming its state); writes result.json when it is finished. Exit 0 finished,
    INCOMPLETE when stopped early by --stop-after-epochs. A float seed given lr nan (the Ray runner starts it
    after its tuning runs) takes the tuned learning rate among `float_lrs`."""
    import torch

    if spec.kind == FLOAT and math.isnan(spec.lr):
        lr, _ = tuned_lr(work, spec.config, float_lrs or [])
        if lr is None:
            raise OnebitError(f"{spec.key}: the float reference's tuning runs ({spec.config}-float-tune-lr*) have not "
                              "all finished; run them first")
        spec.lr = lr

    torch.set_num_threads(max(1, spec.threads))
    folder = run_dir(work, spec.key)
    folder.mkdir(parents=True, exist_ok=True)
    # every invocation's starting epoch: shows resumes (and that finished runs are never retrained)
    sessions = read_json(folder / "sessions.json") or []
    started_at = _epochs_done(folder)
    sessions.append({"started_at_epoch": started_at, "time": time.time()})
    write_json(folder / "sessions.json", sessions)
    begin = time.perf_counter()
    result = train_float(spec, folder) if spec.kind in (FLOAT, "tune") else train_bnn(spec, folder)
    if not result["complete"]:
        print(f"{spec.key}: stopped after epoch {len(result['history'])} of {spec.epochs}", flush=True)
        return INCOMPLETE
    result.update({"spec": asdict(spec), "key": spec.key, "worker_seconds_last_session": time.perf_counter() - begin})
    write_json(folder / "result.json", result)
    print(f"{spec.key}: {100 * result['final_accuracy']:.2f}%", flush=True)
    return 0


def _epochs_done(folder: Path) -> int:
    state = folder / "state.pt"
    if not state.is_file():
        return 0
    import torch

    try:
        return int(torch.load(state, map_location="cpu", weights_only=True)["epochs_done"])
    except Exception:  # noqa: BLE001  (an unreadable state is reported by the trainer itself)
        return 0


# ------------------------------------------------------------------------------------------------
# phases
# ------------------------------------------------------------------------------------------------
def configs(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(table name, model, input bits) of every table: input forms in `--input-bits` order (the first
    one's runs all go first), models in `--models` order within each. CNV takes UINT8 input only here:
    on 28x28 Fashion-MNIST its first conv pads, which is exact only for UINT8 pixels (complete_arch)."""
    return [(config_name(model, bits), model, bits) for bits in args.input_bits for model in args.models
            if not (model == "cnv" and bits == 1)]


def plan(args: argparse.Namespace) -> list[RunSpec]:
    """Every run: the first input form's before the second's, then longest first (CNV before TFC),
    tuning runs before the float seeds they gate."""
    runs: list[RunSpec] = []
    for _, model, bits in configs(args):
        common = dict(model=model, epochs=args.epochs[model], batch_size=args.batch_size, device=args.device,
                      limit_train=args.limit_train, limit_test=args.limit_test, data_root=args.data_root,
                      arch=args.arch.get(model, {}), stop_after_epochs=args.stop_after_epochs, input_bits=bits)
        if FLOAT in args.methods:
            runs += [RunSpec(kind="tune", method=FLOAT, seed=0, lr=lr, **common) for lr in args.float_lrs]
        for seed in range(args.seeds):
            runs += [RunSpec(kind="bnn", method=m, seed=seed, lr=args.lr, **common) for m in args.methods if m != FLOAT]
            if FLOAT in args.methods:
                runs.append(RunSpec(kind=FLOAT, method=FLOAT, seed=seed, lr=float("nan"), **common))
    return runs


def tuned_lr(work: Path, config: str, lrs: list[float]) -> tuple[float | None, dict[str, float]]:
    """The float reference's learning rate for table `config` (its own input form): best validation
    accuracy of the tuning runs (None until all ran)."""
    scores: dict[str, float] = {}
    for lr in lrs:
        result = read_json(run_dir(work, f"{config}-float-tune-lr{lr:g}") / "result.json")
        if result is None:
            return None, scores
        scores[f"{lr:g}"] = result["final_accuracy"]
    best = max(lrs, key=lambda lr: (scores[f"{lr:g}"], -lr))
    return best, scores


def phase_train(args: argparse.Namespace, runs: list[RunSpec]) -> bool:
    """Run every unfinished run as a worker process, `args.jobs` at a time; True when all finished."""
    from tqdm import tqdm

    work = args.work
    pending = [r for r in runs if not (run_dir(work, r.key) / "result.json").is_file()]
    skipped = len(runs) - len(pending)
    if skipped:
        print(f"train: {skipped} run(s) already finished, skipped", file=sys.stderr)
    if args.jobs == 0:
        return _train_inline(args, pending)
    if args.runner == "ray":
        return _train_sweep(args, pending)
    jobs = args.jobs or (len(pending) if args.device == "cuda" else 1)
    jobs = max(1, min(jobs, len(pending) or 1))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    deadline = time.time() + 60 * args.budget_minutes if args.budget_minutes else None
    running: dict[str, tuple[subprocess.Popen, RunSpec]] = {}
    incomplete: list[str] = []
    failed: list[str] = []
    bar = tqdm(total=len(pending), desc="trainings", unit="run")
    try:
        while pending or running:
            for key, (proc, spec) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[key]
                bar.update(1)
                if code == INCOMPLETE:
                    incomplete.append(key)
                elif code != 0:
                    failed.append(key)
                    tqdm.write(f"{key}: worker exited {code}; log {run_dir(work, key) / 'worker.log'}", file=sys.stderr)
            if deadline and time.time() > deadline:
                tqdm.write(f"train: --budget-minutes {args.budget_minutes} reached; stopping {len(running)} worker(s) "
                           "(their last finished epoch is saved)", file=sys.stderr)
                _stop(running)
                # a worker stopped while exiting may already have written its result
                incomplete += [k for k in running if not (run_dir(work, k) / "result.json").is_file()]
                incomplete += [r.key for r in pending]
                running.clear()
                pending = []
                break
            for spec in list(pending):
                if len(running) >= jobs:
                    break
                if spec.kind == FLOAT:
                    lr, _ = tuned_lr(work, spec.config, args.float_lrs)
                    if lr is None:
                        if not any(r.kind == "tune" and r.config == spec.config for r in pending) and not any(
                                s.kind == "tune" and s.config == spec.config for _, s in running.values()):
                            pending.remove(spec)  # its tuning runs did not finish in this call
                            incomplete.append(spec.key)
                            bar.update(1)
                        continue
                    spec.lr = lr
                pending.remove(spec)
                spec.threads = threads
                running[spec.key] = (_launch(spec, work), spec)
            time.sleep(0.2)
    except KeyboardInterrupt:
        _stop(running)
        raise
    finally:
        bar.close()
    return _outcome(work, failed, incomplete)


def _outcome(work: Path, failed: list[str], incomplete: list[str]) -> bool:
    """A training call's end (either runner): failed runs are an error; True when every run finished."""
    if failed:
        raise OnebitError(f"training failed for {', '.join(failed)}; see their worker.log under {work / 'runs'}")
    if incomplete:
        print(f"train: {len(incomplete)} run(s) not finished ({', '.join(sorted(incomplete)[:6])}"
              f"{', ...' if len(incomplete) > 6 else ''}); rerun the same command to continue", file=sys.stderr)
    return not incomplete


def _train_sweep(args: argparse.Namespace, pending: list[RunSpec]) -> bool:
    """`--runner ray`: every unfinished run as a task of onebit's sweep runner (onebit/sweep/runner.py), on local
    Ray (`--jobs` CPUs: as many runs at a time) or the Ray cluster at `--address`, each asking for
    `--cpus-per-run` CPUs and, on CUDA, `--gpus-per-run` GPUs. A task is the same worker command the process
    runner starts, in the same run folder (work/runs/KEY: state.pt every epoch, result.json last), so both
    runners resume each other's runs. A float seed waits for its tuning runs (a Ray dependency) and picks its
    learning rate from their results itself."""
    from tqdm import tqdm

    from onebit.sweep.runner import CommandTask, run_commands

    work = args.work
    jobs = max(1, min(args.jobs or (len(pending) if args.device == "cuda" else 1), len(pending) or 1))
    cpus = args.cpus_per_run or 1
    gpus = 0.0
    if args.device == "cuda":
        # default: the `--jobs` runs share one GPU (each asks for a share); on a cluster, e.g. 1 or 0.25
        gpus = args.gpus_per_run if args.gpus_per_run is not None else math.floor(10000 / jobs) / 10000
    # one thread per CPU the run asked for; locally as the process runner: the machine's cores over --jobs
    threads = max(1, int(cpus)) if args.address else max(1, (os.cpu_count() or 1) // jobs)
    tasks: list[CommandTask] = []
    incomplete: list[str] = []
    for spec in pending:
        depends: list[str] = []
        if spec.kind == FLOAT:
            lr, _ = tuned_lr(work, spec.config, args.float_lrs)
            depends = [r.key for r in pending if r.kind == "tune" and r.config == spec.config]
            if lr is None and not depends:  # unreachable: its tuning runs are either finished or pending
                incomplete.append(spec.key)
                continue
            spec.lr = float("nan") if lr is None else lr  # nan: the worker reads the tuned lr when it starts
        spec.threads = threads
        env = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads),
               "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "ignore")}
        command = [sys.executable, str(Path(__file__).resolve()), "--work", str(work),
                   "--float-lrs", ",".join(f"{lr!r}" for lr in args.float_lrs), "--worker", json.dumps(asdict(spec))]
        tasks.append(CommandTask(id=spec.key, folder=str(run_dir(work, spec.key)), command=command, result="result.json",
                                 num_cpus=cpus, num_gpus=gpus, depends_on=depends, env=env, log="worker.log",
                                 incomplete_exit=INCOMPLETE))
    deadline = time.time() + 60 * args.budget_minutes if args.budget_minutes else None
    bar = tqdm(total=len(tasks), desc="trainings (Ray)", unit="run")

    def ended(record: dict[str, Any]) -> None:
        bar.update(1)
        if record["status"] == "failed":
            tqdm.write(f"{record['id']}: {record['error']}; log {run_dir(work, record['id']) / 'worker.log'}",
                       file=sys.stderr)

    try:
        records = run_commands(tasks, address=args.address, num_cpus=None if args.address else int(jobs * cpus),
                               on_record=ended, deadline=deadline)
    finally:
        bar.close()
    if any(r["status"] == "stopped" for r in records.values()):
        print(f"train: --budget-minutes {args.budget_minutes} reached; the unfinished runs were stopped (their last "
              "finished epoch is saved)", file=sys.stderr)
    failed = [k for k, r in records.items() if r["status"] == "failed"]
    incomplete += [k for k, r in records.items() if r["status"] in ("incomplete", "stopped", "not run")]
    return _outcome(work, failed, incomplete)


def _train_inline(args: argparse.Namespace, pending: list[RunSpec]) -> bool:
    """--jobs 0: the runs one after another in this process (no worker start-up cost: smoke runs,
    debugging); --budget-minutes is checked between runs."""
    deadline = time.time() + 60 * args.budget_minutes if args.budget_minutes else None
    incomplete = []
    for spec in pending:
        if deadline and time.time() > deadline:
            incomplete.append(spec.key)
            continue
        if spec.kind == FLOAT:
            lr, _ = tuned_lr(args.work, spec.config, args.float_lrs)
            if lr is None:
                incomplete.append(spec.key)
                continue
            spec.lr = lr
        spec.threads = os.cpu_count() or 1
        if run_worker(spec, args.work) != 0:
            incomplete.append(spec.key)
    if incomplete:
        print(f"train: {len(incomplete)} run(s) not finished; rerun the same command to continue", file=sys.stderr)
    return not incomplete


def _launch(spec: RunSpec, work: Path) -> subprocess.Popen:
    folder = run_dir(work, spec.key)
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(spec.threads),
           "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "ignore")}
    log = open(folder / "worker.log", "a")
    command = [sys.executable, str(Path(__file__).resolve()), "--work", str(work), "--worker", json.dumps(asdict(spec))]
    # its own process group, so stopping it also stops anything it started
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(running: dict[str, tuple[subprocess.Popen, RunSpec]]) -> None:
    for proc, _ in running.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    end = time.time() + 15
    for proc, _ in running.values():
        try:
            proc.wait(timeout=max(0.1, end - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def phase_timing(args: argparse.Namespace) -> None:
    """Each method alone on the device: seconds per training step, over epochs 2-5 of a 5-epoch run of
    `--timing-steps` steps per epoch (epoch 1 pays one-time costs; BinaryDuo is coupled in 3 of the 4
    timed epochs and decoupled in 1, the 0.75 / 0.25 split of its schedule)."""
    import torch
    from tqdm import tqdm

    from quant_models.train import TrainConfig, train

    # one thread, as every training worker of --jobs 2 on 2 cores: several OpenMP threads on a loaded
    # machine measure the scheduler, not the method (0.37 s per TFC step with 2 threads, 0.045 s with 1)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, args.jobs or 1)) if args.device == "cpu" else torch.get_num_threads())
    path = args.work / "timing.json"
    timing = read_json(path) or {}
    todo = [(m, e) for m in args.models for e in args.methods if f"{m}-{e}" not in timing]
    for model, method in tqdm(todo, desc="timing (each method alone)", unit="run"):
        limit = args.timing_steps * args.batch_size
        if method == FLOAT:
            spec = RunSpec(kind=FLOAT, model=model, method=FLOAT, seed=0, epochs=5, lr=1e-3, batch_size=args.batch_size,
                           device=args.device, limit_train=limit, limit_test=min(1000, args.limit_test or 1000),
                           data_root=args.data_root, arch=args.arch.get(model, {}))
            folder = args.work / "timing" / f"{model}-{method}"
            (folder / "state.pt").unlink(missing_ok=True)
            folder.mkdir(parents=True, exist_ok=True)
            history = train_float(spec, folder)["history"]
            (folder / "state.pt").unlink(missing_ok=True)
        else:
            estimator, hparams = ESTIMATOR_OF.get(method, (method, {}))
            config = TrainConfig(model=model, estimator=estimator, hparams=dict(hparams), epochs=5, lr=args.lr,
                                 batch_size=args.batch_size,
                                 device=args.device, limit_train=limit, limit_test=min(1000, args.limit_test or 1000),
                                 data_root=args.data_root, arch_overrides=args.arch.get(model, {}), progress=False)
            history = train(config)[1]["metrics"]["history"]
        steps = math.ceil(limit / args.batch_size)
        per_step = statistics.mean(h["train_seconds"] for h in history[1:]) / steps
        timing[f"{model}-{method}"] = {"seconds_per_step": per_step, "steps_per_epoch_timed": steps,
                                       "device": _device_name(args.device)}
        write_json(path, timing)
    if args.device == "cuda":
        torch.cuda.empty_cache()
    estimate = projection(args, plan(args))
    if estimate:
        print(f"timing: the {estimate['runs']} trainings take {estimate['serial_minutes']:.1f} device-minutes if run one "
              f"after another on {estimate['device']}", file=sys.stderr)


def phase_hardware(args: argparse.Namespace, runs: list[RunSpec]) -> bool:
    """export/to_finn.py and `onebit validate --backend model` for every finished BNN run; True if all
    finished runs of the selected methods have hardware results."""
    from tqdm import tqdm

    todo = [r for r in runs if r.kind == "bnn" and r.method in args.hw_methods
            and (run_dir(args.work, r.key) / "result.json").is_file()
            and not (run_dir(args.work, r.key) / "hw.json").is_file()]
    missing = [r.key for r in runs if r.kind == "bnn" and r.method in args.hw_methods
               and not (run_dir(args.work, r.key) / "result.json").is_file()]
    python = sys.executable
    env = {**os.environ, "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "ignore")}
    for spec in tqdm(todo, desc="to_finn + accelerator model", unit="checkpoint"):
        folder = run_dir(args.work, spec.key)
        trained = folder / "model.pt"
        checkpoint = trained if trained.is_file() else folder / "collapsed.pt"
        build = folder / "hw"
        seconds: dict[str, float] = {}
        for name, command in (
            ("build_and_verify", [python, str(ROOT / "export" / "to_finn.py"), str(checkpoint), "--board", args.board,
                                  "--out", str(build), "--verify-samples", str(args.verify_samples), "--no-progress"]),
            ("validate", [python, "-m", "onebit", "validate", str(build), "--backend", "model",
                          *(["--limit", str(args.limit_test)] if args.limit_test else []),
                          *(["--data-root", str(args.data_root)] if args.data_root else [])]),
        ):
            started = time.perf_counter()
            with open(folder / f"{name}.log", "w") as log:
                code = subprocess.call(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
            seconds[name] = time.perf_counter() - started
            if code not in (0, 1):  # 1: the command ran and reports mismatches, which the table shows
                tail = (folder / f"{name}.log").read_text().strip().splitlines()[-1:] or ["(no output)"]
                raise OnebitError(f"{spec.key}: `{' '.join(command[:3])} ...` exited {code}: {tail[0]} "
                                  f"(log {folder / f'{name}.log'})")
        report = read_json(build / "report.json")
        validation = read_json(build / "validation" / "validation.json")
        if report is None or validation is None:
            raise OnebitError(f"{spec.key}: the build or validation wrote no report; see {folder}/*.log")
        levels = report["verification"]["levels"]
        write_json(folder / "hw.json", {
            "checkpoint": "trained" if checkpoint == trained else "collapsed",
            "levels_arg": None,  # to_finn's default levels, the ones users get (both input forms)
            "finn_samples": report["verification"]["samples"],
            # nodes: how many nodes a node level simulated (0: the build has none of its kind, nothing to check)
            "levels": {name: {**{k: level.get(k) for k in ("status", "executed", "integer_mismatches", "argmax_mismatches",
                                                           "reason")},
                              "nodes": len(level["nodes"]) if isinstance(level.get("nodes"), list) else None}
                       for name, level in levels.items()},
            "accelerator_samples": validation["samples"],
            "accelerator_mismatches": validation["mismatches"],
            "accelerator_accuracy": validation["accelerator_accuracy"],
            "software_accuracy": validation["software_accuracy"],
            "seconds": seconds,
        })
    if missing:
        print(f"hardware: {len(missing)} run(s) not trained yet", file=sys.stderr)
    return not missing


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def hw_mismatches(hw: dict[str, Any]) -> int:
    return (sum(int(level.get("integer_mismatches") or 0) for level in hw["levels"].values())
            + int(hw["accelerator_mismatches"]))


def summarise(args: argparse.Namespace, runs: list[RunSpec]) -> dict[str, Any]:
    import numpy as np

    timing = read_json(args.work / "timing.json") or {}
    summary: dict[str, Any] = {}
    # tables by model, then input form (the runs go input form first, see `configs`)
    for name, model, bits in sorted(configs(args), key=lambda c: args.models.index(c[1])):
        per: dict[str, Any] = {}
        for method in args.methods:
            keys = [r.key for r in runs if r.config == name and r.method == method and r.kind != "tune"]
            results = {k: read_json(run_dir(args.work, k) / "result.json") for k in keys}
            done = {k: v for k, v in results.items() if v}
            hws = {k: read_json(run_dir(args.work, k) / "hw.json") for k in done} if method != FLOAT else {}
            entry: dict[str, Any] = {"planned": len(keys), "finished": len(done),
                                     "hardware_checked": sum(1 for h in hws.values() if h)}
            if done:
                # accuracy: the accelerator model's where the hardware phase ran for every finished seed
                on_hw = method != FLOAT and all(hws.values())
                finals = [hws[k]["accelerator_accuracy"] if on_hw else v["final_accuracy"] for k, v in done.items()]
                entry["accuracy_source"] = ("accelerator model" if on_hw else
                                            "float network (test set)" if method == FLOAT else
                                            "collapsed network in PyTorch (hardware phase pending)")
                entry["mean"], entry["std"] = _mean_std(finals)
                entry["min"], entry["max"] = min(finals), max(finals)
                entry["per_seed"] = dict(zip(done, finals))
                curves = [[h["test_accuracy"] for h in v["history"]] for v in done.values()]
                length = min(len(c) for c in curves)
                arr = np.array([c[:length] for c in curves])
                entry["mean_curve"], entry["std_curve"] = arr.mean(0).tolist(), arr.std(0).tolist()
                entry["concurrent_wall_s_per_epoch"] = statistics.mean(
                    statistics.median(h["seconds"] for h in v["history"]) for v in done.values())
                # each run's own training time per epoch (median over epochs): comparable between methods
                # only where the runs ran one at a time (--jobs 1) on an otherwise quiet machine
                entry["train_s_per_epoch"] = statistics.mean(
                    statistics.median(h["train_seconds"] for h in v["history"]) for v in done.values())
                if method != FLOAT:
                    checked = [h for h in hws.values() if h]
                    entry["hardware_levels_executed"] = list(dict.fromkeys(
                        n for h in checked for n, lv in h["levels"].items() if lv.get("executed") or _nothing_to_simulate(lv)))
                    entry["hardware_levels_empty"] = list(dict.fromkeys(  # no node of its kind: nothing to simulate
                        n for h in checked for n, lv in h["levels"].items() if _nothing_to_simulate(lv)))
                    entry["hardware_levels_skipped"] = {n: _short_reason(lv.get("reason")) for h in checked
                                                        for n, lv in h["levels"].items()
                                                        if not lv.get("executed") and not _nothing_to_simulate(lv)}
                    entry["hardware_levels_arg"] = sorted({h.get("levels_arg") or "default" for h in checked})
                    entry["collapse_mismatches"] = sum(int(v.get("collapse_mismatches", 0)) for v in done.values())
                    entry["hardware_mismatches"] = sum(hw_mismatches(h) for h in hws.values() if h)
                    entry["accelerator_images"] = sum(int(h["accelerator_samples"]) for h in hws.values() if h)
                else:
                    entry["lr"] = next(iter(done.values()))["spec"]["lr"]
            t = timing.get(f"{model}-{method}")
            if t:
                entry["solo_s_per_step"] = t["seconds_per_step"]
            per[method] = entry
        lr, tune_scores = tuned_lr(args.work, name, args.float_lrs) if FLOAT in args.methods else (None, {})
        ste, ref = per.get("ste", {}), per.get(FLOAT, {})
        for method, entry in per.items():
            if "mean" in entry and "mean" in ste:
                entry["delta_vs_ste"] = entry["mean"] - ste["mean"]
                if method != "ste" and entry["finished"] > 1 and ste["finished"] > 1:
                    # standard error of the difference of two means over seeds (Welch); a difference within
                    # two of them is not measurable with this many seeds
                    se = math.sqrt(entry["std"] ** 2 / entry["finished"] + ste["std"] ** 2 / ste["finished"])
                    entry["delta_se"] = se
                    entry["measurable"] = abs(entry["delta_vs_ste"]) > 2 * se
                target = ste["mean"]
                reached = [i + 1 for i, a in enumerate(entry["mean_curve"]) if a >= target - 1e-9]
                entry["epochs_to_ste_final"] = reached[0] if reached else None
                if method not in ("ste", FLOAT) and "mean" in ref and ref["mean"] > ste["mean"]:
                    entry["gap_closed"] = (entry["mean"] - ste["mean"]) / (ref["mean"] - ste["mean"])
            if "solo_s_per_step" in entry and "solo_s_per_step" in ste:
                entry["time_vs_ste"] = entry["solo_s_per_step"] / ste["solo_s_per_step"]
            if "train_s_per_epoch" in entry and "train_s_per_epoch" in ste:
                entry["in_run_time_vs_ste"] = entry["train_s_per_epoch"] / ste["train_s_per_epoch"]
        plateau = None
        if "mean_curve" in ste and len(ste["mean_curve"]) >= 6:
            curve = ste["mean_curve"]
            plateau = {"last_5_epochs_gain": curve[-1] - curve[-6], "best_minus_final": max(curve) - curve[-1]}
        binaries = [e["mean"] for m, e in per.items() if m != FLOAT and "mean" in e]
        float_check = None
        if "mean" in ref and binaries:
            float_check = {"float_mean": ref["mean"], "best_binary_mean": max(binaries),
                           "float_at_or_above_every_binary": ref["mean"] >= max(binaries)}
        summary[name] = {"model": model, "input_bits": bits, "methods": per, "float_lr": lr, "float_tuning": tune_scores,
                         "ste_plateau": plateau, "float_check": float_check, "epochs": args.epochs[model]}
    return summary


def write_report(args: argparse.Namespace, runs: list[RunSpec], stem: Path) -> dict[str, Any]:
    summary = summarise(args, runs)
    complete = all(e["finished"] == e["planned"] and (m == FLOAT or m not in args.hw_methods or e["hardware_checked"] == e["planned"])
                   for s in summary.values() for m, e in s["methods"].items())
    config = {"models": args.models, "methods": args.methods, "seeds": args.seeds, "epochs": args.epochs,
              "lr": args.lr, "batch_size": args.batch_size, "float_lrs": args.float_lrs,
              "limit_train": args.limit_train, "limit_test": args.limit_test, "arch": args.arch,
              "device": _device_name(args.device), "board": args.board, "verify_samples": args.verify_samples}
    data = {"config": config, "complete": complete, "summary": summary,
            "projection": projection(args, runs)}
    return _write(args, data, stem)


def _write(args: argparse.Namespace, data: dict[str, Any], stem: Path) -> dict[str, Any]:
    """The report's JSON, Markdown and curves PNG at `stem`, with the schedule check of `--schedule-check`."""
    schedule_check(data["summary"], _longer(args), args.schedule_check)
    write_json(stem.with_suffix(".json"), data)
    write_text_atomic(stem.with_suffix(".md"), _markdown(data, stem))
    if any("mean_curve" in e for s in data["summary"].values() for e in s["methods"].values()):
        _plot(data["summary"], stem.with_suffix(".png"))
    return data


def schedule_check(summary: dict[str, Any], longer: dict[str, Any] | None, source: Path | None = None) -> None:
    """Attach to every table the STE plateau check by schedule length: the same STE runs (same seeds, so
    the same data order) trained for a longer schedule (`longer`: the JSON of a run of this script with
    `--methods ste --epochs N`), compared seed by seed. Under the per-step cosine decay every schedule ends
    with the learning rate going to zero, so accuracy rises over any schedule's last epochs; what says
    whether 30 epochs is long enough is whether a longer schedule ends higher."""
    for name, s in summary.items():
        ste = s["methods"].get("ste", {})
        other = ((longer or {}).get("summary", {}).get(name) or {}).get("methods", {}).get("ste", {})
        if not ste.get("per_seed") or not other.get("per_seed") or s["epochs"] >= longer["summary"][name]["epochs"]:
            s.pop("ste_schedule_check", None)
            continue
        seeds = sorted(set(ste["per_seed"]) & set(other["per_seed"]))
        deltas = [other["per_seed"][k] - ste["per_seed"][k] for k in seeds]
        check: dict[str, Any] = {"epochs": s["epochs"], "longer_epochs": longer["summary"][name]["epochs"],
                                 "seeds": len(seeds), "longer_mean": other["mean"], "longer_std": other["std"],
                                 "longer_accuracy_source": other["accuracy_source"],
                                 "longer_mismatches": other.get("collapse_mismatches", 0) + other.get("hardware_mismatches", 0),
                                 "per_seed_gain": dict(zip(seeds, deltas)),
                                 "report": None if source is None else source.with_suffix(".md").name}
        if seeds:
            check["gain_mean"] = statistics.mean(deltas)
            # paired over seeds: the same seed sees the same data order in both schedules
            check["gain_se"] = statistics.stdev(deltas) / math.sqrt(len(deltas)) if len(deltas) > 1 else None
            check["plateaued"] = None if check["gain_se"] is None else check["gain_mean"] <= 2 * check["gain_se"]
        s["ste_schedule_check"] = check


def render(args: argparse.Namespace) -> dict[str, Any]:
    """The report again from its own JSON (the run folders need not be on this machine), with the
    schedule check of `--schedule-check` attached."""
    stem = args.out
    data = read_json(stem.with_suffix(".json"))
    if data is None:
        raise OnebitError(f"{stem.with_suffix('.json')}: no report to render; run the report phase first")
    return _write(args, data, stem)


def _longer(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.schedule_check is None:
        return None
    data = read_json(args.schedule_check)
    if data is None:
        raise OnebitError(f"--schedule-check {args.schedule_check}: no such report JSON; run this script with "
                          "--methods ste --epochs N --out <that stem> first")
    return data


def projection(args: argparse.Namespace, runs: list[RunSpec]) -> dict[str, Any] | None:
    """Device minutes of all planned trainings run one after another, from the timing phase's s/step."""
    timing = read_json(args.work / "timing.json") or {}
    total, device = 0.0, None
    for run in runs:
        t = timing.get(f"{run.model}-{run.method}")
        if t is None:
            return None
        images = args.limit_train or 60000
        if run.kind == "tune":
            images -= round(images * VALIDATION_FRACTION)
        total += t["seconds_per_step"] * math.ceil(images / args.batch_size) * run.epochs
        device = t["device"]
    return {"runs": len(runs), "serial_minutes": total / 60, "device": device}


def _nothing_to_simulate(level: dict[str, Any]) -> bool:
    """A node level on a build with no node of its kind (hw/check/verdict.py NOTHING_TO_SIMULATE); hw.json files
    written before that status say it as executed on 0 nodes."""
    return level.get("status") == "nothing to simulate" or bool(level.get("executed") and level.get("nodes") == 0)


def _short_reason(reason: str | None) -> str:
    """A level's skip reason without its how-to (in the build's report.md): 'finn-hlslib not found'."""
    import re

    text = reason or "no reason recorded"
    while re.search(r"\([^()]*\)", text):  # nested parentheses, innermost first
        text = re.sub(r"\s*\([^()]*\)", "", text)
    return text.removeprefix("skipped: ").split(";")[0].strip()


def _pct(x: float | None, sign: bool = False) -> str:
    return "" if x is None else (f"{100 * x:+.2f}" if sign else f"{100 * x:.2f}")


def _markdown(data: dict[str, Any], stem: Path) -> str:
    cfg = data["config"]
    state = "complete" if data["complete"] else "**incomplete** (runs or hardware checks missing; rerun to continue)"
    lines = [
        "# Which training method to pick for FINN: full-length comparison on Fashion-MNIST", "",
        f"Status: {state}. Epochs {', '.join(m.upper() + ' ' + str(cfg['epochs'][m]) for m in cfg['models'])}, seeds "
        f"{cfg['seeds']}, Adam lr {cfg['lr']} with per-step cosine "
        f"decay, batch {cfg['batch_size']}, train images {cfg['limit_train'] or 'all'}, test images "
        f"{cfg['limit_test'] or 'all'}, trained on {cfg['device']}; same data order for the same seed in every "
        "method. Accuracy: the bit-exact accelerator model's on the test set, after `export/to_finn.py` "
        f"({cfg['board']} build, {cfg['verify_samples'] or 'all'} images compared at every FINN level); "
        "`mismatches` adds up every level's integer-score mismatches (trained vs collapsed on all test images, "
        "QONNX, FINN graphs, accelerator model). Float reference: same topology, ReLU, its own Adam learning rate "
        f"(chosen from {', '.join(f'{lr:g}' for lr in cfg['float_lrs'])} on a validation split of the training "
        "set). Gap closed: (method - STE) / (float - STE). Δ vs STE ± its standard error over seeds (Welch); "
        "'no measurable difference' where |Δ| is within two standard errors. Time per epoch relative to STE: "
        "'alone', each method alone (`timing` phase, one thread, 200 steps); 'in run', the median training "
        "seconds per epoch of the full runs (the `--jobs` workers side by side, so only their ratio means "
        "something; on a machine shared with other work both are noisy).", ""]
    counts = []
    for name, s in data["summary"].items():
        entries = s["methods"].values()
        finished, planned = sum(e["finished"] for e in entries), sum(e["planned"] for e in entries)
        checked = sum(e["hardware_checked"] for m, e in s["methods"].items() if m != FLOAT)
        bnn = sum(e["finished"] for m, e in s["methods"].items() if m != FLOAT)
        counts.append(f"{name.upper()} {finished} of {planned} trainings finished"
                      + (f" ({checked} of {bnn} checkpoints through the hardware phase)" if bnn else ""))
    if not data["complete"]:
        lines[2] = lines[2].replace(f"Status: {state}.", f"Status: {state}: {'; '.join(counts)}.")
    for name, s in data["summary"].items():
        model, bits = s["model"], s["input_bits"]
        form = "UINT8 input" if bits == 8 else "`--input-bits 1` (binarized input)"
        gpu_only = model == "cnv" and not cfg["device"].startswith("NVIDIA") and not any(
            e["finished"] for e in s["methods"].values())
        lines += [f"## {model.upper()}-w1a1, {form}, {s['epochs']} epochs", ""]
        if gpu_only:
            lines += [f"Needs a GPU: its {sum(e['planned'] for e in s['methods'].values())} trainings were not run on the "
                      "CPU, and no shortened run stands in for them; the GPU recipe is below.", ""]
        lines += ["| method | seeds | accuracy mean ± std | min – max | accuracy from | Δ vs STE (± s.e.) | measurable? "
                  "| gap closed | epochs to STE final | time/epoch vs STE: alone, in run | mismatches |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for method, e in s["methods"].items():
            label = METHOD_LABELS.get(method, method)
            if "mean" not in e:
                lines.append(f"| {label} | 0 / {e['planned']} | {'needs a GPU' if gpu_only else 'not run yet'} "
                             "| | | | | | | | |")
                continue
            gap = e.get("gap_closed")
            ratio = e.get("time_vs_ste")
            in_run = e.get("in_run_time_vs_ste")
            times = ", ".join(["" if ratio is None else f"{ratio:.2f}x", "" if in_run is None else f"{in_run:.2f}x"])
            mism = "n/a" if method == FLOAT else f"{e['collapse_mismatches'] + e['hardware_mismatches']}"
            if method != FLOAT and e["hardware_checked"] < e["finished"]:
                mism += f" (hardware on {e['hardware_checked']} of {e['finished']})"
            reach = e.get("epochs_to_ste_final")
            seeds = f"{e['finished']} / {e['planned']}"
            if e["finished"] < e["planned"]:
                seeds += f" ({e['planned'] - e['finished']} not run yet)"
            delta = _pct(e.get("delta_vs_ste"), True)
            if "delta_se" in e:
                delta += f" ± {_pct(e['delta_se'])}"
            measurable = "" if "measurable" not in e else ("yes" if e["measurable"] else "no measurable difference")
            lines.append(
                f"| {label}{' (lr ' + format(e['lr'], 'g') + ')' if method == FLOAT else ''} | {seeds} | "
                f"{_pct(e['mean'])} ± {_pct(e['std']) if e['finished'] > 1 else 'n/a (1 seed)'} | {_pct(e['min'])} – {_pct(e['max'])} | {e['accuracy_source']} | "
                f"{delta} | {measurable} | "
                f"{'' if gap is None else f'{100 * gap:.0f} %'} | {'never' if reach is None and 'delta_vs_ste' in e else (reach or '')} | "
                f"{times} | {mism} |")
        checked = [e for m, e in s["methods"].items() if m != FLOAT and e.get("hardware_checked")]
        if checked:
            executed = list(dict.fromkeys(lv for e in checked for lv in e["hardware_levels_executed"]))
            levels_args = sorted({a for e in checked for a in e["hardware_levels_arg"]})
            how = "its default levels" if levels_args == ["default"] else f"`--levels {', '.join(levels_args)}`"
            empty = list(dict.fromkeys(lv for e in checked for lv in e.get("hardware_levels_empty", [])))
            skipped = {n: r for e in checked for n, r in e.get("hardware_levels_skipped", {}).items()}
            ran = ", ".join(f"{lv} (no node of its kind in this build: nothing to simulate)" if lv in empty else lv
                            for lv in executed)
            lines += ["", f"Hardware phase: `export/to_finn.py` with {how}; levels that ran: {ran}"
                      + (f"; not run here: {'; '.join(f'{n} ({r})' for n, r in skipped.items())}" if skipped else "")
                      + "; then `onebit validate --backend model` on the whole test set."]
        if s.get("float_check"):
            f = s["float_check"]
            lines += ["", f"Float reference {_pct(f['float_mean'])} % vs best binary net {_pct(f['best_binary_mean'])} %: "
                      + ("at or above every binary net." if f["float_at_or_above_every_binary"] else
                         "**below a binary net**: the reference is not tuned well enough.")]
        if s["float_tuning"]:
            lines += ["", "Float learning-rate tuning (validation accuracy): " + ", ".join(
                f"lr {lr}: {_pct(acc)}" for lr, acc in s["float_tuning"].items())
                + (f"; chosen {s['float_lr']:g}." if s["float_lr"] is not None else "; the other tuning runs not finished yet.")]
        c = s.get("ste_schedule_check")
        if c and "gain_mean" in c:
            gain = f"{_pct(c['gain_mean'], True)}" + (f" ± {_pct(c['gain_se'])}" if c["gain_se"] is not None else "")
            where = f" ([{c['report']}]({c['report']}), with curves)" if c.get("report") else ""
            lines += ["", f"STE plateau check (schedule length): the same {c['seeds']} STE seeds trained for "
                      f"{c['longer_epochs']} epochs instead of {c['epochs']}{where} end at {_pct(c['longer_mean'])} ± "
                      f"{_pct(c['longer_std'])} % ({c['longer_accuracy_source']}, {c['longer_mismatches']} mismatches); "
                      f"gain per seed {', '.join(_pct(d, True) for d in c['per_seed_gain'].values())}, mean {gain} "
                      "(± paired standard error): "
                      + ("one seed, no standard error: undecided (run more seeds)." if c["plateaued"] is None else
                         f"no gain beyond two standard errors: doubling the schedule does not measurably beat {c['epochs']} "
                         f"epochs (with {c['seeds']} seeds a gain up to {_pct(c['gain_mean'] + 2 * c['gain_se'], True)} is not "
                         "ruled out)." if c["plateaued"]
                         else f"**still gaining**: {c['epochs']} epochs is short of STE's plateau.")]
        elif s["ste_plateau"]:
            p = s["ste_plateau"]
            lines += ["", f"STE plateau check: not run (no longer schedule given with `--schedule-check`). Over the last "
                      f"5 epochs STE gained {_pct(p['last_5_epochs_gain'], True)} points; under the per-step cosine decay "
                      "every schedule gains at its end, so that alone does not say whether a longer one ends higher."]
        lines.append("")
    if any("mean_curve" in e for s in data["summary"].values() for e in s["methods"].values()):
        lines += [f"Curves: [{stem.with_suffix('.png').name}]({stem.with_suffix('.png').name}) (mean over seeds, band: ± one "
                  "standard deviation).", ""]
    projection = data.get("projection")
    if projection:
        lines += [f"Timing phase projection: the {projection['runs']} trainings take {projection['serial_minutes']:.1f} "
                  f"device-minutes if they ran one after another on {projection['device']} (concurrent processes overlap "
                  "their host-side work; the GPU executes one process's kernels at a time).", ""]
    lines += [RUN_RECIPE]
    return "\n".join(lines)


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    # one panel per table that has curves (a CNV table waiting for a GPU gets none)
    tables = {name: s for name, s in summary.items() if any("mean_curve" in e for e in s["methods"].values())}
    fig, axes = plt.subplots(1, len(tables), figsize=(6.5 * len(tables), 4.8), squeeze=False)
    for ax, (name, s) in zip(axes[0], tables.items()):
        for method, e in s["methods"].items():
            if "mean_curve" not in e:
                continue
            mean, std = 100 * np.array(e["mean_curve"]), 100 * np.array(e["std_curve"])
            epochs = np.arange(1, len(mean) + 1)
            line, = ax.plot(epochs, mean, linestyle="--" if method == FLOAT else "-",
                            label=f"{METHOD_LABELS.get(method, method)} ({_pct(e['mean'])}%, {e['finished']} seeds)")
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        form = "UINT8 input" if s.get("input_bits", 8) == 8 else "--input-bits 1"
        ax.set(xlabel="epoch", ylabel="test accuracy (%)",
               title=f"{s.get('model', name).upper()}-w1a1, {form}, Fashion-MNIST")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        finals = [100 * e["mean"] for e in s["methods"].values() if "mean" in e]
        if finals:
            ax.set_ylim(max(0.0, min(finals) - 8), min(100.0, max(finals) + 2))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)


# ------------------------------------------------------------------------------------------------
# moving the work between machines (the device returns at most 64 MiB in 8 files)
# ------------------------------------------------------------------------------------------------
def pack(work: Path, path: Path, state_budget_mib: float) -> dict[str, Any]:
    """A tar.xz of what another machine needs to continue: every run's small files and collapsed.pt, and
    the resumable states of unfinished runs, most advanced first, while they fit in `state_budget_mib`
    (the others restart there). Trained model.pt files stay (the collapsed ones are checked equal)."""
    included, left = [], []
    budget = state_budget_mib * 2**20
    states = []
    with io.BytesIO() as buffer:
        with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
            for file in sorted(work.rglob("*")):
                if not file.is_file() or "hw" in file.relative_to(work).parts[2:3] or file.name == "model.pt":
                    continue
                if file.name == "state.pt":
                    if not (file.parent / "result.json").is_file():
                        states.append(file)
                    continue
                tar.add(file, arcname=str(file.relative_to(work)))
            for file in sorted(states, key=lambda f: -_epochs_done(f.parent)):
                if file.stat().st_size <= budget:
                    budget -= file.stat().st_size
                    tar.add(file, arcname=str(file.relative_to(work)))
                    included.append(file.parent.name)
                else:
                    left.append(file.parent.name)
        payload = buffer.getvalue()
    # the device machine returns files of at most 16 MiB: a larger archive is written in numbered parts
    for old in path.parent.glob(path.name + ".part*"):
        old.unlink()
    if len(payload) <= PART_BYTES:
        write_atomic(path, lambda tmp: tmp.write_bytes(payload))
        files = [path]
    else:
        path.unlink(missing_ok=True)
        files = [path.with_name(f"{path.name}.part{i}") for i in range(math.ceil(len(payload) / PART_BYTES))]
        for i, part in enumerate(files):
            chunk = payload[i * PART_BYTES : (i + 1) * PART_BYTES]
            write_atomic(part, lambda tmp, chunk=chunk: tmp.write_bytes(chunk))
    return {"archive": [str(f) for f in files], "bytes": len(payload), "states_included": included, "states_left_out": left}


def unpack(path: Path, work: Path) -> None:
    """Extract an archive written by `pack` (PATH, or its parts PATH.part0, PATH.part1, ...) into `work`."""
    parts = sorted(path.parent.glob(path.name + ".part*"), key=lambda f: int(f.name.rsplit(".part", 1)[1]))
    if not path.is_file() and not parts:
        raise OnebitError(f"--unpack {path}: no such file (nor {path.name}.part0, ...); give the archive written by --pack")
    payload = path.read_bytes() if path.is_file() else b"".join(f.read_bytes() for f in parts)
    work.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:xz") as tar:
        tar.extractall(work, filter="data")


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores)"


def _epochs_arg(text: str) -> dict[str, int]:
    """"40" (every model) or "cnv=40,tfc=30"."""
    if "=" not in text:
        return {m: int(text) for m in MODELS}
    result = dict(DEFAULT_EPOCHS)
    for item in text.split(","):
        key, _, value = item.partition("=")
        result[key.strip()] = int(value)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bench/estimators_full.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", default="timing,train,hardware,report", help="comma list of timing,train,hardware,report; or render (the report again from its JSON)")
    parser.add_argument("--models", default="cnv,tfc")
    parser.add_argument("--methods", default=",".join(METHODS + (FLOAT,)))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--input-bits", default="8",
                        help="input forms, comma list run in this order: 8 (UINT8 pixels), 1 (binarized, "
                             "the trainer's --input-bits 1); e.g. 8,1")
    parser.add_argument("--epochs", type=_epochs_arg, default=dict(DEFAULT_EPOCHS), help="N, or cnv=N,tfc=M (default 30 each)")
    parser.add_argument("--lr", type=float, default=0.02, help="the BNNs' Adam learning rate (the trainer's default)")
    parser.add_argument("--float-lrs", default=",".join(f"{lr:g}" for lr in FLOAT_LRS), help="float reference's candidate lrs")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--limit-test", type=int, default=None)
    parser.add_argument("--arch", action="append", default=[], metavar="MODEL=JSON",
                        help="architecture override per model, e.g. 'tfc={\"hidden\": [32, 32]}' (smoke runs)")
    parser.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST idx files")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--jobs", type=int, default=None,
                        help="concurrent trainings on this machine (default: all on cuda, 1 on cpu; 0: one after "
                             "another in this process)")
    parser.add_argument("--runner", default="ray", choices=("ray", "processes"),
                        help="how the trainings run: ray (default), as tasks of onebit's sweep runner on local Ray or "
                             "the cluster at --address; processes, worker processes of this script (no Ray needed)")
    parser.add_argument("--address", default=None,
                        help="--runner ray: a running Ray cluster (auto on a cluster node, or ray://HOST:10001); the "
                             "work folder must be on storage every node shares")
    parser.add_argument("--cpus-per-run", type=float, default=None,
                        help="--runner ray: CPUs each training asks Ray for (default 1; its torch threads)")
    parser.add_argument("--gpus-per-run", type=float, default=None,
                        help="--runner ray with --device cuda: GPUs each training asks for (default 1/--jobs: the "
                             "runs share one GPU; on a cluster e.g. 1, or 0.25 for four per GPU)")
    parser.add_argument("--budget-minutes", type=float, default=None, help="stop the trainings after this long (exit 3)")
    parser.add_argument("--stop-after-epochs", type=int, default=None, help="each run trains at most this many epochs in this call")
    parser.add_argument("--timing-steps", type=int, default=50, help="steps per timed epoch in the timing phase")
    parser.add_argument("--board", default="Pynq-Z1")
    parser.add_argument("--verify-samples", type=int, default=1000, help="images compared at every FINN level (0: all)")
    parser.add_argument("--hw-methods", default=",".join(METHODS), help="methods whose checkpoints go to hardware")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="per-run states, checkpoints, builds")
    parser.add_argument("--out", type=Path, default=RESULTS / "estimators_full", help="result stem (.json, .md, .png)")
    parser.add_argument("--schedule-check", type=Path, default=None, metavar="JSON",
                        help="report JSON of the same STE runs on a longer schedule (--methods ste --epochs N): "
                             "the STE plateau check compares them seed by seed")
    parser.add_argument("--pack", type=Path, default=None, help="afterwards, write a tar.xz to continue elsewhere")
    parser.add_argument("--pack-state-mib", type=float, default=25.0,
                        help="room for unfinished runs' states in --pack (the device returns 64 MiB in all)")
    parser.add_argument("--unpack", type=Path, default=None, help="first, unpack an archive written by --pack into --work")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.work = args.work.resolve()
    if args.worker:
        return args
    args.phases = [p.strip() for p in args.phase.split(",") if p.strip()]
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.hw_methods = [m.strip() for m in args.hw_methods.split(",") if m.strip()]
    try:
        args.input_bits = list(dict.fromkeys(int(x) for x in args.input_bits.split(",") if x.strip()))
    except ValueError:
        args.input_bits = [0]
    if not args.input_bits or any(b not in (8, 1) for b in args.input_bits):
        raise OnebitError(f"--input-bits {args.input_bits}: give 8, 1 or 8,1 (UINT8 pixels, binarized input)")
    bad = ([p for p in args.phases if p not in ("timing", "train", "hardware", "report", "render")]
           + [m for m in args.models if m not in MODELS] + [m for m in args.methods if m not in METHODS + (FLOAT,)]
           + [m for m in args.hw_methods if m not in METHODS])
    if bad:
        raise OnebitError(f"unknown phase/model/method {', '.join(bad)}; phases timing,train,hardware,report,render; "
                          f"models {', '.join(MODELS)}; methods {', '.join(METHODS + (FLOAT,))}")
    if "ste" in args.methods:  # the others are compared with it
        args.methods = ["ste"] + [m for m in args.methods if m != "ste"]
    try:
        args.float_lrs = [float(x) for x in args.float_lrs.split(",") if x.strip()]
    except ValueError:
        raise OnebitError(f"--float-lrs {args.float_lrs!r}: give numbers, e.g. 0.001,0.003,0.01") from None
    arch: dict[str, dict[str, Any]] = {}
    for item in args.arch:
        model, _, text = item.partition("=")
        try:
            arch[model.strip()] = json.loads(text)
        except json.JSONDecodeError:
            raise OnebitError(f"--arch {item!r}: give MODEL=JSON, e.g. 'tfc={{\"hidden\": [32, 32]}}'") from None
    args.arch = arch
    missing = [m for m in args.models if m not in args.epochs]
    if missing or any(v < 1 for v in args.epochs.values()) or args.seeds < 1:
        raise OnebitError("--epochs and --seeds must be >= 1 for every model; e.g. --epochs cnv=40,tfc=40")
    if args.address and args.runner != "ray":
        raise OnebitError("--address is a Ray cluster's: give it with --runner ray (the default)")
    if (args.cpus_per_run is not None and args.cpus_per_run <= 0) or (args.gpus_per_run is not None and not (
            0 < args.gpus_per_run <= 1 or (args.gpus_per_run > 1 and args.gpus_per_run == int(args.gpus_per_run)))):
        raise OnebitError("--cpus-per-run must be > 0 and --gpus-per-run a share of one GPU (0 < x <= 1) or whole GPUs")
    if args.device == "cuda" and not args.address:  # on a cluster, Ray checks that it has GPUs
        import torch

        if not torch.cuda.is_available():
            raise OnebitError("--device cuda requested but torch sees no CUDA device; use --device cpu")
    return args


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker:
        return run_worker(RunSpec(**json.loads(args.worker)), args.work,
                          [float(x) for x in args.float_lrs.split(",") if x.strip()])
    args.work.mkdir(parents=True, exist_ok=True)
    runs = plan(args)
    done = True
    from onebit.sweep.runner import SweepLock

    with SweepLock(args.work):  # a second driver on the same work folder would train the same runs twice
        if args.unpack:
            unpack(args.unpack, args.work)
        if "timing" in args.phases:
            phase_timing(args)
        if "train" in args.phases:
            done = phase_train(args, runs) and done
        if "hardware" in args.phases:
            done = phase_hardware(args, runs) and done
    data = None
    if "report" in args.phases:
        data = write_report(args, runs, args.out)
        print(args.out.with_suffix(".md").read_text())
    elif "render" in args.phases:
        data = render(args)
        print(args.out.with_suffix(".md").read_text())
    if args.pack:
        packed = pack(args.work, args.pack, args.pack_state_mib)
        print(f"packed {packed['bytes'] / 2**20:.1f} MiB into {', '.join(packed['archive'])}; unfinished states included: "
              f"{len(packed['states_included'])}, left out (restart): {len(packed['states_left_out'])}", file=sys.stderr)
    if data is not None and any(e.get("collapse_mismatches", 0) + e.get("hardware_mismatches", 0)
                                for s in data["summary"].values() for e in s["methods"].values()):
        return 1
    return 0 if done else INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
