"""`resources_synth` of a build: yosys synth_xilinx counts (hw/rtl/yosys.py) of every node of the final
dataflow partition and of the whole stitched design (hw/rtl/stitch.py: nodes, FIFOs, width converters),
for the board's family, beside FINN's estimates in report.md / report.json.

onebit's nodes are synthesized from hw/rtl/sv with their init files; FINN's own RTL nodes from the files
FINN generated (yosys may not read every SystemVerilog construct FINN uses: such a node gets its error);
FINN's HLS nodes have no RTL before Vitis HLS runs (a `--mvau hls` build), which the entry says.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hw.rtl.registry import ensure_onebit_ops
from hw.rtl.yosys import FAMILIES, family_for_part, synthesize
from onebit.errors import OnebitError


def synth_resources(model, fpga_part: str, whole: bool = True) -> dict[str, Any]:
    """{"family", "nodes": {name: counts or {"error"}}, "total": whole-design counts or {"error"}}."""
    from finn.util.fpgadataflow import is_hls_node, is_rtl_node
    from qonnx.custom_op.registry import getCustomOp

    ensure_onebit_ops(model)
    family = family_for_part(fpga_part)
    nodes: dict[str, Any] = {}
    for node in model.graph.node:
        try:
            inst = getCustomOp(node)
            if hasattr(inst, "rtl_node"):           # onebit's OnebitMVAU_rtl / OnebitPool_rtl
                nodes[node.name] = inst.rtl_node(model).resources(family).as_dict()
            elif is_rtl_node(node):
                files = [Path(f) for f in inst.get_rtl_file_list(abspath=True)]
                module = inst.get_nodeattr("gen_top_module") or inst.get_verilog_top_module_name()
                nodes[node.name] = synthesize(module, {}, {}, family, node.name, extra_sources=files).as_dict()
            elif is_hls_node(node):
                nodes[node.name] = {"error": "FINN HLS node: no RTL without Vitis HLS (build with --mvau rtl)"}
        except OnebitError as error:
            nodes[node.name] = {"error": str(error)}
    result: dict[str, Any] = {"tool": "yosys synth_xilinx", "family": family, "family_name": FAMILIES[family],
                              "nodes": nodes}
    if whole:
        result["total"] = _whole_design(model, family, nodes)
    return result


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
        for stage in design.stages:
            if stage.kind in ("onebit", "finn"):
                counts = nodes.get(stage.name, {})
                if "error" in counts:
                    return {"error": f"{stage.name} not synthesized: {counts['error']}"}
            else:
                counts = synthesize(stage.module, stage.parameters, {}, family, stage.name).as_dict()
            for k in keys:
                total[k] += int(counts.get(k, 0))
        total["fifo_depths"] = {s.name: s.parameters["DEPTH"] for s in design.stages if s.kind == "fifo"}
        total["how"] = "sum of the nodes, FIFOs and width converters, each synthesized by yosys"
        return total
    except OnebitError as error:
        return {"error": str(error)}


def markdown_rows(synth: dict[str, Any], layers: list[dict[str, Any]]) -> list[str]:
    """report.md rows: yosys counts beside FINN's LUT estimate per node."""
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
    return lines
