"""How a build chooses its parallelism (PE/SIMD per layer): a folding file, a target FPS, or auto-fold.

* `--folding FILE`: a FINN folding config (JSON, `{"Defaults": {}, "<node name>": {"PE": .., "SIMD": ..}}`),
  applied by FINN's step_apply_folding_config. A build writes its final folding as `folding.json`, so a
  build can be reproduced or hand-tuned from it.
* `--target-fps N`: FINN's own SetFolding heuristic (step_target_fps_parallelization) at the board clock.
* default (or `--auto-fold`): the best FPS the board can feed within its resource budget, with the fewest
  LUT, delegated to `hw.finn.autofold` (its `auto_fold(model: ModelWrapper, board: Board) -> ModelWrapper`
  sets PE/SIMD on the HW layers).
"""
from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from onebit.errors import OnebitError

DEFAULT_TARGET_FPS = 10_000
# Node attributes that define a folding (what step_apply_folding_config reads back).
FOLDING_ATTRS = ("PE", "SIMD", "parallel_window", "ram_style", "resType", "mem_mode", "runtime_writeable_weights",
                 "depth_trigger_uram", "depth_trigger_bram", "inFIFODepths", "outFIFODepths")


class FoldingError(OnebitError):
    """A folding request that cannot be satisfied (bad file, conflicting options, no auto-fold)."""


@dataclass(frozen=True)
class FoldingSpec:
    mode: str  # "file" | "target_fps" | "auto"
    file: Path | None = None
    target_fps: int | None = None
    margin: float | None = None  # auto-fold's usable fraction of LUT/BRAM; None = hw.finn.autofold's default

    def describe(self) -> str:
        if self.mode == "file":
            return f"folding file {self.file}"
        if self.mode == "auto":
            share = f"{self.margin:.0%} of" if self.margin is not None else "the margin of"
            return f"auto-fold (best FPS within {share} the board budget)"
        return f"FINN SetFolding for {self.target_fps} FPS"


def spec_from_args(args: argparse.Namespace | Any) -> FoldingSpec:
    """--folding FILE, --target-fps N, or (default, also --auto-fold) auto-fold to the board's budget, from a
    BuildOptions (hw/options.py, where the flags are declared) or a Namespace with the same attributes."""
    margin = getattr(args, "margin", None)
    chosen = "--folding" if getattr(args, "folding", None) is not None else (
        "--target-fps" if getattr(args, "target_fps", None) is not None else None)
    if margin is not None and chosen:
        raise FoldingError(f"--margin {margin} only applies to auto-fold (the default, or --auto-fold); "
                           f"drop {chosen} or --margin")
    if getattr(args, "folding", None) is not None:
        return folding_from_file(args.folding)
    if getattr(args, "target_fps", None) is not None:
        return target_fps(args.target_fps)
    if margin is not None and not 0.0 < margin <= 1.0:
        raise FoldingError(f"--margin must be a fraction in (0, 1] of the board's LUT/BRAM, got {margin}; e.g. --margin 0.8")
    auto_fold_function()  # fail now, before minutes of work, if it is not there
    return FoldingSpec("auto", margin=margin)


def target_fps(fps: int) -> FoldingSpec:
    if int(fps) < 1:
        raise FoldingError(f"--target-fps must be a positive number of frames per second, got {fps}")
    return FoldingSpec("target_fps", target_fps=int(fps))


def folding_from_file(path: str | Path) -> FoldingSpec:
    path = Path(path)
    if not path.is_file():
        raise FoldingError(f"folding file {path} does not exist; pass a FINN folding JSON (a build's folding.json)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FoldingError(f"folding file {path} is not valid JSON ({error}); pass a FINN folding JSON") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise FoldingError(f"folding file {path} must map node names to attribute dicts, e.g. "
                           '{"MVAU_hls_0": {"PE": 16, "SIMD": 49}}')
    from hw.finn.folding_check import check_values

    check_values(data, str(path))  # zero/negative/non-integer PE, SIMD: now; names and divisors on the graph
    return FoldingSpec("file", file=path.resolve())


def auto_fold_function() -> Callable[[Any, Any], Any]:
    """hw.finn.autofold.auto_fold, or FoldingError saying what to use instead."""
    try:
        module = importlib.import_module("hw.finn.autofold")
    except ModuleNotFoundError as error:
        if error.name != "hw.finn.autofold":
            raise
        raise FoldingError("--auto-fold needs hw/finn/autofold.py, which this installation lacks; "
                           "use --target-fps N or --folding FILE") from None
    function = getattr(module, "auto_fold", None)
    if not callable(function):
        raise FoldingError("hw.finn.autofold has no auto_fold(model, board); use --target-fps N or --folding FILE")
    return function


def extract_folding(model) -> dict[str, dict[str, Any]]:
    """The folding of a HW-layer model in FINN's folding-config format (node name -> attributes)."""
    from qonnx.custom_op.registry import getCustomOp

    config: dict[str, dict[str, Any]] = {"Defaults": {}}
    for node in model.graph.node:
        try:
            inst = getCustomOp(node)
        except Exception:  # plain ONNX nodes have no folding
            continue
        attrs: dict[str, Any] = {}
        for name in FOLDING_ATTRS:
            try:
                value = inst.get_nodeattr(name)
            except (AttributeError, Exception):
                continue
            if isinstance(value, bytes):
                value = value.decode()
            attrs[name] = value
        if attrs:
            config[node.name] = attrs
    return config
