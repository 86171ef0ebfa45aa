"""`resources_synth` of a build: yosys synth_xilinx counts (hw/rtl/yosys.py) of every node of the final
dataflow partition and of the whole stitched design (hw/rtl/stitch.py: nodes, FIFOs, width converters),
for the board's family, beside FINN's estimates in report.md / report.json.

onebit's nodes are synthesized from hw/rtl/sv with their init files; FINN's own RTL nodes from the files
FINN generated (yosys may not read every SystemVerilog construct FINN uses: such a node gets its error);
FINN's HLS nodes have no RTL before Vitis HLS runs (a `--mvau hls` build), which the entry says.

Beside the counts, every node gets an estimated Fmax (`timing`, hw/rtl/timing.py: yosys cell delays plus a
routing allowance, 7-series -1 for every board) and the whole design the slowest of its nodes, FIFOs and
width converters. onebit's MVAUs get `pipelining` (MEM_REG, tree ranks, latency) and, where asked for
(`--compare-unpipelined`, issue 21's comparison), `unpipelined`: the LUT/FF counts and Fmax of the same node
without the pipelining (MEM_REG = 0, TREE_STAGES = 0), what onebit's MVAU was before, so its cost is visible.
That is a second synthesis of every MVAU (minutes for a wide one), so a build runs it only on request and the
report says when it was not run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hw.rtl.registry import ensure_onebit_ops
from hw.rtl.timing import MARGIN, ROUTE_NS, estimate_timing
from hw.rtl.yosys import FAMILIES, family_for_part, synthesize
from onebit.errors import OnebitError


# What the report says in place of the unpipelined figures when the build did not ask for them.
UNPIPELINED_NOT_RUN = ("not run: the comparison with the unpipelined MVAU is opt-in (build with --compare-unpipelined; "
                       "it synthesizes every onebit MVAU a second time)")


def synth_resources(model, fpga_part: str, whole: bool = True, unpipelined: bool = False) -> dict[str, Any]:
    """{"family", "nodes": {name: counts or {"error"}, with "timing" and (MVAUs) "pipelining"},
    "total": whole-design counts or {"error"}, with "timing", "unpipelined_comparison": {"executed", "reason"}}.
    unpipelined: also synthesize every onebit MVAU without its pipelining (pipelining["unpipelined"])."""
    from finn.util.fpgadataflow import is_hls_node, is_rtl_node
    from qonnx.custom_op.registry import getCustomOp

    ensure_onebit_ops(model)
    family = family_for_part(fpga_part)
    nodes: dict[str, Any] = {}
    for node in model.graph.node:
        try:
            inst = getCustomOp(node)
            if hasattr(inst, "rtl_node"):           # onebit's OnebitMVAU_rtl / OnebitPool_rtl
                rtl = inst.rtl_node(model)
                nodes[node.name] = rtl.resources(family).as_dict()
                nodes[node.name]["timing"] = _timing(rtl.timing)
                if hasattr(rtl, "unpipelined"):
                    nodes[node.name]["pipelining"] = _pipelining(rtl, family, unpipelined)
            elif is_rtl_node(node):
                files = [Path(f) for f in inst.get_rtl_file_list(abspath=True)]
                module = inst.get_nodeattr("gen_top_module") or inst.get_verilog_top_module_name()
                nodes[node.name] = synthesize(module, {}, {}, family, node.name, extra_sources=files).as_dict()
                nodes[node.name]["timing"] = _timing(lambda: estimate_timing(module, {}, {}, node.name, files))
            elif is_hls_node(node):
                nodes[node.name] = {"error": "FINN HLS node: no RTL without Vitis HLS (build with --mvau rtl)"}
        except OnebitError as error:
            nodes[node.name] = {"error": str(error)}
    result: dict[str, Any] = {"tool": "yosys synth_xilinx", "family": family, "family_name": FAMILIES[family],
                              "nodes": nodes, "timing_model": timing_model(),
                              "unpipelined_comparison": ({"executed": True} if unpipelined else
                                                         {"executed": False, "reason": UNPIPELINED_NOT_RUN})}
    if whole:
        result["total"] = _whole_design(model, family, nodes)
    return result


def timing_model() -> str:
    return (f"estimated Fmax: yosys sta of the flat synth_xilinx -family xc7 netlist (cell delays of 7-series -1 "
            f"from yosys' cells_sim.v; every board timed as 7-series) + {ROUTE_NS} ns routing allowance per "
            "general-routing net on the path; MVAUs timed with one PE. Ignores placement, routing detail and "
            "congestion, fanout, clock skew and jitter, block RAM address setup (hw/rtl/timing.py)")


def _timing(estimate) -> dict[str, Any]:
    """A node's timing estimate as report data, or {"error"} (a timeout is an error, never a pass)."""
    try:
        t = estimate()
    except OnebitError as error:
        return {"error": str(error)}
    return {k: v for k, v in t.as_dict().items() if k != "path"} | {"path": t.path[-12:]}


def _pipelining(rtl, family: str, compare: bool) -> dict[str, Any]:
    """An MVAU's pipelining (registers, latency) and, if `compare`, the same MVAU without it synthesized: LUT/FF
    counts and Fmax beside the pipelined node's; otherwise "unpipelined" says the comparison was not run."""
    params = rtl.parameters()
    old = rtl.unpipelined()
    out: dict[str, Any] = {"mem_reg": params.get("MEM_REG"), "tree_stages": params.get("TREE_STAGES"),
                           "clock_ns": rtl.cfg.clock_ns, "latency_cycles": rtl.cfg.latency,
                           "unpipelined_latency_cycles": old.cfg.latency}
    if not compare:
        out["unpipelined"] = {"not_run": UNPIPELINED_NOT_RUN}
        return out
    try:
        counts = old.resources(family)
        out["unpipelined"] = {"lut_total": counts.lut_total, "ff": counts.ff, "bram18": counts.bram18}
    except OnebitError as error:
        out["unpipelined"] = {"error": str(error)}
    out["unpipelined"]["timing"] = _timing(old.timing)
    return out


def _whole_design(model, family: str, nodes: dict[str, Any]) -> dict[str, Any]:
    """The stitched design's counts: its nodes' (above) plus every FIFO and width converter of
    hw/rtl/stitch.py, each synthesized on its own (cached by parameters). The stages meet only at
    registered stream ports, so a flat synthesis of the whole finds nothing to share across them, and
    per stage keeps a CNV's synthesis to minutes instead of an hour."""
    from hw.rtl.stitch import plan_accelerator

    try:
        design = plan_accelerator(model)
        keys = ("lut", "lutram_luts", "ff", "carry", "bram18", "dsp", "lut_total")
        total = {k: 0 for k in keys}
        timings: dict[str, Any] = {}
        for stage in design.stages:
            if stage.kind in ("onebit", "finn"):
                counts = nodes.get(stage.name, {})
                if "error" in counts:
                    return {"error": f"{stage.name} not synthesized: {counts['error']}"}
            else:
                counts = synthesize(stage.module, stage.parameters, {}, family, stage.name).as_dict()
                counts["timing"] = _timing(lambda: estimate_timing(stage.module, stage.parameters, {}, stage.name))
            for k in keys:
                total[k] += int(counts.get(k, 0))
            timings[stage.name] = counts.get("timing") or {"error": "not timed"}
        total["fifo_depths"] = {s.name: s.parameters["DEPTH"] for s in design.stages if s.kind == "fifo"}
        total["timing"] = _slowest(timings)
        total["how"] = "sum of the nodes, FIFOs and width converters, each synthesized by yosys"
        return total
    except OnebitError as error:
        return {"error": str(error)}


def _slowest(timings: dict[str, Any]) -> dict[str, Any]:
    """The whole design's Fmax: its slowest stage (the stages meet at registered stream ports)."""
    failed = {name: t["error"] for name, t in timings.items() if "error" in t}
    if failed:
        name = next(iter(failed))
        return {"error": f"{len(failed)} stage(s) not timed, first {name}: {failed[name]}"}
    name = min(timings, key=lambda n: timings[n]["fmax_mhz"])
    return {"fmax_mhz": timings[name]["fmax_mhz"], "period_ns": timings[name]["period_ns"], "critical_stage": name,
            "stages": {n: t["fmax_mhz"] for n, t in timings.items()}}


def design_figures(synth: dict[str, Any]) -> dict[str, Any]:
    """The two numbers a table of builds shows of `resources_synth`: the whole design's synthesized LUTs
    (logic + LUTRAM; None where the whole design was not synthesized) and its estimated Fmax (the slowest
    stage; where the whole design was not timed, the slowest synthesized node)."""
    if not synth.get("executed", True):
        return {"lut": None, "fmax_mhz": None}
    total = synth.get("total") or {}
    lut = None if "error" in total or "lut_total" not in total else int(total["lut_total"])
    fmax = (total.get("timing") or {}).get("fmax_mhz")
    if fmax is None:
        nodes = [c["timing"]["fmax_mhz"] for c in (synth.get("nodes") or {}).values()
                 if isinstance(c, dict) and "fmax_mhz" in (c.get("timing") or {})]
        fmax = min(nodes) if nodes else None
    return {"lut": lut, "fmax_mhz": fmax}


def fmax_warnings(synth: dict[str, Any], clock_mhz: float) -> list[str]:
    """One line per onebit or FINN RTL node whose estimated Fmax is below the board clock or missing."""
    lines = []
    for name, c in (synth.get("nodes") or {}).items():
        t = c.get("timing")
        if t is None:
            continue
        if "error" in t:
            lines.append(f"{name}: no Fmax estimate ({t['error'][:200]})")
        elif t["fmax_mhz"] < clock_mhz:
            lines.append(f"{name}: estimated Fmax {t['fmax_mhz']:.0f} MHz is below the {clock_mhz:.0f} MHz board clock "
                         f"({t['cell_ns']:.2f} ns cells + {t['route_ns']:.2f} ns routing allowance, {t['start']} -> "
                         f"{t['end']})")
    return lines


def markdown_rows(synth: dict[str, Any], layers: list[dict[str, Any]], clock_mhz: float | None = None) -> list[str]:
    """report.md rows: yosys counts beside FINN's LUT estimate per node, then the timing table."""
    finn = {r["layer"]: r for r in layers}
    lines = [f"Resources by {synth['tool']} ({synth['family_name']}), beside FINN's estimates:", "",
             "| node | yosys LUT | FINN LUT estimate | ratio | LUTRAM LUTs | FF | CARRY | BRAM18 | DSP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, c in synth["nodes"].items():
        est = finn.get(name, {}).get("LUT")
        if "error" in c:
            lines.append(f"| {name} | not synthesized: {c['error'][:120]} | {est or '-'} | | | | | | |")
            continue
        ratio = f"{c['lut_total'] / est:.2f}" if est else "-"
        lines.append(f"| {name} | {c['lut_total']} | {est:.0f} | {ratio} | {c['lutram_luts']} | {c['ff']} | "
                     f"{c['carry']} | {c['bram18']} | {c['dsp']} |" if est else
                     f"| {name} | {c['lut_total']} | - | - | {c['lutram_luts']} | {c['ff']} | {c['carry']} | "
                     f"{c['bram18']} | {c['dsp']} |")
    total = synth.get("total") or {}
    if "error" in total:
        lines.append(f"| whole design | not synthesized: {total['error'][:160]} | | | | | | | |")
    elif total:
        est = sum(r.get("LUT", 0) for r in layers)
        lines.append(f"| whole design (with FIFOs) | {total['lut_total']} | {est:.0f} | "
                     f"{total['lut_total'] / est:.2f} | {total['lutram_luts']} | {total['ff']} | {total['carry']} | "
                     f"{total['bram18']} | {total['dsp']} |" if est else f"| whole design | {total['lut_total']} | | | | | | | |")
    return lines + [""] + timing_rows(synth, clock_mhz)


def timing_rows(synth: dict[str, Any], clock_mhz: float | None) -> list[str]:
    """report.md: estimated Fmax per node and for the whole design, and what the MVAU pipelining costs."""
    clock = f" (board clock {clock_mhz:.0f} MHz; onebit's MVAUs are pipelined for {MARGIN:g}x it)" if clock_mhz else ""
    lines = [f"Estimated Fmax{clock}. Model: {synth.get('timing_model', timing_model())}.", "",
             "| node | est. Fmax MHz | cells + routing ns | nets | MEM_REG, tree ranks | latency cycles | "
             "unpipelined: LUT / FF / Fmax MHz / latency | pipelined: LUT / FF |",
             "|---|---|---|---|---|---|---|---|"]
    for name, c in synth["nodes"].items():
        t = c.get("timing")
        if t is None:
            continue
        if "error" in t:
            lines.append(f"| {name} | not estimated: {t['error'][:160]} | | | | | | |")
            continue
        flag = " (below the board clock)" if clock_mhz and t["fmax_mhz"] < clock_mhz else ""
        p = c.get("pipelining") or {}
        old = p.get("unpipelined") or {}
        old_t = old.get("timing") or {}
        ranks = f"{p.get('mem_reg')}, {p.get('tree_stages')}" if p else "-"
        old_text = ("-" if not p else f"not run (--compare-unpipelined) / {p.get('unpipelined_latency_cycles')}"
                    if "not_run" in old else
                    f"{old.get('lut_total', '?')} / {old.get('ff', '?')} / {old_t.get('fmax_mhz', 'n/a')} / "
                    f"{p.get('unpipelined_latency_cycles')}")
        lines.append(f"| {name} | {t['fmax_mhz']:.0f}{flag} | {t['cell_ns']:.2f} + {t['route_ns']:.2f} | {t['nets']} | "
                     f"{ranks} | "
                     f"{p.get('latency_cycles', '-')} | {old_text} | "
                     f"{c.get('lut_total', '-')} / {c.get('ff', '-')} |")
    whole = (synth.get("total") or {}).get("timing") or {}
    if "error" in whole:
        lines.append(f"| whole design | not estimated: {whole['error'][:160]} | | | | | | |")
    elif whole:
        lines.append(f"| whole design (slowest stage: {whole['critical_stage']}) | {whole['fmax_mhz']:.0f} | "
                     f"{whole['period_ns']:.2f} | | | | | |")
    comparison = synth.get("unpipelined_comparison") or {}
    if comparison.get("executed") is False and any(c.get("pipelining") for c in synth["nodes"].values()):
        lines += ["", f"Unpipelined MVAUs (LUT / FF / Fmax above): {comparison['reason']}."]
    return lines
