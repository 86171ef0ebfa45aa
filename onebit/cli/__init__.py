"""The `onebit` console command: one subcommand per stage, each a thin dispatch to that stage's `main`.

Every stage module exposes `main(argv: list[str] | None) -> int`, so `python -m quant_models.train`,
`python export/to_finn.py` and `onebit <cmd>` share one implementation and one set of option names.
Imports are lazy so that `onebit --help` stays fast and a stage's heavy imports (torch, finn) load only
when it runs.
"""
from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("quant_models.train", "train a 1-bit model and write a self-describing model.pt"),
    "export": ("export.to_finn", "checkpoint -> QONNX -> FINN build, with verification"),
    "build": ("hw.pipeline", "FINN build of a checkpoint for a board (full flow where Vivado exists)"),
    "validate": ("hw.check.validate", "run a test set through software and the accelerator, compare"),
    "bench": ("bench.run_all", "run the benchmarks, results under bench/results/"),
    "unlock": ("onebit.cli.unlock", "clear the lock a killed onebit left on a build folder (e.g. from another host)"),
    "demo": ("onebit.cli.demo", "the main job end to end: train TFC-w1a1 on Fashion-MNIST, build, verify"),
}


def _usage() -> str:
    lines = ["usage: onebit <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines.append("\n`onebit <command> --help` lists a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"onebit: unknown command '{command}'; known: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    from onebit import interrupts

    interrupts.install()  # before the stage's heavy imports, which could swallow a Ctrl-C
    module = importlib.import_module(SUBCOMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
