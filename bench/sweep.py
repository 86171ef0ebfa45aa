"""A real design-space sweep on local Ray: models x board presets x auto-fold margins, FINN estimates only.

Every build runs onebit's build up to FINN's estimate reports (`stop_after: step_generate_estimate_reports`:
folding for the board, cycles, LUT/BRAM estimates, no verification: that is what a design-space exploration
looks at before paying for full builds), as one `onebit sweep`. The same runs go twice, into two folders: on
`--workers` Ray CPUs, and on one (one after another), and the wall times are compared as a ratio.

    python bench/sweep.py                              # TFC and CNV x 5 presets x 3 margins, 2 workers
    python bench/sweep.py --models tfc --workers 2     # TFC only

Writes bench/results/sweep.{json,md} and the sweep's Pareto plot (sweep_fps_vs_lut.png: estimated FPS against
LUT per board, each network's front in its colour). No accuracy-against-LUT plot: the checkpoints are short
trainings made here (the estimates depend on the topology, not on the accuracy), and estimate-only builds run
no verification.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from onebit.atomic import write_text_atomic  # noqa: E402
from onebit.errors import cli_errors  # noqa: E402

RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "build" / "bench_sweep"
PRESETS = ("Pynq-Z1", "Pynq-Z2", "Ultra96-V2", "ZCU104", "KV260")
TRAIN = {"tfc": ["--model", "tfc", "--epochs", "1", "--limit-train", "2000", "--limit-test", "200"],
         # narrow CNV (the fixture's widths): full CNV estimates need no more than its topology, but its auto-fold
         # search is minutes per build on 2 cores
         "cnv": ["--model", "cnv", "--epochs", "1", "--limit-train", "500", "--limit-test", "100",
                 "--arch", "channels=[16,16,32,32,64,64]", "--arch", "fc=[64,64]"]}


def _checkpoint(model: str) -> Path:
    path = WORK / f"{model}.pt"
    if not path.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "quant_models.train", *TRAIN[model], "--out", str(path), "--quiet"],
                       cwd=ROOT, check=True)
    return path


def _sweep(spec: Path, out: Path, cpus: int) -> float:
    """Wall seconds of the whole sweep from scratch on `cpus` Ray CPUs; the machine's 1-minute load average
    sampled every 10 s meanwhile (in LOADS[cpus])."""
    import os

    if out.exists():
        shutil.rmtree(out)  # timed from scratch: a resumed sweep would skip its finished runs
    samples = LOADS.setdefault(cpus, [os.getloadavg()[0]])
    started = time.perf_counter()
    sweep = subprocess.Popen([sys.executable, "-m", "onebit", "sweep", str(spec), "--out", str(out), "--num-cpus",
                              str(cpus)], cwd=ROOT)
    while True:
        try:
            code = sweep.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            samples.append(os.getloadavg()[0])
    if code not in (0, 1):
        raise SystemExit(f"bench/sweep.py: onebit sweep exited {code}")
    return time.perf_counter() - started


LOADS: dict[int, list[float]] = {}  # Ray CPUs of a sweep -> the 1-minute load averages sampled while it ran


def _load(cpus: int) -> str:
    values = LOADS.get(cpus) or [0.0]
    return f"{sum(values) / len(values):.1f} (min {min(values):.1f}, max {max(values):.1f})"


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/sweep.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tfc,cnv", help="comma list of tfc, cnv (default both)")
    parser.add_argument("--margins", default="0.5,0.65,0.8", help="auto-fold margins (default 0.5,0.65,0.8)")
    parser.add_argument("--workers", type=int, default=2, help="Ray CPUs of the parallel sweep (default 2)")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    margins = [float(m) for m in args.margins.split(",")]
    checkpoints = [str(_checkpoint(m)) for m in models]
    spec = WORK / "spec.json"
    spec.write_text(json.dumps({"name": "bench-sweep", "build": {
        "checkpoint": checkpoints, "board": list(PRESETS), "margin": margins,
        "stop_after": "step_generate_estimate_reports"}}, indent=2))
    parallel = _sweep(spec, WORK / "parallel", args.workers)
    serial = _sweep(spec, WORK / "serial", 1)
    results = json.loads((WORK / "parallel" / "results.json").read_text())
    rows = [r for r in results["rows"] if r["kind"] == "build"]
    # the one-worker sweep must give the same designs: its runs are the same builds, only scheduled otherwise
    figures = lambda rs: {r["run"]: (r["status"], r.get("fps"), r.get("lut"), r.get("bram_18k")) for r in rs}  # noqa: E731
    serial_rows = [r for r in json.loads((WORK / "serial" / "results.json").read_text())["rows"] if r["kind"] == "build"]
    same = figures(rows) == figures(serial_rows)
    per_model = {}
    for row in rows:
        per_model.setdefault(Path(str(row["varying"].get("checkpoint"))).stem, []).append(float(row["seconds"] or 0))
    for name in ("fps_vs_lut.png",):
        if (WORK / "parallel" / name).is_file():
            shutil.copy2(WORK / "parallel" / name, RESULTS / f"sweep_{name}")
    record = {"models": models, "presets": list(PRESETS), "margins": margins, "runs": len(rows),
              "finished": results["summary"]["finished"], "workers": args.workers,
              "wall_seconds_parallel": round(parallel, 1), "wall_seconds_serial": round(serial, 1),
              "speedup": round(serial / parallel, 2), "serial_same_figures": same,
              "run_seconds_per_model_parallel": {m: round(sum(v), 1) for m, v in per_model.items()},
              "load_averages": {f"{cpus}_workers": values for cpus, values in LOADS.items()}, "rows": rows}
    write_text_atomic(RESULTS / "sweep.json", json.dumps(record, indent=2, default=str) + "\n")
    lines = ["# Sweep: models x board presets x auto-fold margins, FINN estimates (local Ray)", "",
             f"`python bench/sweep.py --models {','.join(models)} --workers {args.workers}`: {len(rows)} builds up to "
             "FINN's estimate reports (`stop_after: step_generate_estimate_reports`), each an ordinary `onebit build` "
             f"in its own folder; {record['finished']} finished.", "",
             "| runs | on | wall time | ratio |", "|---|---|---:|---:|",
             f"| {len(rows)} | {args.workers} Ray workers | {parallel:.0f} s | 1.00 |",
             f"| {len(rows)} | 1 Ray worker (one after another) | {serial:.0f} s | {serial / parallel:.2f} |", "",
             f"{args.workers} workers finish the same runs {serial / parallel:.2f}x faster than one (the machine has "
             "2 cores; Ray's start-up and each run's Python start-up are in both times). Machine load while they ran "
             f"(1-minute load average, sampled every 10 s): {_load(args.workers)} during the {args.workers}-worker sweep, "
             f"{_load(1)} during the one-worker sweep. Above 2, other work shared the 2 cores (each runnable process "
             "gets about 2/load of a core), so the ratio understates what free cores give. The one-worker sweep's "
             f"estimates (FPS, LUT, BRAM per run) {'equal' if same else '**differ from**'} the {args.workers}-worker "
             "sweep's. Seconds per build in the {}-worker sweep: {}.".format(args.workers, ", ".join(
                 f"{m} {sum(v) / len(v):.0f} s on average ({len(v)} builds)" for m, v in per_model.items())), "",
             "| model | board | margin | status | estimated FPS | LUT | BRAM_18K |", "|---|---|---:|---|---:|---:|---:|"]
    for row in sorted(rows, key=lambda r: (str(r["varying"].get("checkpoint")), str(r["varying"].get("board")),
                                          float(r["varying"].get("margin") or 0))):
        v = row["varying"]
        fps = f"{row['fps']:,.0f}" if row.get("fps") else ""
        lut = f"{row['lut']:,.0f}" if row.get("lut") is not None else ""
        bram = f"{row['bram_18k']:,.0f}" if row.get("bram_18k") is not None else ""
        lines.append(f"| {Path(str(v.get('checkpoint'))).stem} | {v.get('board')} | {v.get('margin')} | "
                     f"{row['status']} | {fps} | {lut} | {bram} |")
    lines += ["", "![FPS against LUT per board, each network's Pareto front](sweep_fps_vs_lut.png)", "",
              "Per board, estimated FPS against estimated LUT: each network in its colour with its own Pareto front "
              "(its folding trade-off), the front over both ringed. No accuracy plot: these are estimate-only builds of "
              "short trainings (no verification; `onebit sweep` draws accuracy against LUT for full builds).", ""]
    write_text_atomic(RESULTS / "sweep.md", "\n".join(lines))
    print(f"wrote {RESULTS / 'sweep.md'}: {len(rows)} runs, {parallel:.0f} s on {args.workers} workers, "
          f"{serial:.0f} s on one")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
