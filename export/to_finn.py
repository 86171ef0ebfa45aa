"""`python export/to_finn.py model.pt`: checkpoint -> collapse -> QONNX -> FINN build -> verification -> report.

`python export/to_finn.py model.onnx --input-scale 1/255 ...`: a QONNX model from elsewhere (Brevitas
export_qonnx, QONNX zoo) through the same build, verified against itself (export/qonnx_import.py).

The command of docs/design.md §3. The pipeline itself lives in hw/pipeline.py (`run_pipeline`), because the
FINN build is the hw stage and a stage may only import earlier ones; this entry point dispatches to it at
run time, exactly as `onebit export` does (the same options as `onebit build`).

Run as a plain script from anywhere: the repository root (this file's parent's parent) is put on sys.path
so `quant_models`, `export` and `hw` import without installing the package, and export/ itself is
taken off sys.path (its qonnx.py would shadow the qonnx package).
Defaults: auto-fold to the board (I/O-aware), the whole test set through the PyTorch levels and the first
200 images (--python-samples) through qonnx's and FINN's Python execution.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Python puts this file's folder (export/) first on sys.path; export/qonnx.py would then shadow the
    # qonnx package. Replace it with the repository root.
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != Path(_here)]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onebit.errors import cli_errors  # noqa: E402
from onebit.invocation import program_name


@cli_errors
def main(argv: list[str] | None = None) -> int:
    from hw.pipeline import command_line

    return command_line("python export/to_finn.py",
                        "export a onebit checkpoint (or a QONNX model.onnx with its input declared) to FINN: collapse, "
                        "QONNX, FINN build, bit-exact verification", argv)


if __name__ == "__main__":
    raise SystemExit(main())
