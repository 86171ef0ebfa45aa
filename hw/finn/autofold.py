"""Automatic folding: the highest estimated FPS whose estimated resources fit a board's budget.

FINN's own `target_fps` (SetFolding) asks "how little parallelism reaches N FPS"; a user with a board
asks the converse, "how fast can this network go on my board". `auto_fold` answers it with FINN's own
numbers only: every cycle count is the HW node's `get_exp_cycles()` and every resource figure its
`node_res_estimation()` (the per-node numbers behind FINN's `exp_cycles_per_layer` and `res_estimation`
analyses); the final report re-runs those analyses and `dataflow_performance` on the folded model.

The search, and why it is built this way:

* Folding groups. Parallelism attributes that FINN requires to move together form one group: an MVAU
  and the ConvolutionInputGenerator feeding it share SIMD (finn-examples' convention; it also avoids
  the width converters FINN would insert and that its estimates do not count), a depthwise SWG shares
  SIMD with the Pool/VVAU it feeds (SetFolding's rule). Valid values follow FINN's constraints: PE
  divides MH (or the channel count), SIMD divides MW (and the SWG's IFMChannels), the HLS weight
  stream stays within ap_int's 8191 bits, and the node's folded shapes must pass FINN's own asserts.
* A budget-independent greedy path. Starting from the fully folded design (all PE = SIMD = 1), each
  step relieves the cycle bottleneck (the group of the slowest node) with its cheapest valid folding
  that is strictly faster. Cheapest = smallest increase of LUT, BRAM, URAM and DSP, each as a
  fraction of the device total. The path depends on the network and the device, never on the margin.
* The budget only chooses where on the path to stop: the answer is the fastest path state that fits
  (LUT, BRAM_18K, URAM, DSP each <= margin x device total). A state that is over the BRAM budget may
  still fit by moving MVAU weight memories into LUTRAM (`ram_style="distributed"`), in a fixed order
  (most BRAM saved per LUT added first). Because the path and that order do not depend on the budget,
  a larger budget can only add fitting states: the result is monotone in the budget by construction.
  The path is cut where its LUT use (with every weight memory in BRAM, the LUT-minimal choice) passes
  the LUT budget; that cut is monotone in the budget too.

Estimates leave out FIFOs, data-width converters and the shell (DMA, interconnect); the margin is the
headroom for them and for the estimate's error (see docs: est. vs post-synthesis can differ by tens of
percent on aggressive foldings).

Why one file (780 lines): folding groups, their evaluation, the greedy path and the budget cut share the
private `_Group` state and are one algorithm read top to bottom; the report and plot at the end are
its result types. (To be split when the I/O-aware cost model joins it.)
"""
from __future__ import annotations

import argparse
import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from onebit.atomic import save_figure_atomic, write_text_atomic
from onebit.errors import OnebitError, cli_errors

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper

    from hw.boards import Board

RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")
DEFAULT_MARGIN = 0.8
# HLS ap_int<> is limited to 8191 bits (finn.util.basic.MAX_ALLOWED_AP_INT_W); an HLS MVAU's weight
# stream is PE*SIMD*weight_bits wide. Read from FINN at run time, this is only the fallback.
_AP_INT_MAX_W = 8191


class AutoFoldError(OnebitError):
    """The network cannot be folded into the requested budget (or the input graph is not HW layers)."""


# ----------------------------------------------------------------------------------------------------
# Folding groups: which attributes move together, and their valid values
# ----------------------------------------------------------------------------------------------------

# Ops with a PE attribute, and where FINN keeps the number PE must divide (SetFolding's pe_ops).
_PE_LIMIT_ATTR = {
    "Thresholding": "NumChannels",
    "LabelSelect": "Labels",
    "Pool": "Channels",
    "VVAU": "Channels",
    "GlobalAccPool": "NumChannels",
    "DuplicateStreams": "NumChannels",
    "StreamingMaxPool": "NumChannels",
}
# Ops with a SIMD attribute (SetFolding's simd_ops), same idea.
_SIMD_LIMIT_ATTR = {
    "ConvolutionInputGenerator": "IFMChannels",
    "FMPadding": "NumChannels",
    "FMPadding_Pixel": "NumChannels",
}


def _base_op(op_type: str) -> str:
    """`MVAU_hls` -> `MVAU`: the attribute semantics are the same for the HLS and RTL flavours."""
    for suffix in ("_hls", "_rtl"):
        if op_type.endswith(suffix):
            return op_type[: -len(suffix)]
    return op_type


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, int(n) + 1) if n % d == 0]


@dataclass
class _Group:
    """Nodes whose folding attributes are chosen together, and the valid settings for them."""

    name: str  # the node whose attribute drives the group (the compute node)
    nodes: list[str]
    kind: str  # "mvau", "pe", "simd" or "fixed"
    settings: list[dict[str, dict[str, int]]] = field(default_factory=list)  # node -> {attr: value}
    # per setting index: (cycles of the slowest node of the group, {node: cycles}, {node: {res: n}})
    evals: list[tuple[int, dict[str, int], dict[str, dict[str, float]]]] = field(default_factory=list)


def _is_hw(node) -> bool:
    from finn.util.fpgadataflow import is_hls_node, is_rtl_node

    return is_hls_node(node) or is_rtl_node(node)


def _inst(node):
    from qonnx.custom_op.registry import getCustomOp

    return getCustomOp(node)


def _attr_or_none(inst, name: str):
    if name not in inst.get_nodeattr_types():
        return None
    return inst.get_nodeattr(name)


def _pe_limit(inst, base: str) -> int:
    attr = _PE_LIMIT_ATTR.get(base)
    value = _attr_or_none(inst, attr) if attr else None
    if value is None:
        # SetFolding's fallback for ops without NumChannels: the last axis of the normal output.
        value = inst.get_normal_output_shape()[-1]
    return int(value)


def _simd_limit(inst, base: str) -> int:
    attr = _SIMD_LIMIT_ATTR.get(base, "NumChannels")
    value = _attr_or_none(inst, attr)
    if value is None:
        value = inst.get_normal_input_shape()[-1]
    return int(value)


def _build_groups(model: "ModelWrapper") -> list[_Group]:
    nodes = [n for n in model.graph.node if _is_hw(n)]
    by_name = {n.name: n for n in nodes}
    tied: dict[str, str] = {}  # SWG name -> consumer compute node name
    for node in nodes:
        base = _base_op(node.op_type)
        if base in ("MVAU", "Pool", "VVAU"):
            producer = model.find_producer(node.input[0])
            if producer is not None and _base_op(producer.op_type) == "ConvolutionInputGenerator":
                depthwise = int(_attr_or_none(_inst(producer), "depthwise") or 0)
                # MVAUs pair with dense SWGs, Pool/VVAU with depthwise ones (SetFolding's rule)
                if (base == "MVAU") == (depthwise == 0):
                    tied[producer.name] = node.name

    groups: list[_Group] = []
    for node in nodes:
        if node.name in tied:
            continue
        inst = _inst(node)
        base = _base_op(node.op_type)
        swg_name = next((s for s, c in tied.items() if c == node.name), None)
        swg = _inst(by_name[swg_name]) if swg_name else None
        members = [node.name] + ([swg_name] if swg_name else [])
        types = inst.get_nodeattr_types()
        if base == "MVAU":
            group = _Group(node.name, members, "mvau")
            mw, mh = int(inst.get_nodeattr("MW")), int(inst.get_nodeattr("MH"))
            swg_ch = int(swg.get_nodeattr("IFMChannels")) if swg else None
            wbits = inst.get_input_datatype(1).bitwidth()
            hls = node.op_type.endswith("_hls")
            for simd in _divisors(mw):
                if swg_ch is not None and swg_ch % simd:
                    continue  # the SWG delivers SIMD channels of one pixel: SIMD must divide them
                for pe in _divisors(mh):
                    if hls and pe * simd * wbits > _ap_int_max_w():
                        continue
                    setting = {node.name: {"PE": pe, "SIMD": simd}}
                    if swg_name:
                        setting[swg_name] = {"SIMD": simd}
                    group.settings.append(setting)
        elif "PE" in types:
            group = _Group(node.name, members, "pe")
            limit = _pe_limit(inst, base)
            swg_ch = int(swg.get_nodeattr("IFMChannels")) if swg else None
            for pe in _divisors(limit):
                if swg_ch is not None and swg_ch % pe:
                    continue
                setting = {node.name: {"PE": pe}}
                if swg_name:
                    setting[swg_name] = {"SIMD": pe}
                group.settings.append(setting)
        elif "SIMD" in types:
            group = _Group(node.name, members, "simd")
            for simd in _divisors(_simd_limit(inst, base)):
                group.settings.append({node.name: {"SIMD": simd}})
        else:
            group = _Group(node.name, members, "fixed", settings=[{}])
        groups.append(group)
    return groups


_GROUP_CACHE: dict[tuple[str, str], list[_Group]] = {}


def _evaluated_groups(model: "ModelWrapper", fpga_part: str) -> list[_Group]:
    """Groups with FINN's estimates for every setting, memoised per (graph, part).

    Asking FINN for ~1000 estimates is most of auto-fold's time; a sweep over margins or boards of the
    same part (the benchmark, the monotonicity tests) reuses them. The key is the whole serialized
    graph, so any change to the model (datatypes, ram_style, mem_mode) is a new entry.
    """
    import hashlib

    key = (hashlib.sha256(model.model.SerializeToString()).hexdigest(), fpga_part)
    if key not in _GROUP_CACHE:
        groups = _build_groups(model)
        _evaluate_groups(model, groups, fpga_part)
        if len(_GROUP_CACHE) >= 8:
            _GROUP_CACHE.pop(next(iter(_GROUP_CACHE)))
        _GROUP_CACHE[key] = groups
    return _GROUP_CACHE[key]


def _ap_int_max_w() -> int:
    try:
        from finn.util.basic import MAX_ALLOWED_AP_INT_W

        return int(MAX_ALLOWED_AP_INT_W)
    except ImportError:  # older FINN: same limit, not exported
        return _AP_INT_MAX_W


def _evaluate_groups(model: "ModelWrapper", groups: list[_Group], fpga_part: str) -> None:
    """Ask FINN for cycles and resources of every valid setting of every group (cached on the group).

    A setting FINN's own shape checks reject (e.g. a Reshape whose PE does not divide both axes) is
    dropped here, so the search never proposes a folding that step_apply_folding_config would refuse.
    """
    nodes = {n.name: n for n in model.graph.node}
    for group in groups:
        insts = {name: _inst(nodes[name]) for name in group.nodes}
        original = {name: {a: insts[name].get_nodeattr(a) for a in ("PE", "SIMD")
                           if a in insts[name].get_nodeattr_types()} for name in group.nodes}
        valid_settings, evals = [], []
        for setting in group.settings:
            try:
                for name, attrs in setting.items():
                    for attr, value in attrs.items():
                        insts[name].set_nodeattr(attr, int(value))
                cycles, res = {}, {}
                for name, inst in insts.items():
                    inst.get_folded_input_shape(0)
                    inst.get_folded_output_shape(0)
                    cycles[name] = int(inst.get_exp_cycles())
                    estimate = inst.node_res_estimation(fpga_part)
                    res[name] = {r: float(estimate.get(r, 0) or 0) for r in RESOURCES}
            except (AssertionError, ValueError, ZeroDivisionError):
                continue
            valid_settings.append(setting)
            evals.append((max(cycles.values()), cycles, res))
        for name, attrs in original.items():
            for attr, value in attrs.items():
                insts[name].set_nodeattr(attr, value)
        if not valid_settings:
            raise AutoFoldError(
                f"no valid folding for HW node {group.name} ({nodes[group.name].op_type}); "
                "check that the graph comes from step_specialize_layers"
            )
        group.settings, group.evals = valid_settings, evals


# ----------------------------------------------------------------------------------------------------
# Budget and results
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """Resource limits a folding must respect, keyed like FINN's estimate reports."""

    device: dict[str, float]  # whole-device totals (from the board preset)
    limit: dict[str, float]  # margin x device totals

    @staticmethod
    def from_board(board: "Board", margin: float | Mapping[str, float] = DEFAULT_MARGIN) -> "Budget":
        device = {r: float(board.budget()[r]) for r in RESOURCES}
        margins = ({r: float(margin) for r in RESOURCES} if not isinstance(margin, Mapping)
                   else {r: float(margin.get(r, DEFAULT_MARGIN)) for r in RESOURCES})
        for r, m in margins.items():
            if not 0.0 < m <= 1.0:
                raise AutoFoldError(
                    f"utilization margin for {r} is {m}; give a fraction in (0, 1], e.g. --margin 0.8"
                )
        return Budget(device, {r: device[r] * margins[r] for r in RESOURCES})


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
    layers: list[LayerReport]
    totals: dict[str, float]
    bottleneck: str
    max_cycles: int
    critical_path_cycles: int
    fps: float
    latency_us: float
    path_steps: int  # greedy steps computed
    chosen_step: int  # index of the chosen state on the path

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, out_dir: str | Path, prefix: str = "autofold") -> dict[str, Path]:
        """folding.json (FINN's format), <prefix>_report.json/.md and <prefix>_resources.png; atomic."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "folding": out / "folding.json",
            "json": out / f"{prefix}_report.json",
            "markdown": out / f"{prefix}_report.md",
            "png": out / f"{prefix}_resources.png",
        }
        write_text_atomic(paths["folding"], json.dumps(self.config, indent=2) + "\n")
        write_text_atomic(paths["json"], json.dumps(self.to_dict(), indent=2) + "\n")
        write_text_atomic(paths["markdown"], self.markdown())
        plot_resources(self, paths["png"])
        return paths

    def markdown(self) -> str:
        lines = [
            f"# Automatic folding for {self.board} ({self.fpga_part}, {self.clock_mhz:g} MHz)",
            "",
            f"Estimated **{self.fps:,.0f} FPS** (bottleneck **{self.bottleneck}**, {self.max_cycles:,} cycles"
            f" per frame), latency {self.latency_us:,.2f} us ({self.critical_path_cycles:,} cycles on the"
            " critical path, FINN's pessimistic sum).",
            "",
            "| resource | estimated | budget (margin) | device | use of budget |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in RESOURCES:
            use = self.totals[r] / self.budget[r] if self.budget[r] else 0.0
            lines.append(f"| {r} | {self.totals[r]:,.0f} | {self.budget[r]:,.0f} ({self.margin[r]:.0%}) |"
                         f" {self.device[r]:,.0f} | {use:.1%} |")
        lines += ["", "| layer | op | PE | SIMD | ram_style | cycles | LUT | BRAM_18K |",
                  "|---|---|---:|---:|---|---:|---:|---:|"]
        for lr in self.layers:
            mark = " **(bottleneck)**" if lr.name == self.bottleneck else ""
            lines.append(
                f"| {lr.name}{mark} | {lr.op_type} | {lr.pe or ''} | {lr.simd or ''} | {lr.ram_style or ''} |"
                f" {lr.cycles:,} | {lr.lut:,.0f} | {lr.bram_18k:,.0f} |"
            )
        lines += ["", "Estimates are FINN's (get_exp_cycles, res_estimation); FIFOs, width converters and the"
                  " shell are not included, which is what the margin is for.", ""]
        return "\n".join(lines)


def plot_resources(result: FoldingResult, path: str | Path) -> Path:
    """Per-layer bar chart: cycles (bottleneck highlighted), LUT and BRAM_18K, with the budget in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [lr.name for lr in result.layers]
    colors = ["tab:red" if n == result.bottleneck else "tab:blue" for n in names]
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
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels(names, fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle(
        f"{result.board}: {result.fps:,.0f} FPS at {result.clock_mhz:g} MHz, bottleneck {result.bottleneck} (red)",
        fontsize=10,
    )
    fig.tight_layout()
    return save_figure_atomic(fig, path, dpi=110)


# ----------------------------------------------------------------------------------------------------
# The search
# ----------------------------------------------------------------------------------------------------


def _state_resources(groups: list[_Group], state: list[int]) -> dict[str, float]:
    total = dict.fromkeys(RESOURCES, 0.0)
    for group, idx in zip(groups, state):
        for res in group.evals[idx][2].values():
            for r in RESOURCES:
                total[r] += res[r]
    return total


def _state_bottleneck(groups: list[_Group], state: list[int]) -> tuple[int, int]:
    """(index of the group holding the slowest node, its cycles); ties go to the earliest in the graph."""
    best_g, best_c = 0, -1
    for g, (group, idx) in enumerate(zip(groups, state)):
        cycles = group.evals[idx][0]
        if cycles > best_c:
            best_g, best_c = g, cycles
    return best_g, best_c


def _cost(delta: dict[str, float], device: dict[str, float]) -> float:
    cost = 0.0
    for r in RESOURCES:
        if delta[r] == 0:
            continue
        if device[r] <= 0:
            return float("inf")  # e.g. URAM on a Zynq-7000: a setting that needs it is impossible
        cost += delta[r] / device[r]
    return cost


def _greedy_path(groups: list[_Group], device: dict[str, float], lut_cut: float, progress: bool) -> list[list[int]]:
    """The budget-independent sequence of states, cut where the LUT-minimal use passes `lut_cut`."""
    from tqdm import tqdm

    # the fully folded start: the setting with the most cycles (least parallelism) of every group
    state = [max(range(len(g.evals)), key=lambda i: (g.evals[i][0], -i)) for g in groups]
    path = [list(state)]
    bar = tqdm(desc="auto-fold", unit="step", disable=not progress, leave=False)
    while True:
        g, cycles = _state_bottleneck(groups, state)
        group = groups[g]
        here = group.evals[state[g]][2]
        here_tot = {r: sum(res[r] for res in here.values()) for r in RESOURCES}
        best = None
        for i, (c, _, res) in enumerate(group.evals):
            if c >= cycles:
                continue
            delta = {r: sum(x[r] for x in res.values()) - here_tot[r] for r in RESOURCES}
            # cheapest first; then the smallest speed-up (small steps balance the pipeline); then
            # the least total parallelism; then the setting order (SIMD before PE, as SetFolding)
            key = (_cost(delta, device), -c, _parallelism(group.settings[i]), i)
            if best is None or key < best[0]:
                best = (key, i)
        if best is None or best[0][0] == float("inf"):
            break  # the bottleneck is fully unfolded (or needs a resource the device lacks)
        state[g] = best[1]
        path.append(list(state))
        bar.update(1)
        if _state_resources(groups, state)["LUT"] > lut_cut:
            break
    bar.close()
    return path


def _parallelism(setting: dict[str, dict[str, int]]) -> int:
    total = 1
    for attrs in setting.values():
        for v in attrs.values():
            total *= int(v)
    return total


def _ram_style_plan(model: "ModelWrapper", groups: list[_Group], state: list[int],
                    limit: dict[str, float], fpga_part: str) -> tuple[bool, dict[str, str], dict[str, float]]:
    """Does `state` fit `limit`, moving MVAU weights to LUTRAM where BRAM is short? (fits, styles, totals).

    The switch order (most BRAM saved per LUT added, then name) depends on the state only, so the
    number of switches needed shrinks as the BRAM limit grows: fitting is monotone in the budget.
    """
    totals = _state_resources(groups, state)
    styles: dict[str, str] = {}
    if totals["BRAM_18K"] > limit["BRAM_18K"]:
        nodes = {n.name: n for n in model.graph.node}
        options = []
        for group, idx in zip(groups, state):
            if group.kind != "mvau":
                continue
            inst = _inst(nodes[group.name])
            if _attr_or_none(inst, "mem_mode") != "internal_decoupled" or "distributed" not in _allowed(inst, "ram_style"):
                continue
            setting = group.settings[idx][group.name]
            before = group.evals[idx][2][group.name]
            old = {a: inst.get_nodeattr(a) for a in ("PE", "SIMD", "ram_style")}
            inst.set_nodeattr("PE", setting["PE"])
            inst.set_nodeattr("SIMD", setting["SIMD"])
            inst.set_nodeattr("ram_style", "distributed")
            after = inst.node_res_estimation(fpga_part)
            for a, v in old.items():
                inst.set_nodeattr(a, v)
            saved = before["BRAM_18K"] - float(after["BRAM_18K"])
            added = float(after["LUT"]) - before["LUT"]
            if saved > 0:
                options.append((-(saved / max(added, 1.0)), group.name, saved, added))
        for _, name, saved, added in sorted(options):
            if totals["BRAM_18K"] <= limit["BRAM_18K"]:
                break
            styles[name] = "distributed"
            totals["BRAM_18K"] -= saved
            totals["LUT"] += added
    fits = all(totals[r] <= limit[r] + 1e-9 for r in RESOURCES)
    return fits, styles, totals


def _allowed(inst, attr: str) -> set:
    spec = inst.get_nodeattr_types().get(attr)
    return set(spec[3]) if spec and len(spec) > 3 and spec[3] else set()


METADATA_KEY = "onebit_autofold"


def auto_fold(
    model: "ModelWrapper",
    board: "Board | str",
    margin: float | Mapping[str, float] = DEFAULT_MARGIN,
    clock_mhz: float | None = None,
    report_dir: str | Path | None = None,
    progress: bool = False,
) -> "ModelWrapper":
    """The builder-step form: fold for `board` and return the folded model.

    The result summary (FPS, bottleneck, totals, budget, folding config) is stored in the model's
    metadata under `onebit_autofold` (JSON) so a later step can report it; with `report_dir` the full
    report (folding.json, autofold_report.json/.md, autofold_resources.png) is written there too.
    """
    folded, result = fold_for_board(model, board, margin=margin, clock_mhz=clock_mhz, progress=progress)
    summary = {k: v for k, v in result.to_dict().items() if k != "layers"}
    folded.set_metadata_prop(METADATA_KEY, json.dumps(summary))
    if report_dir is not None:
        result.write(report_dir)
    return folded


def fold_for_board(
    model: "ModelWrapper",
    board: "Board | str",
    margin: float | Mapping[str, float] = DEFAULT_MARGIN,
    clock_mhz: float | None = None,
    progress: bool = False,
) -> tuple["ModelWrapper", FoldingResult]:
    """Fold a HW-layer graph (after step_specialize_layers) for the highest estimated FPS within budget.

    `margin` is the usable fraction of each resource (LUT, BRAM_18K, URAM, DSP), one number or a dict.
    Returns a folded copy of the model and the result (FINN folding config + per-layer report).
    Raises AutoFoldError if even the fully folded design does not fit.
    """
    from hw.boards import get_board

    board = get_board(board) if isinstance(board, str) else board
    budget = Budget.from_board(board, margin)
    clock = float(clock_mhz) if clock_mhz else float(board.clock_mhz)
    model = copy.deepcopy(model)
    _check_hw_graph(model)

    groups = _evaluated_groups(model, board.fpga_part)
    path = _greedy_path(groups, budget.device, budget.limit["LUT"], progress)

    # The bottleneck never gets slower along the path, so scan from its end: the first fitting state
    # has the best FPS; earlier fitting states with the same cycles are preferred (fewer resources).
    chosen = None
    for step in range(len(path) - 1, -1, -1):
        state = path[step]
        cycles = _state_bottleneck(groups, state)[1]
        if chosen is not None and cycles > chosen[0]:
            break
        fits, styles, _ = _ram_style_plan(model, groups, state, budget.limit, board.fpga_part)
        if fits:
            chosen = (cycles, step, state, styles)
    if chosen is None:
        totals = _state_resources(groups, path[0])
        over = ", ".join(f"{r} {totals[r]:,.0f} > {budget.limit[r]:,.0f}" for r in RESOURCES
                         if totals[r] > budget.limit[r])
        raise AutoFoldError(
            f"the network does not fit {board.name} even fully folded ({over}); use a larger board "
            "or a higher --margin"
        )
    _, step, state, styles = chosen
    config = _apply_state(model, groups, state, styles)
    result = evaluate_folding(model, board, margin=margin, clock_mhz=clock, config=config)
    result.path_steps, result.chosen_step = len(path) - 1, step
    return model, result


def _check_hw_graph(model: "ModelWrapper") -> None:
    hw = [n for n in model.graph.node if _is_hw(n)]
    if not hw:
        raise AutoFoldError(
            "the model has no HLS/RTL layers; auto-fold needs the graph after step_specialize_layers"
        )
    generic = [n.name for n in hw if not n.op_type.endswith(("_hls", "_rtl"))]
    if generic:
        raise AutoFoldError(
            f"layers {generic[:3]} are not specialized to HLS/RTL; run step_specialize_layers first"
        )
    names = [n.name for n in model.graph.node]
    if len(set(names)) != len(names):
        raise AutoFoldError("node names are not unique; apply GiveUniqueNodeNames before auto-fold")


def _apply_state(model: "ModelWrapper", groups: list[_Group], state: list[int],
                 styles: dict[str, str]) -> dict[str, Any]:
    """Set the chosen attributes on the model; return them as a FINN folding config."""
    nodes = {n.name: n for n in model.graph.node}
    config: dict[str, Any] = {"Defaults": {}}
    for group, idx in zip(groups, state):
        for name, attrs in group.settings[idx].items():
            inst = _inst(nodes[name])
            entry = config.setdefault(name, {})
            for attr, value in attrs.items():
                inst.set_nodeattr(attr, int(value))
                entry[attr] = int(value)
        if group.kind == "mvau":
            inst = _inst(nodes[group.name])
            if group.name in styles:
                inst.set_nodeattr("ram_style", styles[group.name])
            config[group.name]["ram_style"] = inst.get_nodeattr("ram_style")
    return {k: v for k, v in config.items() if v or k == "Defaults"}


def fastest_valid_folding(model: "ModelWrapper", fpga_part: str) -> dict[str, Any]:
    """The least-cycles valid setting of every folding group, as a FINN folding config.

    Used to fill in layers a foreign folding file has no entry for (e.g. finn-plus' Reshape and the
    SWG + Pool pair that replaced StreamingMaxPool), so that they never become the bottleneck.
    """
    groups = _evaluated_groups(model, fpga_part)
    config: dict[str, Any] = {"Defaults": {}}
    for group in groups:
        idx = min(range(len(group.evals)), key=lambda i: (group.evals[i][0], _parallelism(group.settings[i]), i))
        for name, attrs in group.settings[idx].items():
            config.setdefault(name, {}).update(attrs)
    return config


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
) -> FoldingResult:
    """FINN's estimates (exp_cycles_per_layer, res_estimation, dataflow_performance) of the model as folded.

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
    perf = model.analysis(dataflow_performance)
    layers, totals = [], dict.fromkeys(RESOURCES, 0.0)
    for node in model.graph.node:
        if node.name not in res:
            continue
        inst = _inst(node)
        r = res[node.name]
        for k in RESOURCES:
            totals[k] += float(r.get(k, 0) or 0)
        layers.append(LayerReport(
            name=node.name, op_type=node.op_type,
            pe=_attr_or_none(inst, "PE"), simd=_attr_or_none(inst, "SIMD"),
            ram_style=_attr_or_none(inst, "ram_style") if _base_op(node.op_type) == "MVAU" else None,
            cycles=int(cycles[node.name]), lut=float(r["LUT"]), bram_18k=float(r["BRAM_18K"]),
            uram=float(r.get("URAM", 0) or 0), dsp=float(r.get("DSP", 0) or 0),
        ))
    if config is None:
        config = {"Defaults": {}}
        for lr in layers:
            entry = {k: v for k, v in (("PE", lr.pe), ("SIMD", lr.simd), ("ram_style", lr.ram_style)) if v is not None}
            if entry:
                config[lr.name] = entry
    max_cycles = int(perf["max_cycles"])
    margins = {r: budget.limit[r] / budget.device[r] if budget.device[r] else 0.0 for r in RESOURCES}
    return FoldingResult(
        board=board.name, fpga_part=board.fpga_part, clock_mhz=clock, margin=margins,
        budget=dict(budget.limit), device=dict(budget.device), config=config, layers=layers, totals=totals,
        bottleneck=str(perf["max_cycles_node_name"]), max_cycles=max_cycles,
        critical_path_cycles=int(perf["critical_path_cycles"]),
        fps=clock * 1e6 / max_cycles, latency_us=int(perf["critical_path_cycles"]) / clock,
        path_steps=0, chosen_step=0,
    )


def fits(result: FoldingResult) -> bool:
    """True if every estimated resource total is within the result's budget."""
    return all(result.totals[r] <= result.budget[r] + 1e-9 for r in RESOURCES)


def make_autofold_step(board: "Board | str", margin: float | Mapping[str, float] = DEFAULT_MARGIN,
                       out_dir: str | Path | None = None):
    """A FINN builder step (model, cfg) -> model that auto-folds and writes the report into cfg.output_dir.

    Put it in place of step_target_fps_parallelization/step_apply_folding_config in a step list.
    """

    def step_onebit_auto_fold(model, cfg):
        return auto_fold(model, board, margin=margin, clock_mhz=1000.0 / float(cfg.synth_clk_period_ns),
                         report_dir=out_dir or cfg.output_dir, progress=True)

    return step_onebit_auto_fold


@cli_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hw.finn.autofold",
        description="Fold a FINN HW-layer graph (after step_specialize_layers) for the best estimated FPS "
        "within a board's budget; writes folding.json, a report and a resource chart.",
    )
    parser.add_argument("model", help="FINN ONNX model of HLS/RTL layers (e.g. finn/step_specialize_layers.onnx)")
    parser.add_argument("--board", required=True, help="board preset, e.g. Pynq-Z1")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help="usable fraction of LUT/BRAM/URAM/DSP (default 0.8)")
    parser.add_argument("--clock-mhz", type=float, default=None, help="clock (default: the board's)")
    parser.add_argument("--out", required=True, help="folder for folding.json and the report")
    args = parser.parse_args(argv)
    path = Path(args.model)
    if not path.is_file():
        raise AutoFoldError(f"model file {path} not found; pass the ONNX saved after step_specialize_layers")
    from hw.finn.env import prepare_finn

    prepare_finn(Path(args.out) / "finn_tmp")
    from qonnx.core.modelwrapper import ModelWrapper

    try:
        model = ModelWrapper(str(path))
    except Exception as error:  # onnx raises several unrelated types for a bad file
        raise AutoFoldError(f"cannot read {path} as ONNX ({error}); pass a FINN ONNX model") from error
    _, result = fold_for_board(model, args.board, margin=args.margin, clock_mhz=args.clock_mhz, progress=True)
    paths = result.write(args.out)
    print(f"{result.board}: {result.fps:,.0f} FPS (bottleneck {result.bottleneck}), "
          f"LUT {result.totals['LUT']:,.0f}/{result.budget['LUT']:,.0f}, "
          f"BRAM_18K {result.totals['BRAM_18K']:,.0f}/{result.budget['BRAM_18K']:,.0f}; wrote {paths['folding']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
