"""Automatic folding: the best FPS a board can actually deliver, with the least hardware, within its budget.

FINN's own `target_fps` (SetFolding) asks "how little parallelism reaches N FPS"; a user with a board
asks the converse, "how fast can this network go on my board". `auto_fold` answers it with FINN's own
numbers (every cycle count a HW node's `get_exp_cycles()`, every resource figure its
`node_res_estimation()`), plus the two costs FINN's estimate leaves out: the input/output DMAs at the
board's native AXI port width (finn-plus' Zynq flow inserts them) and the width converters FINN inserts.
Parallelism beyond what the DMAs can feed buys nothing, so the search stops at the I/O bound and takes
the cheapest folding that reaches the best reachable rate.

The package, read in this order:
  streams.py  the DMA and width-converter streams: cycles per image (the I/O bound), FINN's estimates
  costs.py    folding groups (PE/SIMD/parallel_window moving together), their valid settings and FINN's
              cycles/resources for each; the board budget
  search.py   cycle targets, the cheapest folding per target, the budget cut, URAM/LUTRAM weight moves;
              auto_fold / fold_for_board / the builder step
  result.py   scoring any folding the same way (evaluate_folding), the report, the resource chart and the
              FPS-vs-LUT search plot
  cli.py      `python -m hw.finn.autofold`
"""
from .cli import main
from .costs import DEFAULT_MARGIN, RESOURCES, AutoFoldError, Budget
from .result import FoldingResult, LayerReport, apply_folding_config, evaluate_folding, fits, plot_path, plot_resources
from .search import METADATA_KEY, auto_fold, fastest_valid_folding, fold_for_board, make_autofold_step
from .streams import INPUT_DMA, OUTPUT_DMA, dma_rows, io_bound_cycles, width_converters

__all__ = [
    "DEFAULT_MARGIN", "RESOURCES", "AutoFoldError", "Budget", "FoldingResult", "LayerReport", "apply_folding_config",
    "evaluate_folding", "fits", "plot_path", "plot_resources", "METADATA_KEY", "auto_fold", "fastest_valid_folding",
    "fold_for_board", "make_autofold_step", "main", "INPUT_DMA", "OUTPUT_DMA", "dma_rows", "io_bound_cycles",
    "width_converters",
]
