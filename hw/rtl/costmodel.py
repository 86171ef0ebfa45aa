"""A cost model of onebit's RTL MVAU calibrated on yosys synthesis, for auto-fold with `--mvau rtl`.

FINN's analytical LUT formula (MVAU_hls.lut_estimation) charges onebit's RTL MVAU 2-4x what yosys
synthesizes it to (bench/results/rtl_accelerator.md), and auto-fold spends the board's budget on that
formula. This model predicts LUT / FF / BRAM18 of an onebit_mvau from its parameters, with coefficients
fitted to `synth_xilinx` runs of the real RTL (hw/rtl/yosys.py) over a small grid.

The model's form follows the hardware (hw/rtl/sv/onebit_mvau.sv):

  node = PE x dot(SIMD, mode, clock) + rest(PE, SIMD, ACC_BITS, NTHR, memories)

* dot: one PE's dot product (onebit_dot, the module yosys keeps per PE and counts once per instance),
  synthesized on its own for every SIMD of the grid, per mode (XNOR; integer x bipolar by input bits) and
  calibration clock (which sets TREE_STAGES, hw/rtl/timing.py); between grid points it is interpolated
  linearly in SIMD and beyond the last point extrapolated by the last segment's slope (synthesis shows it
  linear in SIMD there: about 1.6 LUT per XNOR lane from SIMD 64 to 576). A clock between two calibration
  clocks takes the faster one's (more pipelined, the larger) figures.
* rest: everything around the dot products, fitted by non-negative least squares (scipy nnls, relative
  error: each row scaled by 1 / the node's count) on the synthesized node minus PE x its dot, over features that count the hardware: accumulators (PE x ACC_BITS),
  threshold comparators (PE x NTHR x ACC_BITS), the weight ROM in LUTs (PE x SIMD bits x ceil(WMEM/64) 64-deep
  LUT6 slices) where it is distributed, the threshold ROM likewise, the input-vector buffer (LUTRAM, SIMD x
  IBITS bits x ceil(SF/64)), and a constant.
* BRAM18: counted, not fitted: the fewest RAMB18 (or RAMB36 as two) covering WIDTH x DEPTH in one of the
  aspect ratios of 7-series / UltraScale+ block RAM (as yosys' memory_libmap picks), for each memory the
  node puts in block RAM (onebit_rom's rule: `auto` is block from 16 Kbit on). The calibration data records
  yosys' own count beside this one.

Calibrated on the xc7 family (Pynq-Z1); an UltraScale+ board (ZCU104) uses the same fit: both map to LUT6
and the calibration records a few xcup points with the model's error on them (CARRY8 instead of CARRY4
changes the carry count, not the LUTs).

Refit (after an RTL change, e.g. a deeper pipeline): `python -m hw.rtl.costmodel calibrate` (synthesis
cached by content: only changed points rerun); `python -m hw.rtl.costmodel show` prints the fit.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from hw.rtl.layout import FoldGeometry
from onebit.errors import OnebitError

CALIBRATION = Path(__file__).resolve().parent / "calibration" / "mvau.json"
FORMAT = 1
CLOCKS_NS = (10.0, 5.0)          # calibration clocks: Zynq-7000's 100 MHz, UltraScale+'s 200 MHz
MODES = {"xnor": (1, True), "uint8": (8, False)}   # mode -> (input bits, XNOR)
# SIMD of the dot-product table per mode and calibration clock (10 ns: every CNV/TFC SIMD class from 1 to a
# 3x3x128 window; 5 ns: fewer, the same line). Kept small: on this project's shared 2-core machine one
# synthesis takes 10-60 s (the uint8 SIMD 9 dot once took 740 s of ABC).
DOT_SIMD = {10.0: {"xnor": (1, 2, 4, 8, 16, 32, 64, 128, 256, 576, 1152), "uint8": (1, 3, 27, 64)},
            5.0: {"xnor": (1, 8, 64, 576), "uint8": (1, 3, 27)}}
# Whole-node points: (mode, MW, MH, PE, SIMD, ram_style, no_activation, family). MW and MH set SF, NF,
# WMEM and the accumulator width; the grid spans the folds CNV and TFC use at small PE x SIMD.
NODE_POINTS = (
    ("xnor", 64, 16, 1, 8, "distributed", False, "xc7"),
    ("xnor", 64, 16, 16, 8, "distributed", False, "xc7"),
    ("xnor", 256, 64, 4, 16, "distributed", False, "xc7"),
    ("xnor", 576, 64, 8, 32, "distributed", False, "xc7"),
    ("xnor", 576, 128, 4, 64, "distributed", False, "xc7"),
    ("xnor", 128, 32, 32, 4, "distributed", False, "xc7"),
    ("xnor", 512, 128, 8, 16, "distributed", False, "xc7"),
    ("xnor", 576, 64, 2, 32, "block", False, "xc7"),
    ("xnor", 1152, 128, 8, 64, "block", False, "xc7"),
    ("xnor", 256, 256, 16, 32, "block", False, "xc7"),
    ("xnor", 512, 10, 1, 16, "distributed", True, "xc7"),
    ("uint8", 27, 64, 4, 3, "distributed", False, "xc7"),
    ("uint8", 27, 64, 16, 27, "distributed", False, "xc7"),
    ("xnor", 576, 64, 8, 32, "distributed", False, "xcup"),
)
REST_FEATURES = ("const", "pe_acc", "pe_thr", "weight_rom", "thr_rom", "input_buffer")
FF_FEATURES = ("const", "pe_acc", "weight_reg", "input_reg", "thr_reg", "out_reg")

# 7-series / UltraScale+ block RAM aspect ratios (data width, depth): RAMB18 and RAMB36 (simple dual port
# for the widest); yosys' memory_libmap picks among these
RAMB18_SHAPES = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))
RAMB36_SHAPES = ((1, 32768), (2, 16384), (4, 8192), (9, 4096), (18, 2048), (36, 1024), (72, 512))


def bram18_count(width: int, depth: int) -> int:
    """RAMB18 equivalents of a WIDTH x DEPTH ROM in block RAM: the cheapest tiling by one shape."""
    best = min(math.ceil(width / w) * math.ceil(depth / d) for w, d in RAMB18_SHAPES)
    best36 = min(math.ceil(width / w) * math.ceil(depth / d) for w, d in RAMB36_SHAPES)
    return int(min(best, 2 * best36))


def is_block(style: str, width: int, depth: int, lut_depth: int = 0) -> bool:
    """onebit_rom's rule (hw/rtl/sv/onebit_rom.sv): block, or auto from 16 Kbit on or deeper than LUT_DEPTH
    (hw.rtl.timing.lut_rom_depth: what the target clock reads from LUTs in one cycle; 0 = no limit)."""
    return style == "block" or (style == "auto" and (width * depth >= 16384 or 0 < lut_depth < depth))


@dataclass(frozen=True)
class NodeShape(FoldGeometry):
    """What the model needs of one onebit_mvau (its SystemVerilog parameters, in short)."""

    mw: int
    mh: int
    pe: int
    simd: int
    mode: str             # "xnor" or "uint8" (integer x bipolar; other input widths scale as uint8)
    ibits: int
    acc_bits: int
    nthr: int
    obits: int
    ram_style: str = "auto"
    ram_style_thresholds: str = "auto"
    clock_ns: float = 10.0

    @property
    def lut_depth(self) -> int:
        from hw.rtl.timing import lut_rom_depth

        return lut_rom_depth(self.clock_ns)

    @property
    def tw(self) -> int:
        return self.pe * max(1, self.nthr) * self.acc_bits

    @classmethod
    def from_parameters(cls, params: dict[str, Any], clock_ns: float) -> "NodeShape":
        xnor = bool(params["XNOR"])
        return cls(int(params["MW"]), int(params["MH"]), int(params["PE"]), int(params["SIMD"]),
                   "xnor" if xnor else "uint8", int(params["IBITS"]), int(params["ACC_BITS"]), int(params["NTHR"]),
                   int(params["OBITS"]), str(params["RAM_STYLE"]), str(params["RAM_STYLE_THRESHOLDS"]),
                   float(clock_ns))

    def features(self) -> dict[str, float]:
        """LUT features of the rest (all but the dot products)."""
        weight_block = is_block(self.ram_style, self.pe * self.simd, self.wmem, self.lut_depth)
        thr_block = self.nthr > 0 and is_block(self.ram_style_thresholds, self.tw, self.nf, self.lut_depth)
        return {
            "const": 1.0,
            "pe_acc": float(self.pe * self.acc_bits),
            "pe_thr": float(self.pe * self.nthr * self.acc_bits),
            "weight_rom": 0.0 if weight_block or self.wmem == 1 else float(self.pe * self.simd * math.ceil(self.wmem / 64)),
            "thr_rom": 0.0 if thr_block or self.nthr == 0 or self.nf == 1 else float(self.tw * math.ceil(self.nf / 64)),
            "input_buffer": 0.0 if self.nf == 1 else float(self.simd * self.ibits * math.ceil(self.sf / 64)),
        }

    def ff_features(self) -> dict[str, float]:
        return {"const": 1.0, "pe_acc": float(self.pe * self.acc_bits), "weight_reg": float(self.pe * self.simd),
                "input_reg": float(self.simd * self.ibits), "thr_reg": float(self.tw if self.nthr else 0),
                "out_reg": float(self.pe * self.obits)}

    def bram18(self) -> int:
        count = 0
        if is_block(self.ram_style, self.pe * self.simd, self.wmem, self.lut_depth):
            count += bram18_count(self.pe * self.simd, self.wmem)
        if self.nthr > 0 and is_block(self.ram_style_thresholds, self.tw, self.nf, self.lut_depth):
            count += bram18_count(self.tw, self.nf)
        return count


def _dot_parameters(mode: str, simd: int, clock_ns: float) -> dict[str, int]:
    from hw.rtl.timing import tree_stages

    ibits, xnor = MODES[mode]
    # the width onebit_mvau gives it: XNOR $clog2(SIMD+1); add/sub IBITS + 1 + $clog2(SIMD)
    dw = max(1, (simd).bit_length()) if xnor else ibits + 1 + max(0, (simd - 1).bit_length())
    return {"SIMD": simd, "IBITS": ibits, "ISIGNED": 0, "XNOR": int(xnor),
            "STAGES": tree_stages(simd, ibits, xnor, clock_ns), "DW": dw}


def _node(mode: str, mw: int, mh: int, pe: int, simd: int, style: str, no_activation: bool, clock_ns: float):
    """An RTLMvau of the grid with random weights and thresholds (a trained binary layer's weights are
    close to random bits; the seed makes the point reproducible)."""
    from hw.rtl.layout import MVAUConfig
    from hw.rtl.nodes import RTLMvau

    rng = np.random.default_rng(mw * 7919 + mh * 104729 + pe * 31 + simd)
    if mode == "xnor":
        cfg = MVAUConfig(mw=mw, mh=mh, pe=pe, simd=simd, idt="BINARY", wdt="BINARY",
                         odt="INT32" if no_activation else "BINARY", binary_xnor=True, no_activation=no_activation,
                         name="calibration", ram_style=style, clock_ns=clock_ns)
        weights = rng.integers(0, 2, (mw, mh))
        thresholds = None if no_activation else rng.integers(mw // 4, 3 * mw // 4 + 1, (mh, 1))
    else:
        cfg = MVAUConfig(mw=mw, mh=mh, pe=pe, simd=simd, idt="UINT8", wdt="BIPOLAR",
                         odt="INT32" if no_activation else "BINARY", no_activation=no_activation, name="calibration",
                         ram_style=style, clock_ns=clock_ns)
        weights = rng.choice(np.array([-1, 1]), (mw, mh))
        thresholds = None if no_activation else rng.integers(-40 * mw, 40 * mw, (mh, 1))
    return RTLMvau(cfg, weights, thresholds)


def _timed(fn):
    """(value, seconds), seconds None where the synthesis came from onebit's cache (timed when it ran)."""
    started = time.perf_counter()
    value = fn()
    seconds = round(time.perf_counter() - started, 1)
    return value, (seconds if seconds >= 1.0 else None)


def synthesize_grid(progress: bool = True) -> dict[str, Any]:
    """Synthesize every calibration point (yosys, cached by content); the raw data, with wall times."""
    from hw.rtl.verilator import tool_version
    from hw.rtl.yosys import synthesize
    from onebit.progress import bar

    jobs = [("dot", mode, simd, clock) for clock in CLOCKS_NS for mode in DOT_SIMD[clock] for simd in DOT_SIMD[clock][mode]]
    jobs += [("node", *point, clock) for clock in CLOCKS_NS[:1] for point in NODE_POINTS]
    dots, nodes = [], []
    for job in bar(jobs, desc="calibration synthesis", unit="point", enabled=progress):
        if job[0] == "dot":
            _, mode, simd, clock = job
            params = _dot_parameters(mode, simd, clock)
            counts, seconds = _timed(lambda: synthesize("onebit_dot", params, {}, "xc7", name="calibration dot"))
            dots.append({"mode": mode, "simd": simd, "clock_ns": clock, "stages": params["STAGES"],
                         "lut": counts.lut_total, "ff": counts.ff, "carry": counts.carry, "seconds": seconds})
        else:
            _, mode, mw, mh, pe, simd, style, no_act, family, clock = job
            node = _node(mode, mw, mh, pe, simd, style, no_act, clock)
            counts, seconds = _timed(lambda: node.resources(family))
            nodes.append({"mode": mode, "mw": mw, "mh": mh, "pe": pe, "simd": simd, "ram_style": style,
                          "no_activation": no_act, "family": family, "clock_ns": clock,
                          "parameters": node.parameters(), "lut": counts.lut_total, "lutram_luts": counts.lutram_luts,
                          "ff": counts.ff, "carry": counts.carry, "bram18": counts.bram18,
                          "dot_instances": counts.instances.get("onebit_dot"), "seconds": seconds})
        if progress:
            last = (dots + nodes)[-1]
            print(f"  {job[:-1]}: {last['lut']} LUT, {last['seconds'] or 'cached'} s", flush=True)
    return {"yosys": tool_version("yosys"), "dots": dots, "nodes": nodes}


def fit(raw: dict[str, Any]) -> dict[str, Any]:
    """Coefficients of the rest's LUT and FF features (nnls over the xc7 node points) and every point's
    prediction error under the fitted model."""
    from scipy.optimize import nnls

    for p in raw["dots"] + raw["nodes"]:
        if not p.get("seconds"):
            p["seconds"] = None   # a cache hit: timed in the run that synthesized it
    model = {"format": FORMAT, "yosys": raw["yosys"], "dots": raw["dots"], "nodes": raw["nodes"],
             "lut_coefficients": {}, "ff_coefficients": {}}
    fit_rows = [p for p in raw["nodes"] if p["family"] == "xc7"]
    for target, names, feat in (("lut", REST_FEATURES, "features"), ("ff", FF_FEATURES, "ff_features")):
        a, b = [], []
        for p in fit_rows:
            shape = NodeShape.from_parameters(p["parameters"], p["clock_ns"])
            dot = _dot_table(raw["dots"], shape.mode, shape.clock_ns, target)
            f = getattr(shape, feat)()
            # each row scaled by 1 / the node's count: the fit minimises relative error, so that the small
            # nodes (most of a folding search's candidates) weigh as much as the large ones
            scale = 1.0 / max(1.0, float(p[target]))
            a.append([f[n] * scale for n in names])
            b.append((p[target] - shape.pe * dot(shape.simd)) * scale)
        coef, _ = nnls(np.array(a), np.array(b, dtype=float))
        model[f"{target}_coefficients"] = {n: round(float(c), 4) for n, c in zip(names, coef)}
    cost = CostModel(model)
    for p in raw["nodes"]:
        shape = NodeShape.from_parameters(p["parameters"], p["clock_ns"])
        pred = cost.predict(shape)
        p["predicted"] = pred
        p["lut_error"] = round(pred["LUT"] / p["lut"] - 1, 4)
        p["bram18_predicted_minus_yosys"] = pred["BRAM_18K"] - p["bram18"]
    errors = [abs(p["lut_error"]) for p in raw["nodes"] if p["family"] == "xc7"]
    model["lut_error_xc7"] = {"mean_abs": round(float(np.mean(errors)), 4), "max_abs": round(float(np.max(errors)), 4)}
    xcup = [abs(p["lut_error"]) for p in raw["nodes"] if p["family"] == "xcup"]
    if xcup:
        model["lut_error_xcup"] = {"mean_abs": round(float(np.mean(xcup)), 4), "max_abs": round(float(np.max(xcup)), 4)}
    model["synthesis_seconds_this_run"] = round(sum(p["seconds"] or 0 for p in raw["dots"] + raw["nodes"]), 1)
    return model


def _dot_table(dots: list[dict[str, Any]], mode: str, clock_ns: float, key: str):
    """f(SIMD) -> one dot product's `key` (lut / ff) for mode at the calibration clock that covers clock_ns:
    linear between grid points, the last segment's slope beyond them."""
    clocks = sorted({d["clock_ns"] for d in dots if d["mode"] == mode}, reverse=True)
    if not clocks:
        raise OnebitError(f"the MVAU cost model has no calibration for mode {mode}; run python -m hw.rtl.costmodel "
                          "calibrate")
    chosen = next((c for c in clocks if c <= clock_ns + 1e-9), clocks[-1])
    rows = sorted((d["simd"], d[key]) for d in dots if d["mode"] == mode and d["clock_ns"] == chosen)
    xs = np.array([r[0] for r in rows], dtype=float)
    ys = np.array([r[1] for r in rows], dtype=float)

    def f(simd: float) -> float:
        if simd <= xs[-1] or len(xs) < 2:
            return float(np.interp(simd, xs, ys))
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return float(ys[-1] + slope * (simd - xs[-1]))

    return f


class CostModel:
    """Predicts LUT (logic + LUTRAM), FF and BRAM18 of an onebit_mvau from the fitted calibration."""

    def __init__(self, data: dict[str, Any]) -> None:
        if data.get("format") != FORMAT:
            raise OnebitError(f"MVAU cost model data has format {data.get('format')}, expected {FORMAT}; rerun "
                              "python -m hw.rtl.costmodel calibrate")
        self.data = data
        self._dots: dict[tuple[str, float, str], Any] = {}

    @classmethod
    def load(cls, path: str | Path = CALIBRATION) -> "CostModel":
        return _load(str(path))

    def dot(self, mode: str, clock_ns: float, key: str):
        k = (mode, float(clock_ns), key)
        if k not in self._dots:
            self._dots[k] = _dot_table(self.data["dots"], mode, clock_ns, key)
        return self._dots[k]

    def predict(self, shape: NodeShape) -> dict[str, float]:
        mode = shape.mode
        lut = shape.pe * self.dot(mode, shape.clock_ns, "lut")(shape.simd)
        lut += sum(self.data["lut_coefficients"][n] * v for n, v in shape.features().items())
        ff = shape.pe * self.dot(mode, shape.clock_ns, "ff")(shape.simd)
        ff += sum(self.data["ff_coefficients"][n] * v for n, v in shape.ff_features().items())
        return {"LUT": round(lut, 1), "FF": round(ff, 1), "BRAM_18K": float(shape.bram18()), "URAM": 0.0,
                "DSP": 0.0}

    def describe(self) -> str:
        e = self.data.get("lut_error_xc7", {})
        return (f"onebit MVAU cost model fitted to {len(self.data['nodes'])} node and {len(self.data['dots'])} "
                f"dot-product syntheses ({self.data['yosys']}); LUT error on the grid: mean "
                f"{100 * e.get('mean_abs', 0):.1f} %, max {100 * e.get('max_abs', 0):.1f} % (hw/rtl/costmodel.py)")


@lru_cache(maxsize=4)
def _load(path: str) -> CostModel:
    file = Path(path)
    if not file.is_file():
        raise OnebitError(f"no MVAU cost model calibration at {file}; run python -m hw.rtl.costmodel calibrate")
    return CostModel(json.loads(file.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw.rtl.costmodel", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("calibrate", "refit", "show"),
                        help="calibrate: synthesize the grid (cached) and fit; refit: fit the stored data again; "
                             "show: print the fit and its errors")
    parser.add_argument("--out", default=str(CALIBRATION))
    args = parser.parse_args(argv)
    from onebit.atomic import write_text_atomic

    out = Path(args.out)
    if args.command in ("calibrate", "refit"):
        if args.command == "calibrate":
            raw = synthesize_grid()
        else:
            stored = json.loads(out.read_text())
            raw = {k: stored[k] for k in ("yosys", "dots", "nodes")}
        model = fit(raw)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, json.dumps(model, indent=1) + "\n")
        _load.cache_clear()
    model = CostModel.load(out)
    print(model.describe())
    print("LUT:", model.data["lut_coefficients"])
    print("FF: ", model.data["ff_coefficients"])
    for p in model.data["nodes"]:
        print(f"  {p['family']} {p['mode']} MW {p['mw']} MH {p['mh']} PE {p['pe']} SIMD {p['simd']} {p['ram_style']}: "
              f"yosys {p['lut']} LUT / {p['bram18']} BRAM18, model {p['predicted']['LUT']:.0f} / "
              f"{p['predicted']['BRAM_18K']:.0f} ({100 * p['lut_error']:+.1f} %), {p['seconds'] or 'cached'} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
