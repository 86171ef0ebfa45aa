"""`onebit bench` / `make bench`: every benchmark in one run, then an index of their results.

1. trains the two reference checkpoints (TFC-w1a1 and CNV-w1a1 on Fashion-MNIST) and builds them with
   `onebit build` (FINN, Pynq-Z1, verification on the test set), unless `--work` already holds them;
2. bench/accel_speed.py: accelerator model vs FINN Python execution vs PyTorch on those builds;
3. bench/folding.py: automatic folding vs finn-examples' published folding;
4. bench/estimators.py: the training methods against STE (`--quick` unless `--full`);
5. bench/methods_hw.py (only when asked, `--only methods`: about an hour on 2 CPU cores): every training
   method trained, built with FINN and validated on the accelerator model by the user's commands.
Each writes its own results; this script writes bench/results/index.md with their wall times.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from onebit.errors import OnebitError, cli_errors  # noqa: E402
from onebit.invocation import program_name

RESULTS = REPO / "bench" / "results"
REFERENCE_RUNS = {  # name: (training options, build options)
    "tfc": (dict(model="tfc", epochs=10), dict(verify_samples=0)),
    "cnv": (dict(model="cnv", epochs=1, limit_train=10000), dict(verify_samples=1000)),
}


def reference_build(name: str, work: Path) -> Path:
    """The build folder of a reference checkpoint, trained and built here if it is not there yet."""
    from hw.options import BuildOptions
    from hw.pipeline import run_pipeline
    from quant_models.train import TrainConfig, train

    build_dir = work / f"{name}-build"
    if (build_dir / "report.json").is_file():
        return build_dir
    checkpoint = work / f"{name}.pt"
    options, build_options = REFERENCE_RUNS[name]
    if not checkpoint.is_file():
        train(TrainConfig(estimator="ste", out=str(checkpoint), **options))
    code = run_pipeline(BuildOptions(checkpoint, board="Pynq-Z1", out=build_dir, **build_options))
    if code != 0:
        raise OnebitError(f"the reference build of {name} failed (exit {code}); see {build_dir}/report.md")
    return build_dir


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=program_name("onebit bench"), description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "build" / "bench",
                        help="folder for the reference checkpoints and builds (default build/bench)")
    parser.add_argument("--full", action="store_true", help="the full estimator benchmark (hours on CPU)")
    parser.add_argument("--only", default="accel,folding,estimators", help="comma list of benchmarks to run (also: methods)")
    args = parser.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(chosen) - {"accel", "folding", "estimators", "methods"})
    if unknown:
        raise OnebitError(f"unknown benchmark(s) {unknown}; choose from accel, folding, estimators, methods")
    args.work.mkdir(parents=True, exist_ok=True)

    from bench import accel_speed, estimators, folding, methods_hw

    runs: dict[str, dict] = {}
    for bench in chosen:
        started = time.perf_counter()
        if bench == "accel":
            builds = {name: reference_build(name, args.work) for name in REFERENCE_RUNS}
            code = accel_speed.main(["--tfc", str(builds["tfc"]), "--cnv", str(builds["cnv"])])
            results = "accel_speed.md"
        elif bench == "folding":
            code = folding.main([])
            results = "folding.md"
        elif bench == "methods":
            code = methods_hw.main(["--work", str(args.work / "methods_hw")])
            results = "methods_hw.md"
        else:
            code = estimators.main([] if args.full else ["--quick"])
            results = "estimators.md" if args.full else "estimators_quick.md"
        runs[bench] = {"exit_code": code, "seconds": round(time.perf_counter() - started, 1), "results": results}

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "index.json").write_text(json.dumps(runs, indent=1))
    lines = ["# onebit benchmarks", "", "| benchmark | exit code | wall time (s) | results |", "|---|---|---|---|"]
    lines += [f"| {b} | {r['exit_code']} | {r['seconds']} | [{r['results']}]({r['results']}) |" for b, r in runs.items()]
    (RESULTS / "index.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return max((r["exit_code"] for r in runs.values()), default=0)


if __name__ == "__main__":
    raise SystemExit(main())
