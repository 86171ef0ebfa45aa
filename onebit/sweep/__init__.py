"""`onebit sweep SPEC`: grids of trainings and builds as Ray tasks, on this machine or a Ray cluster.

Every run is an ordinary onebit run (`quant_models.train`, `onebit build`) in its own folder under the sweep
folder; a build depends on its training. A rerun of the same command skips the runs that finished (their
results checked by sha256) and runs the rest; a failed run is recorded with its one-line error and does not stop
the others. At the end (also after Ctrl-C): results.md/.json/.csv and accuracy/FPS-against-LUT plots with the
Pareto front per board. The spec format: onebit/sweep/spec.py; running on a cluster: docs/sweeps.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from onebit.errors import cli_errors
from onebit.invocation import program_name


@cli_errors
def main(argv: list[str] | None = None) -> int:
    from onebit.sweep import spec as spec_module

    parser = argparse.ArgumentParser(prog=program_name("onebit sweep"), description=__doc__.splitlines()[0],
                                     epilog="spec format:\n" + spec_module.__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", type=Path, help="the sweep spec (YAML or JSON)")
    parser.add_argument("--out", type=Path, default=None, help="sweep folder (default sweeps/<name>)")
    parser.add_argument("--address", default=None,
                        help="a running Ray cluster (ray://HOST:10001, or 'auto' on a cluster node); default: a local "
                             "Ray instance on this machine")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs of the local Ray instance (default: all); each run asks for the spec's resources")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and which are done; run nothing")
    args = parser.parse_args(argv)
    from onebit.errors import OnebitError
    from onebit.sweep.runner import finished_record, run_sweep

    if args.num_cpus is not None and args.num_cpus < 1:
        raise OnebitError(f"--num-cpus must be >= 1, got {args.num_cpus}")
    if args.dry_run:
        spec = spec_module.read_spec(args.spec)
        runs = spec_module.expand(spec, base=args.spec.resolve().parent)
        folder = (args.out or Path("sweeps") / str(spec["name"])).resolve()
        for run in runs:
            done = finished_record(run, folder / run.kind / run.key) is not None
            after = f" (after train/{run.depends_on})" if run.depends_on else ""
            print(f"{'done ' if done else 'to do'}  {run.id}{after}")
        return 0
    result = run_sweep(args.spec, args.out, args.address, args.num_cpus)
    failed = [r for r in result["runs"] if r["status"] != "finished"]
    print(f"results: {result['folder'] / 'results.md'} (.json, .csv, plots); "
          f"{len(result['runs']) - len(failed)} of {len(result['runs'])} runs finished")
    return 1 if failed else 0
