"""What a folding costs, scored the same way for auto-fold's answer and any other folding; its report and plots.

`evaluate_folding` runs FINN's analyses (exp_cycles_per_layer, res_estimation, dataflow_performance) on
the folded model and adds the streams FINN's estimate leaves out (streams.py): the input and output DMA
at the board's AXI port width and the width converters FINN would insert. The estimated FPS is the
board clock over the slowest of all of them, so the bottleneck it names may be "input DMA".
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from onebit.atomic import save_figure_atomic, write_text_atomic

from .costs import DEFAULT_MARGIN, RESOURCES, Budget, attr_or_none, base_op, inst
from .streams import DMA_OP, DWC_OP, dma_rows, width_converters

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper

    from hw.boards import Board


@dataclass
class LayerReport:
    name: str
    op_type: str
    pe: int | None
    simd: int | None
    ram_style: str | None
    cycles: int
    lut: float
    bram_18k: float
    uram: float
    dsp: float
    parallel_window: int | None = None
    cost_source: str = "FINN estimate"  # or "yosys-calibrated model" (--mvau rtl, synth_costs.py)


@dataclass
class FoldingResult:
    """What auto_fold chose and what FINN estimates it costs. `config` is a FINN folding config."""

    board: str
    fpga_part: str
    clock_mhz: float
    margin: dict[str, float]
    budget: dict[str, float]
    device: dict[str, float]
    config: dict[str, Any]
    layers: list[LayerReport]  # input DMA, the HW layers with FINN's width converters, output DMA
    totals: dict[str, float]
    bottleneck: str  # the slowest of all rows, DMAs included
    max_cycles: int
    critical_path_cycles: int
    fps: float
    latency_us: float
    path_steps: int  # candidate cycle targets the search explored
    chosen_step: int  # index of the chosen one among them
    compute_bottleneck: str = ""  # the slowest HW layer (FINN's dataflow_performance)
    compute_max_cycles: int = 0
    io_bound_cycles: int = 0  # AXI beats of the busier DMA: no folding gets below this
    io_bound_fps: float = 0.0
    port_bits: int = 0
    path: list[dict[str, Any]] = field(default_factory=list)  # the explored (FPS, LUT, BRAM, fits) points
    cost_model: str = "FINN's analytical estimates (node_res_estimation) for every node"
    timing_rejected: list[dict[str, Any]] = field(default_factory=list)  # settings banned for a missed clock
    node_fmax_mhz: dict[str, float] = field(default_factory=dict)  # onebit MVAUs' estimated Fmax (--mvau rtl)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, out_dir: str | Path, prefix: str = "autofold") -> dict[str, Path]:
        """folding.json (FINN's format), <prefix>_report.json/.md, <prefix>_resources.png and
        <prefix>_path.png (FPS vs LUT of the explored foldings); all atomic."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "folding": out / "folding.json",
            "json": out / f"{prefix}_report.json",
            "markdown": out / f"{prefix}_report.md",
            "png": out / f"{prefix}_resources.png",
            "path_png": out / f"{prefix}_path.png",
        }
        write_text_atomic(paths["folding"], json.dumps(self.config, indent=2) + "\n")
        write_text_atomic(paths["json"], json.dumps(self.to_dict(), indent=2) + "\n")
        write_text_atomic(paths["markdown"], self.markdown())
        plot_resources(self, paths["png"])
        plot_path(self, paths["path_png"])
        return paths

    def markdown(self) -> str:
        lines = [
            f"# Automatic folding for {self.board} ({self.fpga_part}, {self.clock_mhz:g} MHz)",
            "",
            f"Estimated **{self.fps:,.0f} FPS** (bottleneck **{self.bottleneck}**, {self.max_cycles:,} cycles"
            f" per frame), latency {self.latency_us:,.2f} us ({self.critical_path_cycles:,} cycles on the"
            " critical path, FINN's pessimistic sum, DMAs included).",
            "",
            f"I/O bound: {self.io_bound_cycles:,} cycles per image ({self.io_bound_fps:,.0f} FPS) through the"
            f" {self.port_bits}-bit AXI port; slowest HW layer: {self.compute_bottleneck}"
            f" ({self.compute_max_cycles:,} cycles). Parallelism beyond the I/O bound buys nothing, so the"
            " search stops there and takes the cheapest folding (fewest LUT, then BRAM) that reaches the best"
            f" reachable rate ({self.path_steps} cycle targets explored).",
            "",
            "| resource | estimated | budget (margin) | device | use of budget |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in RESOURCES:
            use = self.totals[r] / self.budget[r] if self.budget[r] else 0.0
            lines.append(f"| {r} | {self.totals[r]:,.0f} | {self.budget[r]:,.0f} ({self.margin[r]:.0%}) |"
                         f" {self.device[r]:,.0f} | {use:.1%} |")
        lines += ["", "| layer | op | PE | SIMD | ram_style | cycles | LUT | BRAM_18K | URAM | cost from |",
                  "|---|---|---:|---:|---|---:|---:|---:|---:|---|"]
        for lr in self.layers:
            mark = " **(bottleneck)**" if lr.name == self.bottleneck else ""
            simd = f"{lr.simd or ''}{' (window)' if lr.parallel_window else ''}"
            lines.append(
                f"| {lr.name}{mark} | {lr.op_type} | {lr.pe or ''} | {simd} | {lr.ram_style or ''} |"
                f" {lr.cycles:,} | {lr.lut:,.0f} | {lr.bram_18k:,.0f} | {lr.uram:,.0f} | {lr.cost_source} |"
            )
        lines += ["", "Cycles are FINN's (get_exp_cycles), resources as the 'cost from' column says (FINN's"
                  " res_estimation unless the node is costed by a calibrated model); DMA cycles are FINN's IODMA sizing"
                  " at the board's port width (no resource estimate exists for them), width converters are the"
                  " ones FINN's InsertDWC inserts. FIFOs and the shell are not included: that is what the"
                  " margin is for.", "", f"Node costs: {self.cost_model}.", ""]
        if self.node_fmax_mhz:
            lines += ["Estimated Fmax of onebit's MVAUs (hw/rtl/timing.py, yosys sta of one PE + routing allowance): "
                      + ", ".join(f"{n} {f:.0f} MHz" for n, f in self.node_fmax_mhz.items()) + ".", ""]
        for r in self.timing_rejected:
            lines.append(f"* rejected for timing: {r['node']} {r['setting']} ({r['ram_style'] or 'style as set'}): {r['why']}")
        if self.timing_rejected:
            lines.append("")
        return "\n".join(lines)


def fits(result: FoldingResult) -> bool:
    """True if every estimated resource total is within the result's budget."""
    return all(result.totals[r] <= result.budget[r] + 1e-9 for r in RESOURCES)


def apply_folding_config(model: "ModelWrapper", config: Mapping[str, Any]) -> "ModelWrapper":
    """Apply a FINN folding config (the step_apply_folding_config format) with FINN's ApplyConfig."""
    from finn.transformation.general import ApplyConfig

    return model.transform(ApplyConfig(dict(config)))


def evaluate_folding(
    model: "ModelWrapper",
    board: "Board | str",
    margin: float | Mapping[str, float] = DEFAULT_MARGIN,
    clock_mhz: float | None = None,
    config: dict[str, Any] | None = None,
    costs=None,
) -> FoldingResult:
    """FINN's estimates of the model as folded, plus its DMAs and width converters (see module doc).

    Used for the auto-fold result and to score any other folding (e.g. a published one) the same way.
    """
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    from hw.boards import get_board

    board = get_board(board) if isinstance(board, str) else board
    budget = Budget.from_board(board, margin)
    clock = float(clock_mhz) if clock_mhz else float(board.clock_mhz)
    model = model.transform(AnnotateCycles())
    cycles = model.analysis(exp_cycles_per_layer)
    res = res_estimation(model, board.fpga_part)
    if costs is not None:  # --mvau rtl: onebit's MVAUs from the calibrated model (synth_costs.py)
        for node in model.graph.node:
            if node.name in res and costs.covers(node.name):
                res[node.name] = costs.estimate(node, inst(node))
    perf = model.analysis(dataflow_performance)
    dma_in, dma_out = dma_rows(model, board.axi_port_bits)
    dwcs = {row["after"]: row for row in width_converters(model, board.fpga_part)}

    def stream_row(row: dict[str, Any]) -> LayerReport:
        return LayerReport(name=row["name"], op_type=row["op_type"], pe=None, simd=None, ram_style=None,
                           cycles=int(row["cycles"]), lut=float(row.get("LUT", 0.0)),
                           bram_18k=float(row.get("BRAM_18K", 0.0)), uram=float(row.get("URAM", 0.0)),
                           dsp=float(row.get("DSP", 0.0)))

    layers, totals = [stream_row(dma_in)], dict.fromkeys(RESOURCES, 0.0)
    if None in dwcs:
        layers.append(stream_row(dwcs[None]))
    for node in model.graph.node:
        if node.name not in res:
            continue
        instance = inst(node)
        r = res[node.name]
        layers.append(LayerReport(
            name=node.name, op_type=node.op_type,
            pe=attr_or_none(instance, "PE"), simd=attr_or_none(instance, "SIMD"),
            ram_style=attr_or_none(instance, "ram_style") if base_op(node.op_type) == "MVAU" else None,
            cycles=int(cycles[node.name]), lut=float(r["LUT"]), bram_18k=float(r["BRAM_18K"]),
            uram=float(r.get("URAM", 0) or 0), dsp=float(r.get("DSP", 0) or 0),
            parallel_window=attr_or_none(instance, "parallel_window"),
            cost_source=costs.source(node.name) if costs is not None else "FINN estimate",
        ))
        if node.name in dwcs:
            layers.append(stream_row(dwcs[node.name]))
    layers.append(stream_row(dma_out))
    for lr in layers:
        for key, value in (("LUT", lr.lut), ("BRAM_18K", lr.bram_18k), ("URAM", lr.uram), ("DSP", lr.dsp)):
            totals[key] += value
    if config is None:
        config = {"Defaults": {}}
        for lr in layers:
            if lr.op_type in (DMA_OP, DWC_OP):
                continue
            entry = {k: v for k, v in (("PE", lr.pe), ("SIMD", lr.simd), ("ram_style", lr.ram_style),
                                       ("parallel_window", lr.parallel_window)) if v is not None}
            if entry:
                config[lr.name] = entry
    slowest = max(layers, key=lambda lr: lr.cycles)  # ties: the first in stream order
    max_cycles = int(slowest.cycles)
    io_bound = max(dma_in["beats"], dma_out["beats"])
    critical = int(perf["critical_path_cycles"]) + int(dma_in["cycles"]) + int(dma_out["cycles"])
    margins = {r: budget.limit[r] / budget.device[r] if budget.device[r] else 0.0 for r in RESOURCES}
    return FoldingResult(
        board=board.name, fpga_part=board.fpga_part, clock_mhz=clock, margin=margins,
        budget=dict(budget.limit), device=dict(budget.device), config=config, layers=layers, totals=totals,
        bottleneck=slowest.name, max_cycles=max_cycles, critical_path_cycles=critical,
        fps=clock * 1e6 / max_cycles, latency_us=critical / clock, path_steps=0, chosen_step=0,
        compute_bottleneck=str(perf["max_cycles_node_name"]), compute_max_cycles=int(perf["max_cycles"]),
        io_bound_cycles=int(io_bound), io_bound_fps=clock * 1e6 / io_bound, port_bits=int(board.axi_port_bits),
        **({"cost_model": costs.description} if costs is not None else {}),
    )


def plot_resources(result: FoldingResult, path: str | Path) -> Path:
    """Per-layer bar chart: cycles (bottleneck highlighted), LUT and BRAM_18K, with the budget in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [lr.name for lr in result.layers]
    colors = ["tab:red" if n == result.bottleneck else ("tab:gray" if lr.op_type in (DMA_OP, DWC_OP) else "tab:blue")
              for n, lr in zip(names, result.layers)]
    height = max(3.0, 0.28 * len(names) + 1.5)
    fig, axes = plt.subplots(1, 3, figsize=(15, height), sharey=True)
    panels = [
        ("cycles / frame", [lr.cycles for lr in result.layers]),
        (f"LUT (total {result.totals['LUT']:,.0f} of {result.budget['LUT']:,.0f})", [lr.lut for lr in result.layers]),
        (f"BRAM_18K (total {result.totals['BRAM_18K']:,.0f} of {result.budget['BRAM_18K']:,.0f})",
         [lr.bram_18k for lr in result.layers]),
    ]
    for ax, (title, values) in zip(axes, panels):
        ax.barh(range(len(names)), values, color=colors)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].axvline(result.io_bound_cycles, color="tab:orange", ls="--", lw=1, label="I/O bound")
    axes[0].legend(fontsize=7)
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels(names, fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle(
        f"{result.board}: {result.fps:,.0f} FPS at {result.clock_mhz:g} MHz, bottleneck {result.bottleneck} (red);"
        " DMAs and width converters grey",
        fontsize=10,
    )
    # fixed margins: tight_layout's text measuring was most of a build's auto-fold step (seconds)
    fig.subplots_adjust(left=0.16, right=0.98, top=1 - 0.7 / height, bottom=0.45 / height, wspace=0.08)
    return save_figure_atomic(fig, path, dpi=100)


def plot_path(result: FoldingResult, path: str | Path) -> Path:
    """FPS vs LUT of the foldings the search explored: the chosen one marked, the I/O bound and LUT budget drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    points = result.path
    # fits: False = tried and over the budget, True = the first that fits, None = slower than the chosen
    # rate (the rest of the curve, not tried)
    for kind, color, label in ((False, "tab:gray", "tried, over budget"), (True, "tab:blue", "tried, fits"),
                               (None, "tab:cyan", "slower foldings (not needed)")):
        chosen = [p for p in points if p.get("fits") is kind]
        if chosen:
            ax.scatter([p["lut"] for p in chosen], [p["fps"] for p in chosen], s=10, color=color, label=label)
    ax.axhline(result.io_bound_fps, color="tab:orange", ls="--",
               label=f"I/O bound {result.io_bound_fps:,.0f} FPS ({result.port_bits}-bit port)")
    ax.axvline(result.budget["LUT"], color="tab:red", ls=":", label=f"LUT budget {result.budget['LUT']:,.0f}")
    ax.scatter([result.totals["LUT"]], [result.fps], s=120, marker="*", color="tab:green", zorder=5,
               label=f"chosen: {result.fps:,.0f} FPS, {result.totals['LUT']:,.0f} LUT")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("estimated LUT (cheapest folding for the rate)")
    ax.set_ylabel("estimated FPS (DMAs included)")
    ax.set_title(f"auto-fold search on {result.board} at {result.clock_mhz:g} MHz", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.subplots_adjust(left=0.12, right=0.97, top=0.93, bottom=0.11)
    return save_figure_atomic(fig, path, dpi=100)
