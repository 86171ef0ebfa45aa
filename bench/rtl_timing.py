"""Estimated Fmax of onebit's MVAU at the foldings of the rtl_accelerator bench, pipelined for the board
clock and unpipelined (MEM_REG = TREE_STAGES = 0, onebit's MVAU before the pipelining), under the model of
hw/rtl/timing.py (yosys sta cell delays of 7-series -1 + 0.5 ns per general-routing net; one PE per node).

Shapes and foldings are those of bench/results/rtl_accelerator.md: TFC with auto-fold (to_finn's default) and
at 10,000 FPS, the narrow CNV (channels 16-64, FC 64) and the real CNV-w1a1 (64-256, FC 512); random +-1
weights and mid-range thresholds (the datapath's timing does not depend on them, except a LUT ROM's logic).

    python bench/rtl_timing.py                       # Pynq-Z1 (10 ns): every case
    python bench/rtl_timing.py --clock-ns 5 --cases tfc-auto

Each row also has the yosys LUT / FF / BRAM18 counts of the same one-PE node pipelined and unpipelined (the
cost of the pipelining). Writes bench/results/rtl_timing.{json,md} (cases of other runs are kept).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from onebit.atomic import write_text_atomic  # noqa: E402

# case: [(MW, MH, PE, SIMD, input datatype, noActivation)]
CASES = {
    "tfc-auto": [(784, 64, 32, 16, "UINT8", 0), (64, 64, 1, 64, "BINARY", 0), (64, 64, 1, 64, "BINARY", 0),
                 (64, 10, 1, 8, "BINARY", 1)],
    "tfc": [(784, 64, 1, 7, "UINT8", 0), (64, 64, 1, 1, "BINARY", 0), (64, 64, 1, 1, "BINARY", 0),
            (64, 10, 1, 1, "BINARY", 1)],
    "cnv": [(27, 16, 16, 9, "UINT8", 0), (144, 16, 16, 144, "BINARY", 0), (144, 32, 4, 144, "BINARY", 0),
            (288, 32, 32, 32, "BINARY", 0), (288, 64, 8, 32, "BINARY", 0), (576, 64, 2, 16, "BINARY", 0),
            (64, 64, 1, 4, "BINARY", 0), (64, 64, 1, 4, "BINARY", 0), (64, 10, 1, 1, "BINARY", 1)],
    "cnv-full": [(27, 64, 64, 1, "UINT8", 0), (576, 64, 16, 576, "BINARY", 0), (576, 128, 16, 64, "BINARY", 0),
                 (1152, 128, 1, 1152, "BINARY", 0), (1152, 256, 4, 64, "BINARY", 0), (2304, 256, 1, 64, "BINARY", 0),
                 (256, 512, 1, 16, "BINARY", 0), (512, 512, 1, 32, "BINARY", 0), (512, 10, 1, 1, "BINARY", 1)],
}


# the analysis of a node that misses its target under the model (its critical path, read with hw/rtl/timing.py)
WHY = {
    "tfc@5ns node 0": "the weight memory of the 10,000-FPS folding is 7168 words x 7 bits (SF 112 x NF 64, SIMD 7); "
                      "yosys packs it into RAMB18s several words to a row, and two LUT levels (LUT5, LUT6) follow the "
                      "block RAM outputs before the next register; the model counts the block RAM's "
                      "clock-to-out as 2.45 ns (no DOA_REG): 3.5 ns of cells + 3 nets = 5.0 ns. The RTL does not "
                      "control yosys' packing (Vivado can build this memory as two 8K x 4 RAMB36 with no mux); not "
                      "fixed. The default build (auto-fold, tfc-auto) meets 250 MHz",
}


def synthesize(*args, **kwargs):
    from hw.rtl.yosys import synthesize as run

    return run(*args, **kwargs)


def node(mw: int, mh: int, pe: int, simd: int, idt: str, noact: int, clock_ns: float, name: str):
    from hw.rtl import MVAUConfig, RTLMvau

    rng = np.random.default_rng(0)
    xnor = idt == "BINARY"
    cfg = MVAUConfig(mw=mw, mh=mh, pe=pe, simd=simd, idt=idt, wdt="BINARY" if xnor else "BIPOLAR",
                     odt="UINT16" if noact else "BINARY", binary_xnor=xnor, no_activation=bool(noact),
                     clock_ns=clock_ns, name=name)
    weights = rng.integers(0, 2, (mw, mh)) if xnor else rng.choice([-1, 1], (mw, mh))
    span = mw if xnor else 64 * mw
    thresholds = None if noact else rng.integers(span // 4, 3 * span // 4 + 1, (mh, 1)) - (0 if xnor else span // 2)
    return RTLMvau(cfg, weights, thresholds)


def measure(case: str, clock_ns: float) -> list[dict]:
    rows = []
    for i, shape in enumerate(CASES[case]):
        rtl = node(*shape, clock_ns, f"{case}_MVAU_{i}")
        started = time.perf_counter()
        row = {"node": i, "MW": shape[0], "MH": shape[1], "PE": shape[2], "SIMD": shape[3], "input": shape[4],
               "tree_stages": rtl.cfg.stages, "mem_reg": rtl.cfg.mem_reg, "latency": rtl.cfg.latency,
               "lut_rom_depth": rtl.cfg.lut_rom_depth,
               "unpipelined_latency": rtl.unpipelined().cfg.latency}
        for key, which in (("pipelined", rtl), ("unpipelined", rtl.unpipelined())):
            try:
                t = which.timing()
                row[key] = {"fmax_mhz": round(t.fmax_mhz, 1), "cell_ns": t.cell_ns, "route_ns": t.route_ns,
                            "nets": t.nets, "cells": t.cells, "start": t.start, "end": t.end}
            except Exception as error:  # a timeout or yosys error is reported in the row, never a pass
                row[key] = {"error": str(error)[:200]}
            try:  # the cost of the pipelining: yosys counts of the same one-PE node (SRLs as yosys maps them)
                counts = synthesize(which.top, *which.one_pe(), name=which.name)
                row[key].update(lut=counts.lut_total, ff=counts.ff, bram18=counts.bram18)
            except Exception as error:
                row[key]["count_error"] = str(error)[:200]
        row["seconds"] = round(time.perf_counter() - started, 1)
        print(case, json.dumps({k: row[k] for k in ("node", "PE", "SIMD", "tree_stages", "pipelined", "unpipelined")}),
              flush=True)
        rows.append(row)
    return rows


def markdown(results: dict) -> str:
    lines = ["# Estimated Fmax of onebit's MVAU, pipelined vs unpipelined", "",
             "Generated by `python bench/rtl_timing.py`. Model (hw/rtl/timing.py): yosys `sta` of the flat "
             "`synth_xilinx -family xc7` netlist (cell delays of 7-series -1 from yosys' cells_sim.v) + 0.5 ns "
             "routing allowance per general-routing net on the critical path; each node timed with one PE, "
             "mapped without SRLs (the RTL asks Vivado to end its pipeline chains in flip-flops). It "
             "ignores placement, routing detail, fanout, clock skew and block RAM address setup, and counts every "
             "block RAM's clock-to-out as 2.45 ns (no DOA_REG): a screen, not Vivado's sign-off. Target: 1.25x the "
             "board clock. 'LUT ROM depth': the deepest auto memory kept in LUTs (any: no limit; deeper ones go to "
             "block RAM). LUT / FF / BRAM18: yosys counts of the same one-PE node (memories, control, one dot "
             "product), pipelined and unpipelined (MEM_REG = TREE_STAGES = 0, no LUT ROM limit): the cost of "
             "the pipelining.", ""]
    misses: list[str] = []
    for key, rows in results.items():
        clock_ns = float(key.rsplit("@", 1)[1].rstrip("ns"))
        target = 1.25 * 1000 / clock_ns
        lines += [f"## {key} (board clock {1000 / clock_ns:.0f} MHz, target {target:.0f} MHz)", "",
                  "| node | MW x MH | PE x SIMD | input | MEM_REG, tree ranks, LUT ROM depth | latency (cycles) "
                  "pipelined / not | est. Fmax MHz pipelined | cells + routing ns | est. Fmax MHz unpipelined | "
                  "one PE: LUT / FF / BRAM18 pipelined | unpipelined | meets target |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            p, u = r["pipelined"], r["unpipelined"]
            pf = p.get("fmax_mhz", p.get("error"))
            uf = u.get("fmax_mhz", u.get("error"))
            ok = "yes" if isinstance(pf, float) and pf >= target else "NO"
            cost = [" / ".join(str(x.get(k, "-")) for k in ("lut", "ff", "bram18")) for x in (p, u)]
            lines.append(f"| {r['node']} | {r['MW']} x {r['MH']} | {r['PE']} x {r['SIMD']} | {r['input']} | "
                         f"{r['mem_reg']}, {r['tree_stages']}, {r.get('lut_rom_depth', '-') or 'any'} | "
                         f"{r['latency']} / {r['unpipelined_latency']} | {pf} | "
                         f"{p.get('cell_ns', '-')} + {p.get('route_ns', '-')} | {uf} | {cost[0]} | {cost[1]} | {ok} |")
            if ok == "NO":
                misses.append(f"{key} node {r['node']}: {pf} MHz, critical path {p.get('start', '?')} -> "
                              f"{p.get('end', '?')} through {p.get('cells', '?')}")
        lines.append("")
    lines += ["## Nodes below target", ""]
    for miss in misses or ["none"]:
        reason = WHY.get(miss.split(":", 1)[0])
        lines.append(f"- {miss}" + (f". Why: {reason}" if reason else ""))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--clock-ns", type=float, default=10.0, help="board clock period (Pynq-Z1: 10, ZCU104: 5)")
    args = parser.parse_args(argv)
    out = REPO / "bench" / "results" / "rtl_timing.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        results[f"{case}@{args.clock_ns:g}ns"] = measure(case, args.clock_ns)
        write_text_atomic(out, json.dumps(results, indent=1))
        write_text_atomic(out.with_suffix(".md"), markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
