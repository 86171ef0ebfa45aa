"""CNV-w1a1 (BNN-PYNQ's 3x32x32 input) with `--mvau rtl` auto-folded against the yosys-calibrated cost model
(hw/rtl/costmodel.py), beside BNN-PYNQ's published design and onebit's HLS auto-fold (FINN's estimates).

1. The data: Fashion-MNIST (the only image set on these machines) padded 28 -> 32 and replicated to 3
   channels, saved as an npz (`--dataset npz:`): BNN-PYNQ's CIFAR-10 input shape with real images.
2. `python -m quant_models.train --model cnv` on it (one short epoch: the check is bit-exactness and cycles,
   not accuracy), then `python export/to_finn.py ... --board Pynq-Z1 --mvau rtl` (auto-fold, the default):
   the search runs against the calibrated model and the estimated Fmax; the build's report carries yosys'
   synthesis of every node and of the whole stitched design (resources_synth).
3. rtl_accelerator on 1,000 test images: the stitched design in Verilator, cycles per image measured,
   scores compared with the collapsed integer model of the checkpoint and the bit-exact accelerator model.
4. On the same HW graph (the build's step_specialize_layers model) the search for Pynq-Z1 and ZCU104, with
   FINN's estimates (`--mvau hls`) and with the calibrated model (`--mvau rtl`).

    python bench/cnv_rtl_fold.py [--images 1000] [--work build/cnv_rtl_fold]

Writes bench/results/cnv_rtl_fold.{json,md}. A rerun reuses the checkpoint and build in --work.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from onebit.atomic import write_text_atomic  # noqa: E402

BNN_PYNQ = {  # Xilinx/BNN-PYNQ bnn/src/network/cnvW1A1/README.md and its notebook (bench/data/finn_examples_foldings.json)
    "fps": 9150, "clock_mhz": 100, "lut": 26072, "bram36": 124, "device_bram36": 140,
    "source": "Xilinx/BNN-PYNQ cnvW1A1 on Pynq-Z1: measured on the board (batch), Vivado 2018.2 post-implementation "
              "utilisation (bnn/src/network/cnvW1A1/README.md, CNV notebook)",
}
GOAL_FPS = 9150
SYNTH_LIMIT_S = 900  # ONEBIT_YOSYS_TIMEOUT for the build's per-node synthesis


def make_npz(path: Path, train: int = 4000, test: int = 1000) -> Path:
    """Fashion-MNIST padded to 32x32 and replicated to 3 channels (uint8, NCHW)."""
    import numpy as np

    from quant_models.data import load_dataset

    if path.is_file():
        return path
    out: dict[str, Any] = {}
    for split, n in (("train", train), ("test", test)):
        ds = load_dataset("fashion-mnist", split).head(n)
        images = np.pad(ds.images, ((0, 0), (0, 0), (2, 2), (2, 2)))
        out[f"{split}_images"] = np.repeat(images, 3, axis=1).astype(np.uint8)
        out[f"{split}_labels"] = ds.labels.astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out, classes=np.array(ds.classes))
    return path


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, **(env or {})})
    if proc.returncode not in (0, 1):
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}; see {log}")


def build(work: Path) -> Path:
    npz = make_npz(work / "fmnist_3x32x32.npz")
    ckpt = work / "cnv-3x32.pt"
    log = work / "bench.log"
    if not ckpt.is_file():
        run([sys.executable, "-m", "quant_models.train", "--model", "cnv", "--dataset", f"npz:{npz}", "--epochs", "1",
             "--limit-train", "2000", "--seed", "0", "--out", str(ckpt), "--quiet"], log)
    out = work / "pynq-z1-rtl"
    if not (out / "driver" / "io.json").is_file():   # the design is generated (report.md is not needed here)
        run([sys.executable, "export/to_finn.py", str(ckpt), "--board", "Pynq-Z1", "--mvau", "rtl", "--out", str(out),
             "--levels", "none", "--verify-samples", "100", "--no-progress"], log,
            {"ONEBIT_YOSYS_TIMEOUT": str(SYNTH_LIMIT_S)})
    return out


def searches(out: Path, work: Path, runs: tuple[tuple[str, str], ...] = (("Pynq-Z1", "hls"), ("Pynq-Z1", "rtl"),
                                                                      ("ZCU104", "hls"), ("ZCU104", "rtl"))
             ) -> list[dict[str, Any]]:
    """Auto-fold of the build's HW graph for Pynq-Z1 and ZCU104, FINN's estimates vs the calibrated model."""
    from qonnx.core.modelwrapper import ModelWrapper

    from hw.boards import get_board
    from hw.finn.autofold import AutoFoldError, fold_for_board
    from hw.finn.env import prepare_finn
    from hw.rtl.custom_op import register

    prepare_finn(work / "finn_tmp")
    register()
    hw = ModelWrapper(str(out / "finn" / "step_specialize_layers.onnx"))
    rows = []
    for board_name, mvau in runs:
        board = get_board(board_name)
        started = time.perf_counter()
        try:
            _, result = fold_for_board(hw, board, mvau=mvau)
        except AutoFoldError as error:   # e.g. no folding meets the clock: the row says so
            rows.append({"board": board.name, "mvau": mvau, "error": str(error),
                         "search_seconds": round(time.perf_counter() - started, 1)})
            continue
        seconds = time.perf_counter() - started
        result.write(work / f"autofold-{board_name}-{mvau}")
        by_source: dict[str, float] = {}
        for lr in result.layers:
            by_source[lr.cost_source] = by_source.get(lr.cost_source, 0.0) + lr.lut
        rows.append({"board": board.name, "mvau": mvau, "clock_mhz": result.clock_mhz, "fps": result.fps,
                     "bottleneck": result.bottleneck, "lut": result.totals["LUT"], "lut_by_source": by_source,
                     "bram18": result.totals["BRAM_18K"], "device_lut": result.device["LUT"],
                     "device_bram18": result.device["BRAM_18K"], "budget": result.budget,
                     "node_fmax_mhz": result.node_fmax_mhz, "timing_rejected": result.timing_rejected,
                     "config": result.config, "search_seconds": round(seconds, 1),
                     "layers": [{"name": lr.name, "op": lr.op_type, "pe": lr.pe, "simd": lr.simd,
                                 "ram_style": lr.ram_style, "cycles": lr.cycles, "lut": lr.lut,
                                 "bram18": lr.bram_18k, "source": lr.cost_source} for lr in result.layers]})
    return rows


def measure(out: Path, n: int) -> dict[str, Any]:
    import numpy as np

    from bench.rtl_accelerator import simulate
    from hw.check.rtl_accelerator import mismatch_message

    result, images, labels, reference, seconds = simulate(out, n)
    options = json.loads((out / "onebit_options.json").read_text()).get("options", {})
    from hw.boards import get_board

    clock = options.get("clock_mhz") or get_board(options.get("board", "Pynq-Z1")).clock_mhz
    cycles = result["cycles_per_image"]
    return {"images": int(len(images)), "input_shape": list(images.shape[1:]), "sim_seconds": round(seconds, 1),
            "mismatches_vs_accel_model": len(result["mismatching"]),
            "mismatches_vs_collapsed_integer_model": int(np.any(result["scores"] != reference, axis=1).sum()),
            "mismatch_message": mismatch_message(result),
            "accuracy": float((result["scores"].argmax(1) == labels).mean()),
            "cycles_per_image": cycles, "estimated_bottleneck_cycles": result["estimated_bottleneck_cycles"],
            "clock_mhz": clock, "measured_fps": clock * 1e6 / cycles, "fifo_depths": result["fifo_depths"]}


def synth_report(out: Path, work: Path) -> dict[str, Any]:
    """yosys synth_xilinx of the built design (hw/rtl/synth_report.synth_resources: every node of the final
    dataflow partition with its estimated Fmax, and the whole stitched design with FIFOs and width converters),
    without the build report's unpipelined comparison (a second synthesis of every MVAU); cached in --work."""
    cached = work / "synth.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    from qonnx.core.modelwrapper import ModelWrapper

    from hw.boards import get_board
    from hw.check.accel_model import final_model_path
    from hw.driver.io_spec import IOSpec
    from hw.finn.env import prepare_finn
    from hw.rtl.synth_report import synth_resources

    prepare_finn(out / "hw")
    spec = IOSpec.load(out / "driver" / "io.json")
    model = ModelWrapper(str(final_model_path(out, spec.hw_model)))
    os.environ.setdefault("ONEBIT_YOSYS_TIMEOUT", str(SYNTH_LIMIT_S))
    started = time.perf_counter()
    synth = synth_resources(model, get_board("Pynq-Z1").fpga_part, whole=True, unpipelined=False)
    synth["seconds"] = round(time.perf_counter() - started, 1)
    # FINN's estimates of the same final nodes, for the nodes yosys does not count
    from finn.analysis.fpgadataflow.res_estimation import res_estimation

    synth["finn_estimates"] = {k: {r: float(v.get(r, 0) or 0) for r in ("LUT", "BRAM_18K")}
                               for k, v in res_estimation(model, get_board("Pynq-Z1").fpga_part).items()}
    synth["op_types"] = {n.name: n.op_type for n in model.graph.node}
    write_text_atomic(cached, json.dumps(synth, indent=1, default=str))
    return synth


def synthesized(synth: dict[str, Any]) -> dict[str, Any]:
    """onebit's nodes by yosys, every other node (FINN's, or one yosys failed on) by FINN's estimate."""
    est, ops = synth["finn_estimates"], synth["op_types"]
    onebit_lut = onebit_bram = finn_lut = finn_bram = 0.0
    rows, fmax = [], {}
    for name, c in (synth.get("nodes") or {}).items():
        e = est.get(name, {})
        is_onebit = "Onebit" in ops.get(name, "")
        t = c.get("timing") or {}
        if "fmax_mhz" in t:
            fmax[name] = t["fmax_mhz"]
        if "error" in c or not is_onebit:
            finn_lut += e.get("LUT", 0.0)
            finn_bram += e.get("BRAM_18K", 0.0)
            rows.append({"node": name, "op": ops.get(name), "source": "FINN estimate", "lut": e.get("LUT"),
                         "bram18": e.get("BRAM_18K"),
                         "yosys": c.get("error", "")[:200] if "error" in c else c.get("lut_total")})
        else:
            onebit_lut += c["lut_total"]
            onebit_bram += c["bram18"]
            rows.append({"node": name, "op": ops.get(name), "source": "yosys", "lut": c["lut_total"],
                         "bram18": c["bram18"], "ff": c["ff"], "finn_estimate_lut": e.get("LUT")})
    for name, e in est.items():   # nodes synth_resources has no entry for (FINN's HLS nodes)
        if name not in (synth.get("nodes") or {}):
            finn_lut += e.get("LUT", 0.0)
            finn_bram += e.get("BRAM_18K", 0.0)
            rows.append({"node": name, "op": ops.get(name), "source": "FINN estimate", "lut": e.get("LUT"),
                         "bram18": e.get("BRAM_18K")})
    total = synth.get("total") or {}
    return {"onebit_lut": onebit_lut, "onebit_bram18": onebit_bram, "finn_lut": finn_lut, "finn_bram18": finn_bram,
            "nodes": rows, "node_fmax_mhz": fmax, "whole_design": {k: v for k, v in total.items() if k != "cells"},
            "seconds": synth.get("seconds")}


def _n(value: Any, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(result: dict[str, Any]) -> str:
    pub, rows, synth = result["bnn_pynq"], result["searches"], result["synth"]
    measured = result.get("measured") or {}
    row = {(r["board"], r["mvau"]): r for r in rows}
    z1 = row[("Pynq-Z1", "rtl")]
    whole = synth.get("whole_design") or {}
    lines = [
        "# CNV-w1a1, 3x32x32 input: `--mvau rtl` auto-fold on a synthesis-calibrated cost model", "",
        "Generated by `python bench/cnv_rtl_fold.py`: CNV-w1a1 (BNN-PYNQ's topology: 64-64-128-128-256-256 conv, "
        "512-512 FC) trained one short epoch on Fashion-MNIST padded to 32x32 and replicated to 3 channels "
        "(BNN-PYNQ's 3x32x32 input; accuracy is not the point), built with `export/to_finn.py --board Pynq-Z1 "
        "--mvau rtl` (auto-fold: onebit's MVAUs costed by hw/rtl/costmodel.py, fitted to yosys synth_xilinx of "
        "onebit_mvau; FINN's estimate for every other node; no folding whose onebit MVAU misses the clock under "
        "the estimated-Fmax model of hw/rtl/timing.py). The searches below all run on that build's HW graph "
        "(finn/step_specialize_layers.onnx). The 'synthesized' row is yosys synth_xilinx of the built design's "
        "nodes (hw/rtl/synth_report.synth_resources); 'FPS measured' is rtl_accelerator's cycles per image.", "",
        "| design | board | clock MHz | FPS estimated | FPS measured | LUT | BRAM18 | est. Fmax MHz | fits 80 %? |",
        "|---|---|---:|---:|---:|---|---:|---:|---|",
        f"| BNN-PYNQ cnvW1A1 (published) | Pynq-Z1 | {pub['clock_mhz']} | n/p | {pub['fps']:,} (on the board) | "
        f"{pub['lut']:,} (Vivado, placed and routed, with the shell) | {2 * pub['bram36']} | {pub['clock_mhz']} "
        f"(met in Vivado) | {'yes' if pub['lut'] <= 0.8 * 53200 and pub['bram36'] <= 0.8 * 140 else 'no'}: "
        f"{pub['lut'] / 53200:.0%} LUT, {pub['bram36'] / 140:.0%} BRAM |",
    ]
    for board in ("Pynq-Z1", "ZCU104"):
        for mvau in ("hls", "rtl"):
            r = row[(board, mvau)]
            if "error" in r:
                lines.append(f"| onebit `--mvau {mvau}` auto-fold | {board} | | no folding: {r['error']} | | | | | |")
                continue
            fits = r["lut"] <= r["budget"]["LUT"] + 1e-9 and r["bram18"] <= r["budget"]["BRAM_18K"] + 1e-9
            src = r["lut_by_source"]
            if mvau == "hls":
                lut = f"{r['lut']:,.0f} (FINN estimate)"
                name, fmax = "onebit `--mvau hls` auto-fold", "n/a (HLS: no RTL without Vitis)"
                meas = "n/a (no Vitis HLS here)"
            else:
                lut = (f"{r['lut']:,.0f} = {src.get('yosys-calibrated model', 0):,.0f} onebit MVAUs (model) + "
                       f"{src.get('FINN estimate', 0):,.0f} other nodes (FINN estimate)")
                name = "onebit `--mvau rtl` auto-fold (this issue)"
                fmax = _n(min(r["node_fmax_mhz"].values()) if r["node_fmax_mhz"] else None)
                meas = "see below" if board == "Pynq-Z1" and measured else "not simulated"
                if board == "Pynq-Z1" and measured:
                    meas = f"{measured['measured_fps']:,.0f} ({measured['cycles_per_image']:.0f} cycles/image)"
            lines.append(f"| {name} | {board} | {r['clock_mhz']:g} | {r['fps']:,.0f} | {meas} | {lut} | "
                         f"{r['bram18']:,.0f} | {fmax} | {'yes' if fits else 'NO'}: {r['lut'] / r['device_lut']:.0%} "
                         f"LUT, {r['bram18'] / r['device_bram18']:.0%} BRAM |")
    lut_syn = synth["onebit_lut"] + synth["finn_lut"]
    bram_syn = synth["onebit_bram18"] + synth["finn_bram18"]
    lines.append(
        f"| the built `--mvau rtl` design, synthesized | Pynq-Z1 | {z1['clock_mhz']:g} | {z1['fps']:,.0f} | "
        f"{_n(measured.get('measured_fps'))} | {lut_syn:,.0f} = {synth['onebit_lut']:,.0f} onebit nodes (yosys) + "
        f"{synth['finn_lut']:,.0f} other nodes (FINN estimate) | {bram_syn:,.0f} | "
        f"{_n(min(synth['node_fmax_mhz'].values()) if synth['node_fmax_mhz'] else None)} | "
        f"{'yes' if lut_syn <= 0.8 * 53200 and bram_syn <= 0.8 * 280 else 'NO'}: {lut_syn / 53200:.0%} LUT, "
        f"{bram_syn / 280:.0%} BRAM |")
    lines += ["", "Whole stitched design by yosys (nodes, FIFOs, width converters; hw/rtl/synth_report.py): " + (
        f"{whole['lut_total']:,} LUT, {whole['bram18']} BRAM18, est. Fmax {whole.get('timing', {}).get('fmax_mhz', 'n/a')} MHz"
        if "lut_total" in whole else f"not available ({whole.get('error', 'no data')[:300]})") + "."]
    lines += ["", "## Goal", ""]
    if measured:
        fps_ok = measured["measured_fps"] >= GOAL_FPS and measured["clock_mhz"] == 100
        fit_ok = lut_syn <= 0.8 * 53200 and bram_syn <= 0.8 * 280
        mism = measured["mismatches_vs_collapsed_integer_model"] + measured["mismatches_vs_accel_model"]
        lines += [f"* >= {GOAL_FPS:,} images/s measured in rtl_accelerator cycles at 100 MHz: "
                  f"{measured['measured_fps']:,.0f} -> {'met' if fps_ok else 'MISSED'} "
                  f"({measured['measured_fps'] / GOAL_FPS:.2f}x BNN-PYNQ; stretch 2x: "
                  f"{'met' if measured['measured_fps'] >= 2 * GOAL_FPS else 'not met'})",
                  f"* within 80 % of Pynq-Z1's LUT and BRAM (onebit nodes synthesized + FINN's estimate for the rest): "
                  f"{lut_syn:,.0f} LUT ({lut_syn / 53200:.0%}), {bram_syn:,.0f} BRAM18 ({bram_syn / 280:.0%}) -> "
                  f"{'met' if fit_ok else 'MISSED'}",
                  f"* bit-exact on {measured['images']:,} images of shape {measured['input_shape']}: "
                  f"{measured['mismatches_vs_collapsed_integer_model']} mismatches vs the collapsed integer model, "
                  f"{measured['mismatches_vs_accel_model']} vs the accelerator model -> {'met' if mism == 0 else 'MISSED'} "
                  f"(accuracy {measured['accuracy']:.1%} after one short epoch); rtl_accelerator took "
                  f"{measured['sim_seconds']:,.0f} s"]
    else:
        lines.append("* rtl_accelerator not run in this invocation (--skip-measure): no measured FPS")
    lines += ["", "## What the numbers do not include", "",
              "* Place and route: yosys synthesizes (LUT/FF/BRAM after synth_xilinx); Vivado's placement, routing, "
              "LUT packing (LUT6_2 pairs, which lower the count) and its own optimisation are not run here.",
              "* The shell: the Zynq PS7 block, AXI interconnect, the IODMAs (FINN estimates none for them) and "
              "FINN's FIFOs are outside the per-node totals (the whole-design yosys total includes onebit's FIFOs "
              "and width converters, not the DMAs or the interconnect). BNN-PYNQ's figures are Vivado's "
              "post-implementation utilisation of the whole design, shell included: not the same accounting.",
              "* FINN's nodes yosys cannot read here are counted with FINN's own estimate, labelled: yosys 0.23 stops "
              "on FINN's generated ConvolutionInputGenerator_rtl SystemVerilog (syntax error), so the whole-design "
              "yosys total (with onebit's FIFOs and width converters) is not available and FIFOs / width "
              "converters are in no LUT figure of the 'synthesized' row. FINN's Pool_hls estimate is 0 LUT (the "
              "search's figure); onebit's max pools synthesize to tens of LUTs.",
              "* Why ZCU104 gains no FPS over the HLS search: both stop at 6,272 cycles, the fastest MVAU_hls_1 "
              "may be at fold time, because the search keeps FINN's HLS limit of 8,191 weight-stream bits per "
              "MVAU (PE x SIMD; PE <= 8 at SIMD 576) for nodes that become onebit's RTL, which has no such limit; "
              "lifting it for `--mvau rtl` is the next step (not done here).",
              "* Est. Fmax: yosys cell delays (7-series -1) + 0.5 ns per routed net, one PE per MVAU "
              "(hw/rtl/timing.py); not a Vivado timing report.",
              "* Measured FPS: cycles per image of the stitched design in Verilator with FIFOs sized by simulation, "
              "at the nominal clock; the board's DMA and host driver are not simulated.", ""]
    lines += ["## Per node (Pynq-Z1, `--mvau rtl`)", "",
              "| node | op | PE | SIMD | ram_style | cycles | LUT (search) | BRAM18 (search) | cost from | yosys LUT of the build | est. Fmax MHz |",
              "|---|---|---:|---:|---|---:|---:|---:|---|---:|---:|"]
    built = {n["node"]: n for n in synth["nodes"]}
    for lr in z1["layers"]:   # the build renamed MVAU_hls_k / Pool_hls_k to OnebitMVAU_rtl_k / OnebitPool_rtl_k
        built_name = lr["name"].replace("MVAU_hls_", "OnebitMVAU_rtl_").replace("Pool_hls_", "OnebitPool_rtl_")
        b = built.get(built_name, {})
        ylut = b.get("lut") if b.get("source") == "yosys" else None
        lines.append(f"| {lr['name']} | {lr['op']} | {lr['pe'] or ''} | {lr['simd'] or ''} | {lr['ram_style'] or ''} | "
                     f"{lr['cycles']:,} | {lr['lut']:,.0f} | {lr['bram18']:,.0f} | {lr['source']} | {_n(ylut)} | "
                     f"{_n(synth['node_fmax_mhz'].get(built_name))} |")
    lines.append("")
    for r in rows:
        for rej in r.get("timing_rejected", []):
            lines.append(f"* {r['board']} {r['mvau']}: rejected for timing: {rej['node']} {rej['setting']}: {rej['why']}")
    lines += ["", "Cost model: " + json.dumps(result.get("cost_model", {})), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--work", default=str(REPO / "build" / "cnv_rtl_fold"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--skip-measure", action="store_true", help="leave out the rtl_accelerator run")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = build(work)
    result: dict[str, Any] = {"bnn_pynq": BNN_PYNQ, "synth": synthesized(synth_report(out, work))}
    partial = work / "cnv_rtl_fold.partial.json"
    if not args.skip_measure:
        done = work / "measured.json"   # a rerun reuses the simulation of the same build
        if done.is_file() and json.loads(done.read_text()).get("images") == args.images:
            result["measured"] = json.loads(done.read_text())
        else:
            result["measured"] = measure(out, args.images)
            write_text_atomic(done, json.dumps(result["measured"], indent=1, default=str))
        write_text_atomic(partial, json.dumps(result, indent=1, default=str))
    done = work / "searches.json"
    if done.is_file():
        result["searches"] = json.loads(done.read_text())
    else:
        result["searches"] = searches(out, work)
        write_text_atomic(done, json.dumps(result["searches"], indent=1, default=str))
    from hw.rtl.costmodel import CostModel

    model = CostModel.load()
    result["cost_model"] = {"description": model.describe(), "lut_coefficients": model.data["lut_coefficients"],
                            "refit": "python -m hw.rtl.costmodel calibrate"}
    outdir = Path(args.out)
    write_text_atomic(outdir / "cnv_rtl_fold.json", json.dumps(result, indent=1, default=str) + "\n")
    write_text_atomic(outdir / "cnv_rtl_fold.md", markdown(result))
    print((outdir / "cnv_rtl_fold.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
