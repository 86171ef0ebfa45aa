"""Benchmark of the training methods (issue #3): STE vs IR-Net, BinaryDuo, RBONN, Hyper-BinaryNet.

For each topology (TFC-w1a1, CNV-w1a1) on Fashion-MNIST, every method is trained with the same
epochs, optimiser and schedule (the training CLI's: Adam, cosine to 0) for several seeds, through the
same `quant_models.train.train` the CLI runs. Reported per method: mean and spread of the test
accuracy of the *exported* network (the collapsed plain binary net, checked equal to the trained
model's integer scores on every test image), accuracy per epoch, the first epoch at which the mean
curve reaches STE's final mean accuracy, and the training time per epoch relative to STE. A float
network of the same topology (real weights and hardtanh activations, same loop) is the reference.

    python bench/estimators.py --quick                      # TFC, a few epochs on part of the data (CPU)
    python bench/estimators.py --device cuda                # one run after another on a GPU

The full-length comparison (concurrent runs on one GPU, resumable, tuned ReLU float reference, hardware
accuracy of every checkpoint) is bench/estimators_full.py.

Results are written after every run (JSON, Markdown table, accuracy-vs-epoch PNG under bench/results/),
and a rerun with the same settings skips the runs already in the JSON, so a long run can be resumed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from export.collapse import collapse, integer_scores  # noqa: E402
from onebit.atomic import save_figure_atomic, write_text_atomic  # noqa: E402
from onebit.errors import OnebitError, cli_errors  # noqa: E402
from quant_models.data import load_dataset  # noqa: E402
from quant_models.train import TrainConfig, train  # noqa: E402

METHODS = ("ste", "irnet", "binaryduo", "rbonn", "hyper")
FLOAT = "float"
RESULTS = ROOT / "bench" / "results"


# ------------------------------------------------------------------------------------------------
# float reference: same topology, real weights, hardtanh activations (written here because it is a
# benchmark-only baseline that never goes to hardware)
# ------------------------------------------------------------------------------------------------
class _FloatNet(nn.Module):
    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        from bench.estimators_full import float_net

        self.net = float_net(arch, activation=nn.Hardtanh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / 255.0)


def train_float(model_name: str, epochs: int, seed: int, lr: float, batch_size: int, device: str,
                limit_train: int | None, limit_test: int | None) -> dict[str, Any]:
    from quant_models.topologies import default_arch

    torch.manual_seed(seed)
    train_set = load_dataset("fashion-mnist", "train").head(limit_train)
    test_set = load_dataset("fashion-mnist", "test").head(limit_test)
    arch = default_arch(model_name, train_set.in_shape, len(train_set.classes))
    net = _FloatNet(arch).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    x_all = torch.from_numpy(train_set.images)
    y_all = torch.from_numpy(train_set.labels)
    steps = math.ceil(len(train_set) / batch_size)
    total, step = steps * epochs, 0
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        started, cpu = time.perf_counter(), time.process_time()
        net.train()
        order = torch.randperm(len(train_set), generator=generator)
        for batch in range(steps):
            index = order[batch * batch_size : (batch + 1) * batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = nn.functional.cross_entropy(net(x_all[index].to(device, torch.float32)), y_all[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        net.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(test_set), 1000):
                x = torch.from_numpy(test_set.images[start : start + 1000]).to(device, torch.float32)
                correct += int((net(x).argmax(1).cpu().numpy() == test_set.labels[start : start + 1000]).sum())
        history.append({"epoch": epoch + 1, "test_accuracy": correct / len(test_set),
                        "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu})
    return {"history": history, "final_accuracy": history[-1]["test_accuracy"]}


def train_method(model_name: str, method: str, epochs: int, seed: int, lr: float, batch_size: int, device: str,
                 limit_train: int | None, limit_test: int | None, out_dir: Path) -> dict[str, Any]:
    cpu = time.process_time()
    config = TrainConfig(model=model_name, estimator=method, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                         device=device, limit_train=limit_train, limit_test=limit_test, out=None, progress=False)
    model, meta = train(config)
    cpu_seconds = time.process_time() - cpu
    model = model.cpu().eval()
    # accuracy of the exported network: collapse to the plain binary net and compare integers
    test_set = load_dataset("fashion-mnist", "test").head(limit_test)
    plain, _ = collapse(model, meta)
    trained_scores = integer_scores(model, test_set.images)
    plain_scores = integer_scores(plain, test_set.images)
    mismatches = int((trained_scores != plain_scores).any(axis=1).sum())
    history = meta["metrics"]["history"]
    return {
        "history": [{"epoch": h["epoch"], "test_accuracy": h["test_accuracy"], "seconds": h["seconds"]} for h in history],
        "final_accuracy": float((plain_scores.argmax(1) == test_set.labels).mean()),
        "collapse_mismatches": mismatches,
        "cpu_seconds_per_epoch": cpu_seconds / epochs,
        "final_arch": model.arch,
    }


# ------------------------------------------------------------------------------------------------
# summary
# ------------------------------------------------------------------------------------------------
def summarise(results: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for model_name, runs in results["runs"].items():
        per_method: dict[str, Any] = {}
        for method, seeds in runs.items():
            finals = [r["final_accuracy"] for r in seeds.values()]
            curves = np.array([[h["test_accuracy"] for h in r["history"]] for r in seeds.values()])
            wall = [statistics.median(h["seconds"] for h in r["history"][1:] or r["history"]) for r in seeds.values()]
            cpu = [r.get("cpu_seconds_per_epoch") or statistics.median(h["cpu_seconds"] for h in r["history"]) for r in seeds.values()]
            per_method[method] = {
                "seeds": len(finals),
                "mean": statistics.mean(finals),
                "std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
                "min": min(finals), "max": max(finals),
                "mean_curve": curves.mean(axis=0).tolist(),
                "wall_s_per_epoch": statistics.mean(wall),
                "cpu_s_per_epoch": statistics.mean(cpu),
                "collapse_mismatches": sum(r.get("collapse_mismatches", 0) for r in seeds.values()),
            }
        ste = per_method.get("ste")
        for method, s in per_method.items():
            if ste:
                target = ste["mean"]
                # numpy's and statistics' means of the same accuracies differ in the last bit
                reached = [i + 1 for i, a in enumerate(s["mean_curve"]) if a >= target - 1e-9]
                s["epochs_to_ste_final"] = reached[0] if reached else None
                s["delta_vs_ste"] = s["mean"] - ste["mean"]
                s["time_ratio_vs_ste_cpu"] = s["cpu_s_per_epoch"] / ste["cpu_s_per_epoch"]
                s["time_ratio_vs_ste_wall"] = s["wall_s_per_epoch"] / ste["wall_s_per_epoch"]
        summary[model_name] = per_method
    return summary


def write_reports(results: dict[str, Any], stem: Path) -> None:
    results["summary"] = summarise(results)
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stem.with_suffix(".json"), json.dumps(results, indent=1))
    cfg = results["config"]
    full = cfg["epochs"] >= 30 and not cfg["limit_train"] and not cfg["limit_test"]
    label = "quick mode" if cfg["mode"] == "quick" else ("full experiment" if full else "shortened run")
    lines = [f"# Training methods on Fashion-MNIST ({label})", "",
             f"epochs {cfg['epochs']}, seeds {cfg['seeds']}, train images {cfg['limit_train'] or 'all'}, "
             f"test images {cfg['limit_test'] or 'all'}, Adam lr {cfg['lr']} cosine, batch {cfg['batch_size']}, "
             f"device {cfg['device']} ({cfg['host']}). Accuracy is the exported hard-sign network's (collapsed to "
             "binary weights + integer thresholds; `mismatches` counts test images whose integer scores differ "
             "between the trained and the collapsed model). Time ratios: process CPU time per epoch relative to "
             "STE (wall-clock ratio in brackets; the machine is shared, CPU time is the steadier measure).", ""]
    for model_name, per_method in results["summary"].items():
        lines += [f"## {model_name.upper()}-w1a1", "",
                  "| method | seeds | accuracy mean ± std | min – max | Δ vs STE | epochs to STE final | time/epoch vs STE | mismatches |",
                  "|---|---|---|---|---|---|---|---|"]
        for method, s in per_method.items():
            delta = s.get("delta_vs_ste")
            reach = s.get("epochs_to_ste_final")
            ratio = s.get("time_ratio_vs_ste_cpu")
            timing = "" if ratio is None else f"{ratio:.2f}x ({s['time_ratio_vs_ste_wall']:.2f}x)"
            lines.append(
                f"| {method} | {s['seeds']} | {100 * s['mean']:.2f} ± {100 * s['std']:.2f} | "
                f"{100 * s['min']:.2f} – {100 * s['max']:.2f} | "
                f"{'' if delta is None else f'{100 * delta:+.2f}'} | {'never' if reach is None and delta is not None else (reach or '')} | "
                f"{timing} | "
                f"{'n/a' if method == FLOAT else s['collapse_mismatches']} |")
        below = [m for m, s in per_method.items() if m not in ("ste", FLOAT) and s.get("delta_vs_ste", 0) < 0]
        if below:
            lines += ["", "Below STE at equal epochs: " + ", ".join(
                f"{m} ({100 * per_method[m]['delta_vs_ste']:+.2f} points)" for m in below) + "."]
        lines.append("")
    write_text_atomic(stem.with_suffix(".md"), "\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = list(results["summary"])
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, model_name in zip(axes[0], names):
        for method, s in results["summary"][model_name].items():
            epochs = range(1, len(s["mean_curve"]) + 1)
            ax.plot(epochs, [100 * a for a in s["mean_curve"]], marker="o",
                    linestyle="--" if method == FLOAT else "-", label=f"{method} ({100 * s['mean']:.1f}%)")
        ax.set(xlabel="epoch", ylabel="test accuracy (%), mean over seeds", title=f"{model_name.upper()} on Fashion-MNIST")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure_atomic(fig, stem.with_suffix(".png"), dpi=100)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bench/estimators.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="TFC, 4 epochs, 5,000 training images (CPU minutes)")
    parser.add_argument("--models", default=None, help="comma list of tfc,cnv (default: tfc,cnv; quick: tfc)")
    parser.add_argument("--methods", default=",".join(METHODS + (FLOAT,)))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="default 30 (quick: 4)")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--limit-test", type=int, default=None)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default=None, help="result stem (default bench/results/estimators[_quick])")
    return parser


@cli_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise OnebitError("--device cuda requested but torch sees no CUDA device; use --device cpu")
    models = (args.models or ("tfc" if args.quick else "tfc,cnv")).split(",")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS + (FLOAT,)]
    if unknown or any(m not in ("tfc", "sfc", "lfc", "cnv") for m in models):
        raise OnebitError(f"unknown method/model {unknown or models}; methods: {', '.join(METHODS + (FLOAT,))}")
    if "ste" in methods:  # STE first: the others are compared with it
        methods = ["ste"] + [m for m in methods if m != "ste"]
    epochs = args.epochs or (4 if args.quick else 30)
    limit_train = args.limit_train or (5000 if args.quick else None)
    stem = Path(args.out) if args.out else RESULTS / ("estimators_quick" if args.quick else "estimators")
    stem.parent.mkdir(parents=True, exist_ok=True)
    config = {"mode": "quick" if args.quick else "full", "epochs": epochs, "seeds": args.seeds, "lr": args.lr,
              "batch_size": args.batch_size, "limit_train": limit_train, "limit_test": args.limit_test,
              "device": args.device, "host": torch.cuda.get_device_name(0) if args.device == "cuda" else f"{os.cpu_count()} CPU cores",
              "torch": torch.__version__}
    results: dict[str, Any] = {"config": config, "runs": {}}
    json_path = stem.with_suffix(".json")
    if json_path.exists():
        previous = json.loads(json_path.read_text())
        same = {k: v for k, v in previous.get("config", {}).items() if k != "host"} == {k: v for k, v in config.items() if k != "host"}
        if same:
            results["runs"] = previous.get("runs", {})
    from tqdm import tqdm

    # One tiny run per method first, so one-time costs (imports, Brevitas' first forward) are not
    # charged to whichever method happens to run first.
    for method in (m for m in methods if m != FLOAT):
        train(TrainConfig(model=models[0], estimator=method, epochs=1, limit_train=200, limit_test=100,
                          device=args.device, progress=False))
    jobs = [(m, meth, seed) for m in models for seed in range(args.seeds) for meth in methods]
    for model_name, method, seed in tqdm(jobs, desc="runs", unit="run"):
        runs = results["runs"].setdefault(model_name, {}).setdefault(method, {})
        if str(seed) in runs:
            continue
        if method == FLOAT:
            run = train_float(model_name, epochs, seed, args.lr, args.batch_size, args.device, limit_train, args.limit_test)
        else:
            run = train_method(model_name, method, epochs, seed, args.lr, args.batch_size, args.device,
                               limit_train, args.limit_test, stem.parent)
        runs[str(seed)] = run
        tqdm.write(f"{model_name} {method} seed {seed}: {100 * run['final_accuracy']:.2f}%", file=sys.stderr)
        write_reports(results, stem)
    write_reports(results, stem)
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
