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
   FINN's estimates (`--mvau hls`) and with the calibrated model (`--mvau rtl`: onebit's MVAUs searched under
   their own limits, not FINN's HLS 8,191-bit weight stream), and what bounds each `--mvau rtl` folding: the
   cheapest folding of the next faster target (and of 2x BNN-PYNQ on Pynq-Z1) against the budget.
5. The LUT total of the built design: onebit's nodes by yosys, FINN's nodes by FINN's estimate, and the FIFOs
   and width converters of the simulated design by FINN's estimates (StreamingFIFO_rtl, width converter).

    python bench/cnv_rtl_fold.py [--images 1000] [--work build/cnv_rtl_fold]

Writes bench/results/cnv_rtl_fold.{json,md}. A rerun reuses the checkpoint, build and every finished stage
(synth.json, measured.json, searches.json) in --work; the md says which stages ran in this invocation, their
wall times and the machine's load (2 cores shared by several sessions).
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
        run([sys.executable, "-c", BUILD_WITHOUT_UNPIPELINED, str(ckpt), "--board", "Pynq-Z1", "--mvau", "rtl",
             "--out", str(out), "--levels", "none", "--verify-samples", "100", "--no-progress"], log,
            {"ONEBIT_YOSYS_TIMEOUT": str(SYNTH_LIMIT_S)})
    return out


# export/to_finn.py as a user runs it, except that the report's yosys synthesis leaves out the unpipelined copy
# of every MVAU (hw.rtl.synth_report.synth_resources(unpipelined=False), as synth_report() below): that copy is
# a second synthesis of each MVAU, hours at CNV's width on 2 shared cores, and no figure here uses it
BUILD_WITHOUT_UNPIPELINED = (
    "import functools, sys; import hw.rtl.synth_report as s; "
    "s.synth_resources = functools.partial(s.synth_resources, unpipelined=False); "
    "sys.argv[0] = 'export/to_finn.py'; from export.to_finn import main; sys.exit(main(sys.argv[1:]))")


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
                     "chosen_step": result.chosen_step, "path_targets": [p["target_cycles"] for p in result.path],
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


def synth_report(out: Path) -> dict[str, Any]:
    """yosys synth_xilinx of the built design (hw/rtl/synth_report.synth_resources: every node of the final
    dataflow partition with its estimated Fmax, and the whole stitched design with FIFOs and width converters),
    without the build report's unpipelined comparison (a second synthesis of every MVAU)."""
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


def stream_estimates(out: Path, depths: dict[str, int], fpga_part: str) -> dict[str, Any]:
    """FINN's own estimates of the FIFOs and width converters of the stitched design rtl_accelerator ran (its
    FIFO depths as sized by simulation): each FIFO as FINN's StreamingFIFO_rtl (fifo.sv's cost ladder), each
    converter as FINN's StreamingDataWidthConverter. yosys cannot total the whole design (FINN's SWG), so
    this is how FIFOs and converters enter the LUT figure; labelled FINN estimate."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from hw.check.accel_model import final_model_path
    from hw.driver.io_spec import IOSpec
    from hw.finn.env import prepare_finn
    from hw.rtl.stitch import plan_accelerator

    prepare_finn(out / "hw")   # FINN's settings: its SWG lists its RTL files from them
    spec = IOSpec.load(out / "driver" / "io.json")
    design = plan_accelerator(ModelWrapper(str(final_model_path(out, spec.hw_model))), exact_depths=depths)
    rows = []
    for stage in design.stages:
        if stage.kind == "fifo":
            width, depth = int(stage.parameters["WIDTH"]), int(stage.parameters["DEPTH"])
            node = helper.make_node("StreamingFIFO_rtl", ["i"], ["o"], domain="finn.custom_op.fpgadataflow.rtl",
                                    backend="fpgadataflow", name=stage.name, depth=depth, folded_shape=[1, width],
                                    normal_shape=[1, width], dataType="BINARY")
            what = f"FIFO {width} bits x {depth}"
        elif stage.kind == "dwc":
            bits, n_in, n_out = (int(stage.parameters[k]) for k in ("EBITS", "IN_ELEMS", "OUT_ELEMS"))
            total = n_in * n_out   # a shape both widths divide
            node = helper.make_node("StreamingDataWidthConverter", ["i"], ["o"],
                                    domain="finn.custom_op.fpgadataflow", backend="fpgadataflow", name=stage.name,
                                    inShape=[1, total], outShape=[1, total], inWidth=n_in * bits,
                                    outWidth=n_out * bits, dataType=f"UINT{bits}" if bits > 1 else "BINARY")
            what = f"width converter {n_in * bits} -> {n_out * bits} bits"
        else:
            continue
        inst = getCustomOp(node)
        rows.append({"stage": stage.name, "what": what, "LUT": float(inst.lut_estimation(fpga_part)),
                     "BRAM_18K": float(inst.bram_estimation(fpga_part)) if hasattr(inst, "bram_estimation") else 0.0})
    return {"rows": rows, "LUT": sum(r["LUT"] for r in rows), "BRAM_18K": sum(r["BRAM_18K"] for r in rows),
            "fifos": sum(1 for r in rows if r["what"].startswith("FIFO")),
            "dwcs": sum(1 for r in rows if r["what"].startswith("width"))}


def what_bounds(out: Path, board_name: str, mvau: str, chosen: dict[str, Any], targets: dict[str, int]
                ) -> list[dict[str, Any]]:
    """For each named cycle target (e.g. the next one faster than the chosen folding, BNN-PYNQ x2): the cheapest
    folding the search has for it (its own orders and BRAM -> LUTRAM moves, hw/finn/autofold/search.py, before
    the Fmax check), its totals against the budget and the layers that must change from the chosen folding."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from hw.boards import get_board
    from hw.finn.autofold.costs import RESOURCES, Budget, evaluated_groups
    from hw.finn.autofold.search import ORDERS, _dwc_totals, _Orders, _RamStylePlanner
    from hw.finn.autofold.synth_costs import make_costs

    board = get_board(board_name)
    hw = ModelWrapper(str(out / "finn" / "step_specialize_layers.onnx"))
    budget = Budget.from_board(board)
    costs = make_costs(hw, board.fpga_part, board.clock_ns, mvau)
    groups = evaluated_groups(hw, board.fpga_part, board.axi_port_bits, costs)
    orders = _Orders(groups, budget.device)
    planner = _RamStylePlanner(hw, groups, board.fpga_part, costs)
    chosen_layers = {lr["name"]: lr for lr in chosen["layers"]}
    swg_lut = lambda state: sum(res["LUT"] for g, i in zip(groups, state)  # noqa: E731
                                for name, res in g.evals[i][2].items() if name.startswith("ConvolutionInputGenerator"))
    found = []
    for label, target in targets.items():
        best = None
        for order in ORDERS:
            state = orders.state(order, target)
            ok, styles, totals = planner.plan(state, budget.limit)
            extra = _dwc_totals(hw, groups, state, styles, board.fpga_part)
            totals = {r: totals[r] + extra[r] for r in RESOURCES}
            over = max(totals[r] / budget.limit[r] for r in ("LUT", "BRAM_18K"))
            if best is None or over < best[0]:
                best = (over, order, state, styles, totals, extra)
        over, order, state, styles, totals, extra = best
        if max(g.evals[i][0] for g, i in zip(groups, state)) > target:
            found.append({"label": label, "target_cycles": int(target), "unreachable": True})
            continue
        changes = []
        for group, idx in zip(groups, state):
            for name, attrs in group.settings[idx].items():
                was = chosen_layers.get(name, {})
                if name != group.name or (attrs.get("PE"), attrs.get("SIMD")) == (was.get("pe"), was.get("simd")):
                    continue
                # the search's figure at the memory style the planner gave it (weights moved to LUTRAM)
                res = planner._estimate(group, idx, styles[name]) if name in styles else group.evals[idx][2][name]
                weights = None
                if group.kind == "mvau":
                    node = hw.get_node_from_name(name)
                    mw, mh = (int(getCustomOp(node).get_nodeattr(a)) for a in ("MW", "MH"))
                    weights = {"words": (mw // attrs["SIMD"]) * (mh // attrs["PE"]),
                               "bits": attrs["PE"] * attrs["SIMD"]}
                changes.append({"node": name, "from": {"PE": was.get("pe"), "SIMD": was.get("simd"),
                                                       "cycles": was.get("cycles"), "LUT": was.get("lut"),
                                                       "BRAM_18K": was.get("bram18")},
                                "to": {**attrs, "cycles": group.evals[idx][1][name], "LUT": res["LUT"],
                                       "BRAM_18K": res["BRAM_18K"], "ram_style": styles.get(name),
                                       "weight_memory": weights}})
        found.append({"label": label, "target_cycles": int(target),
                      "fps": board.clock_mhz * 1e6 / max(g.evals[i][0] for g, i in zip(groups, state)),
                      "order": order, "totals": totals, "limit": budget.limit, "width_converters": extra,
                      "fits": all(totals[r] <= budget.limit[r] + 1e-9 for r in RESOURCES),
                      "over": [r for r in RESOURCES if totals[r] > budget.limit[r] + 1e-9],
                      "swg_lut_finn": swg_lut(state), "changes": changes, "moved_to_lutram": styles})
    return found


def weight_bits_per_cycle(layers: list[dict[str, Any]]) -> tuple[int, str]:
    """The widest MVAU weight word (PE x SIMD, 1-bit weights) of a search row's folding, and its node."""
    widths = [(lr["pe"] * lr["simd"], lr["name"]) for lr in layers if lr["op"].startswith("MVAU") and lr["pe"]]
    return max(widths) if widths else (0, "")


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
        run_paragraph(result.get("run") or {}), "",
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
    streams = result.get("streams") or {"LUT": 0.0, "BRAM_18K": 0.0}
    lut_syn = synth["onebit_lut"] + synth["finn_lut"] + streams["LUT"]
    bram_syn = synth["onebit_bram18"] + synth["finn_bram18"] + streams["BRAM_18K"]
    stream_text = (f" + {streams['LUT']:,.0f} {streams['fifos']} FIFOs and {streams['dwcs']} width converters "
                   "(FINN estimate)" if "rows" in streams else " (FIFOs, width converters: not counted)")
    lines.append(
        f"| the built `--mvau rtl` design, synthesized | Pynq-Z1 | {z1['clock_mhz']:g} | {z1['fps']:,.0f} | "
        f"{_n(measured.get('measured_fps'))} | {lut_syn:,.0f} = {synth['onebit_lut']:,.0f} onebit nodes (yosys) + "
        f"{synth['finn_lut']:,.0f} other nodes (FINN estimate){stream_text} | {bram_syn:,.0f} | "
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
                  f"* within 80 % of Pynq-Z1's LUT and BRAM (onebit nodes synthesized + FINN's estimate for the other "
                  f"nodes, the FIFOs and the width converters): "
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
              "* The shell: the Zynq PS7 block, the AXI interconnect and the IODMAs (FINN estimates none for them) "
              "are in no figure; the search rows leave out the FIFOs too (the 'synthesized' row has them, by FINN's "
              "estimate). BNN-PYNQ's figures are Vivado's post-implementation utilisation of the whole design, "
              "shell included: not the same accounting.",
              "* FINN's nodes yosys cannot read here are counted with FINN's own estimate, labelled: yosys 0.23 stops "
              "on FINN's generated ConvolutionInputGenerator_rtl SystemVerilog (syntax error), so the whole-design "
              "yosys total is not available; the FIFOs and width converters of the stitched design rtl_accelerator "
              "ran (depths sized by simulation) enter the 'synthesized' row with FINN's own estimates "
              "(StreamingFIFO_rtl's fifo.sv cost ladder, StreamingDataWidthConverter's formula). The search rows "
              "count width converters (FINN estimate) but no FIFOs: their depths are only known after simulation. "
              "FINN's Pool_hls estimate is 0 LUT (the search's figure); onebit's max pools synthesize to tens of LUTs.",
              "* " + width_sentence(rows),
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
    zcu = row.get(("ZCU104", "rtl"))
    if zcu and "error" not in zcu:
        lines += ["", "## Per node (ZCU104, `--mvau rtl`, the search only: not built or simulated here)", "",
                  "| node | op | PE | SIMD | weight bits / cycle | ram_style | cycles | LUT (search) | BRAM18 (search) | "
                  "cost from | est. Fmax MHz |", "|---|---|---:|---:|---:|---|---:|---:|---:|---|---:|"]
        for lr in zcu["layers"]:
            wide = lr["pe"] * lr["simd"] if lr["op"].startswith("MVAU") and lr["pe"] else None
            lines.append(f"| {lr['name']} | {lr['op']} | {lr['pe'] or ''} | {lr['simd'] or ''} | "
                         f"{'' if wide is None else format(wide, ',')} | {lr['ram_style'] or ''} | {lr['cycles']:,} | "
                         f"{lr['lut']:,.0f} | {lr['bram18']:,.0f} | {lr['source']} | "
                         f"{_n(zcu['node_fmax_mhz'].get(lr['name']))} |")
    lines += bounds_section(result)
    streams = result.get("streams")
    if streams and "rows" in streams:
        lines += ["", "## FIFOs and width converters of the simulated design (FINN's estimates)", "",
                  f"{streams['fifos']} FIFOs and {streams['dwcs']} width converters, depths as rtl_accelerator sized "
                  f"them: {streams['LUT']:,.0f} LUT, {streams['BRAM_18K']:,.0f} BRAM18 in all. Largest:", "",
                  "| stage | what | LUT | BRAM18 |", "|---|---|---:|---:|"]
        for r in sorted(streams["rows"], key=lambda r: -r["LUT"])[:8]:
            lines.append(f"| {r['stage']} | {r['what']} | {r['LUT']:,.0f} | {r['BRAM_18K']:,.0f} |")
    lines += ["", "Cost model: " + json.dumps(result.get("cost_model", {})), ""]
    return "\n".join(lines)


def run_paragraph(run: dict[str, Any]) -> str:
    """Which figures come from which invocation, with wall times and the machine's load."""
    if not run:
        return "Run: no record (an older result)."
    parts = []
    names = {"build": "the build (training, FINN, auto-fold, the report's yosys synthesis)",
             "synthesis": "yosys synthesis of the built nodes (yosys' results are cached by content: the build's "
                          "report synthesized them, its time is in the build's)", "rtl_accelerator": "rtl_accelerator",
             "searches": "the four searches"}
    for key, info in run.get("stages", {}).items():
        text = f"{names.get(key, key)}: {info.get('from')}"
        if "seconds" in info:
            text += (f", started {info['started']}, {info['seconds']:,.0f} s wall, 1-minute load average "
                     f"{info['load_before']:.1f} before / {info['load_after']:.1f} after")
        if info.get("note"):
            text += f" ({info['note']})"
        parts.append(text)
    return (f"Run: this invocation {run.get('started_utc')} to {run.get('finished_utc', 'n/a')}, commit "
            f"{run.get('commit')}, {run.get('cpus')} CPU cores shared with other sessions' jobs (the load "
            "averages say how busy; wall times are not idle-machine times). Stages: " + "; ".join(parts) + ".")


def width_sentence(rows: list[dict[str, Any]]) -> str:
    """What the per-backend MVAU limit did to each board's search (hw/finn/autofold/costs.mvau_refusal)."""
    row = {(r["board"], r["mvau"]): r for r in rows}
    parts = []
    for board in ("Pynq-Z1", "ZCU104"):
        hls, rtl = row.get((board, "hls")), row.get((board, "rtl"))
        if not hls or not rtl or "error" in hls or "error" in rtl:
            continue
        wh, nh = weight_bits_per_cycle(hls["layers"])
        wr, nr = weight_bits_per_cycle(rtl["layers"])
        parts.append(f"{board}: HLS search widest weight word {wh:,} bits ({nh}), RTL search {wr:,} bits ({nr})"
                     f"{' (past HLS limit)' if wr > 8191 else ''}, {rtl['fps'] / hls['fps']:.2f}x the HLS search's FPS")
    return ("Weight bits per cycle: FINN's MVAU_hls keeps HLS ap_int's 8,191-bit weight stream; a node that "
            "becomes onebit's RTL MVAU reads its weights from its own memory and is searched without it "
            "(hw/finn/autofold/costs.py: mvau_refusal; its streams keep the limit). " + "; ".join(parts) + ".")


def bounds_section(result: dict[str, Any]) -> list[str]:
    bounds = result.get("bounds") or {}
    if not bounds:
        return []
    lines = ["", "## What bounds the folding", "",
             "The search's cheapest folding for a faster cycle target (its own orders and BRAM -> LUTRAM moves, "
             "before the Fmax check), against the 80 % budget; LUT and BRAM18 are the search's figures (onebit "
             "MVAUs by the cost model, every other node and the width converters by FINN's estimate, no FIFOs).", ""]
    z1 = next((r for r in result.get("searches", []) if r["board"] == "Pynq-Z1" and r["mvau"] == "rtl"
               and "error" not in r), None)
    synth = result.get("synth") or {}
    if z1 and synth.get("nodes"):
        model_lut = sum(lr["lut"] for lr in z1["layers"] if lr["source"] == "yosys-calibrated model")
        yosys_lut = sum(n["lut"] for n in synth["nodes"] if n["source"] == "yosys" and "MVAU" in (n["op"] or ""))
        lines += [f"The cost model is conservative on the built design: it gives its onebit MVAUs "
                  f"{model_lut:,.0f} LUT, yosys synthesizes them to {yosys_lut:,.0f} ({yosys_lut / model_lut:.2f}x); "
                  "the search keeps to the model's figure against the budget.", ""]
    for board, found in bounds.items():
        for b in found:
            if b.get("unreachable"):
                lines.append(f"* {board}, {b['label']}: <= {b['target_cycles']:,} cycles is faster than some layer "
                             "can go at any folding")
                continue
            t, lim = b["totals"], b["limit"]
            verdict = "fits" if b["fits"] else "over the budget in " + ", ".join(b["over"])
            lines.append(f"* {board}, {b['label']}: <= {b['target_cycles']:,} cycles ({b['fps']:,.0f} FPS): "
                         f"{t['LUT']:,.0f} LUT of {lim['LUT']:,.0f}, {t['BRAM_18K']:,.0f} BRAM18 of "
                         f"{lim['BRAM_18K']:,.0f} -> {verdict}; FINN-estimated SWG LUT {b['swg_lut_finn']:,.0f}, "
                         f"width converters {b['width_converters']['LUT']:,.0f} LUT. Layers that must change:")
            for c in b["changes"]:
                f_, to = c["from"], c["to"]
                lines.append(f"  * {c['node']}: PE {f_['PE']} x SIMD {f_['SIMD']} ({_n(f_['cycles'])} cycles, "
                             f"{_n(f_['LUT'])} LUT, {_n(f_['BRAM_18K'])} BRAM18) -> PE {to.get('PE')} x SIMD "
                             f"{to.get('SIMD')} ({to['cycles']:,} cycles, {to['LUT']:,.0f} LUT, "
                             f"{to['BRAM_18K']:,.0f} BRAM18{', weights in LUTRAM' if to.get('ram_style') else ''}"
                             + (f"; weight memory {to['weight_memory']['words']:,} words x "
                                f"{to['weight_memory']['bits']:,} bits" if to.get("weight_memory") else "") + ")")
    return lines


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def _timed(run_info: dict[str, Any], name: str, record: Path, compute) -> Any:
    """compute() with its wall time and the machine's 1-minute load average before and after (2 cores shared by
    several sessions: the times are those of a busy machine), kept beside the stage's result in --work."""
    info = {"started": _utc(), "load_before": _load()}
    started = time.perf_counter()
    data = compute()
    info.update(seconds=round(time.perf_counter() - started, 1), load_after=_load())
    write_text_atomic(record, json.dumps(info))
    run_info["stages"][name] = {"from": "this invocation", **info}
    return data


def _from_cache(run_info: dict[str, Any], name: str, record: Path, what: str) -> None:
    info = json.loads(record.read_text()) if record.is_file() else {}
    run_info["stages"][name] = {"from": f"an earlier invocation ({what} in --work)", **info}


def _cached_stage(run_info: dict[str, Any], name: str, path: Path, compute, valid=lambda data: True) -> Any:
    """The stage's result from `path` in --work when there (a rerun), else computed now; run_info says which."""
    record = path.with_suffix(".run.json")
    if path.is_file():
        data = json.loads(path.read_text())
        if valid(data):
            _from_cache(run_info, name, record, path.name)
            return data
    data = _timed(run_info, name, record, compute)
    write_text_atomic(path, json.dumps(data, indent=1, default=str))
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--work", default=str(REPO / "build" / "cnv_rtl_fold"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--skip-measure", action="store_true", help="leave out the rtl_accelerator run")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    # the results this bench rewrites do not make the code dirty
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
                           cwd=REPO, capture_output=True, text=True)
    run_info: dict[str, Any] = {"started_utc": _utc(),
                                "commit": commit.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip()
                                                                   else ""),
                                "cpus": os.cpu_count(), "stages": {}}
    if (work / "pynq-z1-rtl" / "driver" / "io.json").is_file():
        out = build(work)
        _from_cache(run_info, "build", work / "build.run.json", "the build folder")
    else:
        out = _timed(run_info, "build", work / "build.run.json", lambda: build(work))
    result: dict[str, Any] = {"bnn_pynq": BNN_PYNQ, "run": run_info,
                              "synth": synthesized(_cached_stage(run_info, "synthesis", work / "synth.json",
                                                                 lambda: synth_report(out)))}
    partial = work / "cnv_rtl_fold.partial.json"
    if not args.skip_measure:
        result["measured"] = _cached_stage(run_info, "rtl_accelerator", work / "measured.json",
                                           lambda: measure(out, args.images),
                                           lambda data: data.get("images") == args.images)
        result["streams"] = stream_estimates(out, result["measured"]["fifo_depths"], "xc7z020clg400-1")
        write_text_atomic(partial, json.dumps(result, indent=1, default=str))
    result["searches"] = _cached_stage(run_info, "searches", work / "searches.json", lambda: searches(out, work))
    bounds = {}
    for row in result["searches"]:
        if row["mvau"] != "rtl" or "error" in row:
            continue
        targets = {}
        if row.get("chosen_step"):
            targets["the next faster target"] = row["path_targets"][row["chosen_step"] - 1]
        if row["board"] == "Pynq-Z1":
            targets[f"2x BNN-PYNQ ({2 * GOAL_FPS:,} FPS)"] = int(row["clock_mhz"] * 1e6 // (2 * GOAL_FPS))
        bounds[row["board"]] = what_bounds(out, row["board"], "rtl", row, targets)
    result["bounds"] = bounds
    from hw.rtl.costmodel import CostModel

    model = CostModel.load()
    result["cost_model"] = {"description": model.describe(), "lut_coefficients": model.data["lut_coefficients"],
                            "refit": "python -m hw.rtl.costmodel calibrate"}
    run_info["finished_utc"] = _utc()
    outdir = Path(args.out)
    write_text_atomic(outdir / "cnv_rtl_fold.json", json.dumps(result, indent=1, default=str) + "\n")
    write_text_atomic(outdir / "cnv_rtl_fold.md", markdown(result))
    print((outdir / "cnv_rtl_fold.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
