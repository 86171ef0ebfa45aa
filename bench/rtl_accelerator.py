"""The whole accelerator in Verilator (`--mvau rtl`, level rtl_accelerator), by the commands a user types:

1. `python -m quant_models.train --model M --epochs 1 ...`                  -> model.pt (if none exists)
2. `python export/to_finn.py model.pt --board Pynq-Z1 --mvau rtl [--auto-fold] --verify-samples 200 --compare-unpipelined`
   -> FINN build with onebit's RTL nodes, every level on 200 images, report.json with resources_synth (yosys)
3. rtl_accelerator on N test images (TFC: all 10,000; CNV: 1,000): the stitched design streamed the
   driver-packed DMA bytes, scores z = 2p - n compared with the collapsed integer model of the checkpoint
   (export.collapse.integer_scores) and the bit-exact accelerator model; steady-state cycles per image
   (FIFOs sized by simulation) vs FINN's estimated bottleneck, node by node; measured FPS at the
   board clock; yosys LUT of each onebit MVAU vs FINN's LUT estimate for MVAU_hls at the same PE/SIMD.

    python bench/rtl_accelerator.py                         # tfc default, tfc auto-fold, cnv (narrow), cnv-full
    python bench/rtl_accelerator.py --cases cnv-full         # the real CNV-w1a1 (about 30 minutes with its build)
    python bench/rtl_accelerator.py --cases tfc,tfc-auto --images 2000

Writes bench/results/rtl_accelerator.{json,md}; a rerun reuses the builds in --work (default build/rtl_bench).
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

CASES = {  # name: (model, train options, build options, default image count)
    # FINN's SetFolding at 10,000 FPS (the default folding before auto-fold became it): the rows stay comparable
    "tfc": ("tfc", [], ["--target-fps", "10000"], 10_000),
    "tfc-auto": ("tfc", [], ["--auto-fold"], 10_000),
    # CNV with narrow channels (the tests' structure: 6 conv, 2 pools, 3 FC) and a short training
    "cnv": ("cnv", ["--limit-train", "5000", "--arch", "channels=[16,16,32,32,64,64]", "--arch", "fc=[64,64]"],
            [], 1_000),
    # the real CNV-w1a1 (channels 64-256, FC 512), one epoch (put a trained one at <work>/cnv-full-ste.pt to
    # skip the training); rtl_nodes is left out (each node's own Verilator run adds hours at this width) and
    # yosys is bounded per node (FULL_SYNTH_LIMIT_S): the widest MVAUs would take hours on 2 shared cores
    "cnv-full": ("cnv", [], ["--levels", "none"], 1_000),
    # binary-input TFC with bit-packed input (issue 22): the host thresholds and packs, the first MVAU reads
    # 832 bits per image (13 beats of the 64-bit port); rtl_nodes left out (the first MVAU's own Verilator
    # run at PE 64 x SIMD 64 adds long compile times), rtl_accelerator checks the whole design
    "tfc-packed": ("tfc", ["--input-bits", "1"], ["--input-packing", "host", "--levels", "rtl_accelerator"], 1_000),
}
FULL_SYNTH_LIMIT_S = 120  # ONEBIT_YOSYS_TIMEOUT for cnv-full's build: a node over it is reported "not synthesized"
AUTO_SYNTH_LIMIT_S = 900  # tfc-auto's first layer (PE 32 x SIMD 16 add/subtract lanes) ran over 15 minutes
CASE_ENV = {"cnv-full": {"ONEBIT_YOSYS_TIMEOUT": str(FULL_SYNTH_LIMIT_S)},
            "tfc-packed": {"ONEBIT_YOSYS_TIMEOUT": str(FULL_SYNTH_LIMIT_S)},
            "tfc-auto": {"ONEBIT_YOSYS_TIMEOUT": str(AUTO_SYNTH_LIMIT_S)}}
METHODS = ("irnet", "binaryduo", "rbonn", "hyper")  # method:CASE trains CASE's model with that estimator
METHOD_NAMES = {"ste": "STE (BNN-PYNQ)", "irnet": "IR-Net", "binaryduo": "BinaryDuo", "rbonn": "RBONN",
                "hyper": "Hyper-BinaryNet"}


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(f'{k}={v}' for k, v in (env or {}).items())} {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, **env} if env else None)
    if proc.returncode not in (0, 1):  # 1 = a verification level mismatched: reported, not fatal here
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}; see {log}")


def checkpoint(work: Path, model: str, train: list[str], estimator: str = "ste", name: str | None = None) -> Path:
    path = work / f"{name or model}-{estimator}.pt"
    if not path.exists():
        run([sys.executable, "-m", "quant_models.train", "--model", model, "--dataset", "fashion-mnist", "--epochs", "1",
             "--estimator", estimator, "--seed", "0", "--out", str(path), "--quiet", *train], work / "bench.log")
    return path


def build(work: Path, name: str, ckpt: Path, options: list[str]) -> Path:
    out = work / name
    if not (out / "report.json").exists():
        # --compare-unpipelined: the Fmax table below sets each MVAU beside itself unpipelined (issue 21)
        run([sys.executable, "export/to_finn.py", str(ckpt), "--board", "Pynq-Z1", "--mvau", "rtl", "--out", str(out),
             "--verify-samples", "200", "--no-progress", "--compare-unpipelined", *options], work / "bench.log",
            CASE_ENV.get(name))
    return out


def cycle_analysis(out: Path, images: int = 12) -> dict[str, Any]:
    """Where the cycles go: the same Verilator build with the rule's FIFO depths instead of the simulated
    ones, and every node alone with a free-running source and sink (hw/rtl/node_rates.py)."""
    import numpy as np
    from qonnx.core.modelwrapper import ModelWrapper

    from hw.check.accel_model import final_model_path
    from hw.driver.io_spec import IOSpec
    from hw.rtl.node_rates import isolated_rates
    from hw.rtl.stitch import RTLAccelerator

    spec = IOSpec.load(out / "driver" / "io.json")
    model = ModelWrapper(str(final_model_path(out, spec.hw_model)))
    rule = RTLAccelerator(model, artifacts=out / "hw" / "rtl_accelerator", fifo_sizing="rule")
    first = rule.design.nodes[0]
    rule.run(np.zeros((images, first.in_beats, rule.design.in_width // 8), np.uint8))  # timing is data-independent
    rates = isolated_rates(rule.design, out / "hw" / "node_rates")
    return {"rule_fifo_depths": rule.depths, "rule_fifo_cycles_per_image": rule.last.cycles_per_image,
            "isolated": [r.as_dict() for r in rates]}


def _timing_fields(counts: dict[str, Any]) -> dict[str, Any]:
    """Estimated Fmax of the pipelined node and the same node unpipelined (hw/rtl/timing.py), with the LUT/FF
    the pipelining costs."""
    t = counts.get("timing") or {}
    p = counts.get("pipelining") or {}
    old = p.get("unpipelined") or {}
    return {"fmax_mhz": t.get("fmax_mhz"), "timing_error": t.get("error"), "mem_reg": p.get("mem_reg"),
            "tree_stages": p.get("tree_stages"), "latency_cycles": p.get("latency_cycles"),
            "unpipelined_lut": old.get("lut_total"), "unpipelined_ff": old.get("ff"),
            "unpipelined_fmax_mhz": (old.get("timing") or {}).get("fmax_mhz"),
            "unpipelined_latency_cycles": p.get("unpipelined_latency_cycles")}


def simulate(out: Path, n: int) -> tuple[dict[str, Any], Any, Any, Any, float]:
    """rtl_accelerator of the build in `out` on its first n test images: (its result, the images, their labels,
    the trained model's integer scores, simulation seconds)."""
    from export.collapse import integer_scores
    from hw.check.rtl_accelerator import run_rtl_accelerator
    from hw.check.verify import load_test_set
    from quant_models.checkpoint import load_checkpoint

    trained, meta = load_checkpoint(out / "model.pt")
    images, labels, _ = load_test_set(meta, n)
    started = time.perf_counter()
    result = run_rtl_accelerator(out, images, progress=True)
    seconds = time.perf_counter() - started
    return result, images, labels, integer_scores(trained, images), seconds


def measure(out: Path, n: int) -> dict[str, Any]:
    import numpy as np

    from hw.check.rtl_accelerator import mismatch_message

    from quant_models.checkpoint import read_checkpoint

    result, images, labels, reference, seconds = simulate(out, n)
    report = json.loads((out / "report.json").read_text())
    config = (read_checkpoint(out / "model.pt").get("training") or {}).get("config") or {}
    clock = report["board"]["clock_mhz"]
    synth = report.get("resources_synth", {})
    layers = {r["layer"]: r for r in report["layers"]}
    mvaus, synth_errors = [], {}
    for name, counts in (synth.get("nodes") or {}).items():
        row = layers.get(name, {})
        if "MVAU" not in row.get("op_type", ""):
            continue
        if "error" in counts:
            synth_errors[name] = counts["error"]
            continue
        est = row.get("LUT") or 0
        mvaus.append({"node": name, "PE": row.get("PE"), "SIMD": row.get("SIMD"), "yosys_lut": counts["lut_total"],
                      "yosys_lutram_luts": counts["lutram_luts"], "yosys_ff": counts["ff"], "yosys_bram18": counts["bram18"],
                      "finn_hls_lut_estimate": est, "ratio": counts["lut_total"] / est if est else None,
                      "yosys_dot_instances": (counts.get("instances") or {}).get("onebit_dot"),
                      **_timing_fields(counts)})
    cycles, bottleneck = result["cycles_per_image"], result["estimated_bottleneck_cycles"]
    n_last = min(len(images), 500)  # the wait counters are those of the last chunk's run
    levels = report["verification"]["levels"]
    return {
        "images": int(n), "sim_seconds": round(seconds, 1), "build_seconds": result["build_seconds"],
        "training": {k: config.get(k) for k in ("estimator", "epochs", "limit_train", "seed")},
        "mismatches_vs_accel_model": len(result["mismatching"]),
        "mismatches_vs_pytorch_trained": int(np.any(result["scores"] != reference, axis=1).sum()),
        "argmax_mismatches_vs_pytorch_trained": int((result["scores"].argmax(1) != reference.argmax(1)).sum()),
        "accuracy": float((result["scores"].argmax(1) == labels).mean()),
        "mismatch_message": mismatch_message(result),
        "other_levels_200_images": {k: v.get("integer_mismatches") for k, v in levels.items()},
        "cycles_per_image": cycles, "estimated_bottleneck_cycles": bottleneck, "cycles_ratio": cycles / bottleneck,
        "first_image_latency_cycles": result["first_image_latency"],
        "estimated_latency_cycles": report["estimate"]["latency_cycles"],
        "clock_mhz": clock, "measured_fps": clock * 1e6 / cycles, "estimated_fps": report["estimate"]["fps"],
        "fifo_depths": result["fifo_depths"], "width_converters": result["width_converters"],
        "nodes": [{**{k: r[k] for k in ("node", "op_type", "exp_cycles")},
                   "input_wait_cycles_per_image": round(r["input_wait_cycles"] / max(1, n_last), 1)}
                  for r in result["nodes"]],
        "folding": {r["layer"]: (r["PE"], r["SIMD"]) for r in report["layers"]},
        "mvau_luts": mvaus, "mvau_synth_errors": synth_errors,
        "node_fmax_mhz": {k: (v.get("timing") or {}).get("fmax_mhz", (v.get("timing") or {}).get("error"))
                          for k, v in (synth.get("nodes") or {}).items()},
        "fmax_warnings": synth.get("fmax_warnings"), "whole_design_synth": {k: v for k, v in (synth.get("total") or {}).items() if k != "cells"},
        "simulated_cycles": result["simulated_cycles"], "fifo_sizing": result.get("fifo_sizing"),
        "cycle_analysis": cycle_analysis(out),
    }


def gap_section(name: str, r: dict[str, Any]) -> list[str]:
    """Measured vs estimated cycles node by node, from the case's cycle_analysis (none for older rows)."""
    analysis = r.get("cycle_analysis")
    if not analysis:
        return []
    bottleneck = r["estimated_bottleneck_cycles"]
    rule = analysis["rule_fifo_cycles_per_image"]
    waits = {x["node"]: x.get("input_wait_cycles_per_image") for x in r["nodes"]}
    lines = ["", f"## {name}: measured vs estimated cycles, node by node", "",
             f"Measured {r['cycles_per_image']:.0f} cycles/image with FIFOs sized by simulation, "
             f"{r['cycles_ratio']:.3f}x FINN's bottleneck estimate ({bottleneck}). The same Verilator build with "
             f"FINN's rule depths (hw/rtl/stitch.py, at least one MVAU input vector) runs {rule:.0f} cycles/image "
             f"({rule / bottleneck:.3f}x). Per node: FINN's get_exp_cycles, the node alone (a free-running source "
             "and sink, hw/rtl/node_rates.py) and the cycles per image its input stream held a beat it did not "
             "take in the whole design (the node busy with earlier beats, or held back by the stages after it).", "",
             "| node | op | FINN cycles | alone (measured) | alone / FINN | input wait in the design / image |",
             "|---|---|---|---|---|---|"]
    for x in analysis["isolated"]:
        lines.append(f"| {x['node']} | {x['op_type']} | {x['exp_cycles']} | {x['isolated_cycles_per_image']:.0f} | "
                     f"{x['ratio']:.3f} | {waits.get(x['node'], '-')} |")
    slow = [x for x in analysis["isolated"] if x["ratio"] > 1.01]
    fast = [x for x in analysis["isolated"] if x["ratio"] < 0.95]
    worst = max(analysis["isolated"], key=lambda x: x["isolated_cycles_per_image"])
    text = []
    if slow:
        text.append("Nodes slower alone than FINN's estimate: " + ", ".join(
            f"{x['node']} ({x['isolated_cycles_per_image']:.0f} vs {x['exp_cycles']})" for x in slow) + ".")
    else:
        text.append(f"Every node alone meets its FINN estimate (the slowest, {worst['node']}, "
                    f"{worst['isolated_cycles_per_image']:.0f} cycles/image): no node of onebit's RTL "
                    "(OnebitMVAU_rtl, OnebitPool_rtl) or FINN's (FMPadding_rtl, ConvolutionInputGenerator_rtl) "
                    "runs slower than FINN counts.")
    if fast:
        swg = all(x["op_type"].startswith("ConvolutionInputGenerator") for x in fast)
        text.append("Faster alone than estimated: " + ", ".join(
            f"{x['node']} ({x['isolated_cycles_per_image']:.0f} vs {x['exp_cycles']})" for x in fast) +
            ("; FINN's ConvolutionInputGenerator_rtl estimate adds the line-buffer fill of every image, which "
             "overlaps the previous image's last windows when the input keeps coming." if swg else "."))
    sizing = r.get("fifo_sizing") or {}
    grown = {k: (analysis["rule_fifo_depths"].get(k), v) for k, v in (sizing.get("depths") or {}).items()
             if v > analysis["rule_fifo_depths"].get(k, v)}
    if grown:
        text.append(f"The difference between the rule's {rule:.0f} and FINN's {bottleneck} is between the nodes: "
                    "windows, rows and MVAU input vectors arrive in bursts that FIFOs of a few beats cannot absorb. "
                    "The sizing run deepened " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in grown.items()) +
                    " beats (FINN's step_set_fifo_depths does the same by simulation on a Vivado host).")
    if sizing.get("capped"):
        text.append("FIFOs that filled up during sizing (the chain ran slower than the pace there): "
                    + ", ".join(sizing["capped"]) + ".")
    return lines + ["", " ".join(text)]


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Whole accelerator in Verilator (`--mvau rtl`, level rtl_accelerator)", "",
             "Generated by `python bench/rtl_accelerator.py`: onebit's RTL MVAU / max pool in FINN's flow, the "
             "stitched design (FIFOs, width converters) simulated in Verilator on the driver-packed DMA bytes; "
             "scores z = 2p - n compared per image with the collapsed integer model of the checkpoint "
             "(export.collapse.integer_scores: binary weights, integer thresholds; the reference of every hardware "
             "level, hw/check/verdict.py) and with the bit-exact accelerator model of the final FINN graph.", "",
             "| case | images | mismatches vs collapsed integer model / accel model | accuracy | cycles/image (measured / FINN estimate) | "
             "first-image latency (cycles, measured / estimate) | FPS at clock (measured / estimate) | sim time |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if ":" in name:  # method:CASE rows: the methods table below
            continue
        if "error" in r:
            lines.append(f"| {name} | not run: {r['error']} | | | | | | |")
            continue
        lines.append(f"| {name} | {r['images']:,} | {r['mismatches_vs_pytorch_trained']} / {r['mismatches_vs_accel_model']} | "
                     f"{r['accuracy']:.2%} | {r['cycles_per_image']:.0f} / {r['estimated_bottleneck_cycles']} "
                     f"({r['cycles_ratio']:.3f}x) | {r['first_image_latency_cycles']} / {r['estimated_latency_cycles']} | "
                     f"{r['measured_fps']:,.0f} / {r['estimated_fps']:,.0f} at {r['clock_mhz']:.0f} MHz | "
                     f"{r['sim_seconds']} s |")
    lines += ["", "## yosys LUTs of onebit's MVAU vs FINN's LUT estimate for MVAU_hls at the same PE/SIMD", "",
              "| case | node | PE | SIMD | yosys LUT (logic + LUTRAM) | FINN HLS estimate | ratio | yosys FF | BRAM18 |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for m in r.get("mvau_luts", []) if ":" not in name else []:
            ratio = f"{m['ratio']:.2f}" if m["ratio"] is not None else "-"
            lines.append(f"| {name} | {m['node']} | {m['PE']} | {m['SIMD']} | {m['yosys_lut']} | "
                         f"{m['finn_hls_lut_estimate']:.0f} | {ratio} | {m['yosys_ff']} | {m['yosys_bram18']} |")
    lines += timing_table(results)
    for name, r in results.items():
        if "error" not in r:
            lines += gap_section(name, r)
    lines += methods_table(results)
    lines += ["", "## Notes", "",
              "- cycles/image: mean distance between consecutive images' last output beats after the first image "
              "(steady state), with FIFO depths sized by simulation (hw/rtl/fifo_sizing.py: the input paced "
              "at FINN's bottleneck rate, each FIFO as deep as the most beats it held, at least FINN's rule plus one "
              "MVAU input vector); FINN's estimate is its bottleneck node's get_exp_cycles." + before_sizing_note(results),
              "- first-image latency: first input beat to the first image's last output beat; FINN's estimate is "
              "the sum of the nodes' cycles (critical path), which the pipelined nodes overlap.",
              "- yosys counts are post-synthesis estimates (no place and route, no timing closure); FINN's are its "
              "analytical HLS estimates. Whole-design rows include the FIFOs.",
              "- yosys synthesizes each PE's dot product once, as its own module, and counts it once per PE "
              "(hw/rtl/yosys.py): flattened, a wide add/subtract layer's adder trees become one full-adder "
              "network that ABC's SAT sweeping does not finish (TFC's first layer at PE 32 x SIMD 16 ran past "
              "15 minutes; 94 s this way, measured once on the 2 shared cores).",
              synth_note(results),
              *training_note(results),
              "- onebit's MVAU is pipelined for the board clock (issue 21; hw/rtl/README.md: memory output register "
              "and TREE_STAGES ranks in each PE's adder tree): one fold step per cycle as before, so cycles/image "
              "do not change; each MVAU's latency grows by 1 + its ranks (tfc before it, main 3282ef9: 7168 / 7168 "
              "cycles, first-image latency 15833, MVAU yosys LUT 441 / 154 / 150 / 70, FF 134 / 54 / 53 / 57). "
              + before_pipelining_note(results) + " Estimated Fmax of every MVAU at these foldings, pipelined vs "
              "unpipelined: bench/results/rtl_timing.md (`python bench/rtl_timing.py`).",
              "- " + ", ".join(f"{name}'s build runs with ONEBIT_YOSYS_TIMEOUT={env['ONEBIT_YOSYS_TIMEOUT']} s"
                               for name, env in CASE_ENV.items()) +
              " (hw/rtl/yosys.py), so an MVAU whose synthesis takes longer has no count (listed above) instead of "
              "holding the bench for hours; cnv-full's build also leaves out the rtl_nodes level (--levels none: every "
              "node's own Verilator run at full width), the rtl_accelerator level of this bench covers the whole design."]
    return "\n".join(lines) + "\n"


def training_note(results: dict[str, Any]) -> list[str]:
    """Rows whose checkpoint saw only part of the training set (the hardware figures do not depend on it; the
    accuracy does)."""
    short = [f"{name} ({r['training']['limit_train']:,} images, {r['training']['epochs']} epoch(s))"
             for name, r in results.items() if (r.get("training") or {}).get("limit_train")]
    return [f"- Checkpoints trained on part of the training set (mismatches, cycles and resources do not depend on "
            f"it; the accuracy does): {', '.join(short)}."] if short else []


def predates_pipelining(r: dict[str, Any]) -> bool:
    """A row measured before onebit's MVAU was pipelined: no MVAU of its build has a timing entry (since the
    pipelining every build's synthesis times each MVAU: an Fmax, or the error why not)."""
    luts = r.get("mvau_luts") or []
    return bool(luts) and all(m.get("fmax_mhz") is None and not m.get("timing_error") for m in luts)


def before_pipelining_note(results: dict[str, Any]) -> str:
    """Which rows, from the data, were measured with the unpipelined MVAU (none once every case is rerun)."""
    old = [name for name, r in results.items() if "error" not in r and predates_pipelining(r)]
    if not old:
        return "Every row of this file was measured with the pipelined MVAU."
    return (f"Rows measured before it, with the unpipelined MVAU (no Fmax in their build's report): {', '.join(old)}; "
            f"`python bench/rtl_accelerator.py --cases {','.join(old)}` reruns them.")


def before_sizing_note(results: dict[str, Any]) -> str:
    """Which rows have no node-by-node section: measured before the FIFO sizing (FINN's rule depths only)."""
    old = [name for name, r in results.items() if "error" not in r and not r.get("cycle_analysis")]
    return (f" Rows without a node-by-node section were measured before the sizing (FINN's rule depths only): "
            f"{', '.join(old)}." if old else "")


def timing_table(results: dict[str, Any]) -> list[str]:
    """Estimated Fmax of each onebit MVAU, pipelined for the board clock and as it was before (unpipelined)."""
    rows = [(name, m) for name, r in results.items() if ":" not in name for m in r.get("mvau_luts", [])
            if m.get("fmax_mhz") is not None or m.get("timing_error")]
    if not rows:
        return []
    lines = ["", "## Estimated Fmax of onebit's MVAU: pipelined (now) vs unpipelined (before)", "",
             "hw/rtl/timing.py: yosys sta cell delays (7-series -1) + 0.5 ns routing allowance per general-routing net; "
             "one PE per node; ignores placement, routing detail, fanout, clock skew (hw/rtl/README.md). The "
             "unpipelined figures are the same node with MEM_REG = TREE_STAGES = 0, synthesized in the same run. "
             "Pynq-Z1 board clock 100 MHz, target 125 MHz.", "",
             "| case | node | PE x SIMD | MEM_REG, tree ranks | est. Fmax MHz (pipelined / unpipelined) | LUT (pipelined / "
             "unpipelined) | FF (pipelined / unpipelined) | latency cycles (pipelined / unpipelined) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in rows:
        fmax = m.get("fmax_mhz") if m.get("fmax_mhz") is not None else f"not estimated: {m.get('timing_error')}"
        lines.append(f"| {name} | {m['node']} | {m['PE']} x {m['SIMD']} | {m.get('mem_reg')}, {m.get('tree_stages')} | "
                     f"{fmax} / {m.get('unpipelined_fmax_mhz')} | {m['yosys_lut']} / {m.get('unpipelined_lut')} | "
                     f"{m['yosys_ff']} / {m.get('unpipelined_ff')} | {m.get('latency_cycles')} / "
                     f"{m.get('unpipelined_latency_cycles')} |")
    warnings = [f"{name}: {w}" for name, r in results.items() for w in (r.get("fmax_warnings") or [])]
    lines += [""] + [f"- WARNING {w}" for w in warnings] if warnings else []
    return lines


def method_of(case: str) -> tuple[str, str]:
    """'irnet:tfc' -> ('irnet', 'tfc'); a plain case is the STE checkpoint."""
    return tuple(case.split(":", 1)) if ":" in case else ("ste", case)  # type: ignore[return-value]


def methods_table(results: dict[str, Any]) -> list[str]:
    """One checkpoint per training method beside the STE case it shares model and build options with."""
    lines: list[str] = []
    for base in CASES:
        names = [n for n in results if ":" in n and method_of(n)[1] == base]
        if not names:
            continue
        model, train, options = CASES[base][:3]
        lines += ["", f"## One checkpoint of each training method: {model.upper()}-w1a1 (rtl_accelerator)", "",
                  f"`python -m quant_models.train --model {model} --estimator METHOD --epochs 1 --seed 0"
                  f"{' ' + ' '.join(train) if train else ''}`, built like the `{base}` case above "
                  f"(`--mvau rtl{' ' + ' '.join(options) if options else ''}`); all test images streamed through the "
                  "stitched design in Verilator.", "",
                  "| method | case | images | mismatches vs collapsed integer model / accel model | accuracy | cycles/image "
                  "(measured / FINN estimate) | MVAU PE x SIMD | MVAU yosys LUT (sum) / FINN HLS estimate |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in ([base] if base in results else []) + sorted(names, key=lambda n: METHODS.index(method_of(n)[0])
                                                                if method_of(n)[0] in METHODS else 99):
            r, method = results[name], method_of(name)[0]
            label = METHOD_NAMES.get(method, method)
            if "error" in r:
                lines.append(f"| {label} | {name} | not run: {r['error']} | | | | | |")
                continue
            luts = r.get("mvau_luts", [])
            lut = sum(m["yosys_lut"] for m in luts)
            est = sum(m["finn_hls_lut_estimate"] or 0 for m in luts)
            folds = ", ".join(f"{pe}x{simd}" for node, (pe, simd) in r.get("folding", {}).items()
                              if node.startswith(("OnebitMVAU", "MVAU")))
            lines.append(f"| {label} | {name} | {r['images']:,} | {r['mismatches_vs_pytorch_trained']} / "
                         f"{r['mismatches_vs_accel_model']} | {r['accuracy']:.2%} | {r['cycles_per_image']:.0f} / "
                         f"{r['estimated_bottleneck_cycles']} ({r['cycles_ratio']:.3f}x) | {folds} | "
                         + (f"{lut} / {est:.0f} ({lut / est:.2f}) |" if est else "- |"))
    return lines


def synth_note(results: dict[str, Any]) -> str:
    """Which MVAUs of this run's cases have no yosys count, from the data (the table leaves them out)."""
    missing = []
    for name, r in results.items():
        if "error" in r:
            continue
        have = {m["node"] for m in r.get("mvau_luts", [])}
        errors = r.get("mvau_synth_errors", {})
        for node in [x["node"] for x in r.get("nodes", []) if "MVAU" in x["op_type"]]:
            if node not in have:
                pe, simd = r.get("folding", {}).get(node, ("?", "?"))
                why = errors.get(node, "no count in that build's report")
                missing.append(f"{name} {node} (PE {pe} x SIMD {simd}: {why[:100]})")
    flat = [name for name, r in results.items() if ":" not in name and r.get("mvau_luts")
            and any(m.get("yosys_dot_instances") is None for m in r["mvau_luts"])]
    note = ("- Every MVAU of every case has a yosys count." if not missing else
            "- MVAUs without a yosys count in this run (left out of the LUT table): " + "; ".join(missing) + ".")
    if flat:
        note += (f" The LUT rows of {', '.join(flat)} come from an earlier flat synthesis (before each PE's dot "
                 f"product became its own module); `python bench/rtl_accelerator.py --cases {','.join(flat)}` "
                 "refreshes them.")
    return note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="tfc,tfc-auto,cnv,cnv-full", help=f"comma list of {', '.join(CASES)}, "
                        f"or method:MODEL (e.g. irnet:tfc) for other training methods")
    parser.add_argument("--images", type=int, default=None, help="test images per case (default: TFC all, CNV 1000)")
    parser.add_argument("--work", type=Path, default=REPO / "build" / "rtl_bench")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    out_json = REPO / "bench" / "results" / "rtl_accelerator.json"
    results: dict[str, Any] = {}
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        estimator, base = "ste", case
        if ":" in case:
            estimator, base = case.split(":", 1)
            model, train, options, default_n = CASES[base]
        else:
            model, train, options, default_n = CASES[case]
        try:
            ckpt = checkpoint(args.work, model, train, estimator, name=base if base.endswith(("-full", "-packed")) else None)
            out = build(args.work, case.replace(":", "-"), ckpt, options)
            results[case] = measure(out, args.images or default_n)
        except (SystemExit, Exception) as error:  # one case failing is reported, the others still run
            results[case] = {"error": str(error)[:300]}
        merged = json.loads(out_json.read_text()) if out_json.exists() else {}  # other runs' cases stay
        merged.update({case: results[case]})
        results = merged
        write_text_atomic(out_json, json.dumps(results, indent=1, default=str))
        write_text_atomic(out_json.with_suffix(".md"), markdown(results))
        print(case, json.dumps({k: v for k, v in results[case].items() if k in (
            "images", "mismatches_vs_pytorch_trained", "mismatches_vs_accel_model", "cycles_ratio", "error")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
