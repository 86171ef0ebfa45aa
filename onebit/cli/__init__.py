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
    "build": ("hw.pipeline", "checkpoint or QONNX model -> FINN build for a board, with bit-exact verification"),
    "export": ("hw.pipeline", "the same command as build (an alias: the name of export/to_finn.py)"),
    "steps": ("hw.pipeline", "list a build's steps, for --stop-after/--start-from (= onebit build --list-steps)"),
    "validate": ("hw.check.validate", "run a test set through software and the accelerator, compare"),
    "bench": ("bench.run_all", "run the benchmarks, results under bench/results/"),
    "sweep": ("onebit.sweep", "grids of trainings and builds as Ray tasks (local or a cluster), one results table"),
    "unlock": ("onebit.cli.unlock", "clear the lock a killed onebit left on a build folder (e.g. from another host)"),
    "demo": ("onebit.cli.demo", "the main job end to end: train TFC-w1a1 on Fashion-MNIST, build, verify"),
}

PREFIX_ARGS = {"steps": ["--list-steps"]}  # `onebit steps [build options]` is `onebit build --list-steps [...]`


def _usage() -> str:
    lines = ["usage: onebit [--version] [-v] <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "options:", "  --version      print onebit's version and exit",
              "  -v, --verbose  onebit's debug messages on the console too (the build log always has them)",
              "", "`onebit <command> --help` lists a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    while argv and argv[0] in ("-v", "--verbose", "--version"):
        if argv[0] == "--version":
            from onebit import __version__

            print(f"onebit {__version__}")
            return 0
        verbose = True
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        import difflib

        close = difflib.get_close_matches(command, SUBCOMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        print(f"onebit: unknown command '{command}'{hint} (known: {', '.join(SUBCOMMANDS)})", file=sys.stderr)
        return 2
    from onebit import interrupts, invocation, log

    interrupts.install()  # before the stage's heavy imports, which could swallow a Ctrl-C
    invocation.invoked_as = f"onebit {command}"
    log.configure_console(verbose=verbose)
    try:
        module = importlib.import_module(SUBCOMMANDS[command][0])
    except ModuleNotFoundError as error:
        if command == "bench" and error.name in ("bench", "bench.run_all"):
            print("onebit: `onebit bench` runs from a checkout of the repository (bench/ is not part of the "
                  "installed package); clone it and run `make bench`", file=sys.stderr)
            return 2
        raise
    return int(module.main(PREFIX_ARGS.get(command, []) + rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
