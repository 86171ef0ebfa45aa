"""`make demo` / `python -m onebit demo`: the main job end to end, on this machine in minutes.

Train TFC-w1a1 on Fashion-MNIST (quant_models.train), write build/demo/model.pt, export and build it for
Pynq-Z1 with finn-plus (hw/finn/build.py), verify every level bit-exactly on all 10,000 test images, print a
summary. The same code path as `onebit build model.pt --board Pynq-Z1 --verify-samples 0 --python-samples 0`
(TFC's Python levels are fast enough for the whole test set; a CNV build samples them by default).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from onebit.errors import OnebitError, cli_errors
from onebit.invocation import program_name

DEFAULT_EPOCHS = 5  # ~1 min/epoch on 2 cores; >= 80 % test accuracy (measured numbers in the report)


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=program_name("onebit demo"), description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/demo"), help="build folder (default build/demo)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"training epochs (default {DEFAULT_EPOCHS})")
    parser.add_argument("--board", default="Pynq-Z1")
    parser.add_argument("--input-bits", type=int, default=8, choices=(8, 1),
                        help="8: UINT8 pixels into the first binary layer; 1: binarized input (pixel >= 128)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from hw.boards import get_board
    from hw.options import BuildOptions
    from hw.pipeline import run_pipeline
    from quant_models.train import TrainConfig, train

    get_board(args.board)  # fail before training on a bad board name
    started = time.perf_counter()
    from onebit.buildfolder import BuildFolder

    with BuildFolder(args.out, "onebit demo") as folder:  # the checkpoint is the build's model.pt: onebit's file
        folder.claim(["model.pt", "model.curve.png"])
    checkpoint = args.out / "model.pt"
    print(f"[1/2] training TFC-w1a1 on Fashion-MNIST, {args.epochs} epochs -> {checkpoint}")
    _, meta = train(TrainConfig(model="tfc", estimator="ste", dataset="fashion-mnist", epochs=args.epochs,
                                input_bits=args.input_bits, out=str(checkpoint), progress=not args.no_progress))
    trained_seconds = time.perf_counter() - started
    print(f"      test accuracy {meta['metrics']['test_accuracy']:.2%} after {trained_seconds:.0f} s")
    print(f"[2/2] export + FINN build for {args.board} + verification on all test images")
    code = run_pipeline(BuildOptions(checkpoint, board=args.board, out=args.out, verify_samples=0, python_samples=0,
                                     no_progress=args.no_progress))
    total = time.perf_counter() - started
    print(f"demo finished in {total:.0f} s (training {trained_seconds:.0f} s); "
          f"{'all levels bit-exact' if code == 0 else 'MISMATCHES: see validation/mismatches.md'}")
    if meta["metrics"]["test_accuracy"] < 0.80:
        raise OnebitError(f"TFC-w1a1 reached only {meta['metrics']['test_accuracy']:.2%} (< 80 %); "
                          "train longer with --epochs")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
