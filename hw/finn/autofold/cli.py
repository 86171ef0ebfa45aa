"""`python -m hw.finn.autofold MODEL --board B --out DIR`: auto-fold a saved HW-layer graph and write the report."""
from __future__ import annotations

import argparse
from pathlib import Path

from onebit.errors import cli_errors

from .costs import DEFAULT_MARGIN, AutoFoldError
from .search import fold_for_board


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hw.finn.autofold",
        description="Fold a FINN HW-layer graph (after step_specialize_layers) for the best estimated FPS "
        "within a board's budget, DMAs at the board's AXI port width included; writes folding.json, a "
        "report, a resource chart and the FPS-vs-LUT search plot.",
    )
    parser.add_argument("model", help="FINN ONNX model of HLS/RTL layers (e.g. finn/step_specialize_layers.onnx)")
    parser.add_argument("--board", required=True, help="board preset, e.g. Pynq-Z1")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="usable fraction of LUT/BRAM/URAM/DSP (default 0.8)")
    parser.add_argument("--clock-mhz", type=float, default=None, help="clock (default: the board's)")
    parser.add_argument("--out", required=True, help="folder for folding.json and the report")
    args = parser.parse_args(argv)
    path = Path(args.model)
    if not path.is_file():
        raise AutoFoldError(f"model file {path} not found; pass the ONNX saved after step_specialize_layers")
    from export.onnx_domains import BUILD_DOMAINS, check_domains
    from hw.finn.env import prepare_finn

    check_domains(path, BUILD_DOMAINS)  # before qonnx, which imports each node's domain as a module (issue 23)
    prepare_finn(Path(args.out) / "finn_tmp")
    from qonnx.core.modelwrapper import ModelWrapper

    try:
        model = ModelWrapper(str(path))
    except Exception as error:  # onnx raises several unrelated types for a bad file
        raise AutoFoldError(f"cannot read {path} as ONNX ({error}); pass a FINN ONNX model") from error
    _, result = fold_for_board(model, args.board, margin=args.margin, clock_mhz=args.clock_mhz, progress=True)
    paths = result.write(args.out)
    print(f"{result.board}: {result.fps:,.0f} FPS (bottleneck {result.bottleneck}, I/O bound "
          f"{result.io_bound_fps:,.0f} FPS), LUT {result.totals['LUT']:,.0f}/{result.budget['LUT']:,.0f}, "
          f"BRAM_18K {result.totals['BRAM_18K']:,.0f}/{result.budget['BRAM_18K']:,.0f}; wrote {paths['folding']}")
    return 0
