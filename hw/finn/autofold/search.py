"""The search: the best reachable FPS within the budget, with the least hardware that reaches it.

* Cycle targets. Every folding group (costs.py) has valid settings with FINN-estimated cycles; the
  design's rate is set by its slowest group, DMAs included (streams.py). The candidate targets T are
  the distinct cycle counts of all settings, from the fastest reachable (where every group is at its
  fastest, or the DMA's AXI beats stop it: the I/O bound) upwards.
* Cheapest folding for a target. Resources add up over groups and the rate is the slowest group's, so
  the cheapest design with every group at <= T cycles is each group's cheapest setting within T:
  fewest LUT, then BRAM ("lut" order); if that does not fit, the least sum of resource fractions
  ("balanced" order, for BRAM-tight devices). No group gets more parallelism than T needs: nothing
  is spent on throughput the DMA (or another layer) cannot deliver.
* The budget only decides which target is taken: the smallest T whose cheapest folding fits (LUT,
  BRAM_18K, URAM, DSP each <= margin x device, width converters included). A folding over the BRAM budget
  may still fit by moving MVAU weight memories to URAM (boards that have it; FINN then requires
  runtime_writeable_weights=1) or LUTRAM (`ram_style="distributed"`), in a fixed order. The foldings
  tried for each T do not depend on the budget, so a larger budget can only add fitting targets: the
  result is monotone in the budget by construction.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .costs import (
    DEFAULT_MARGIN, RESOURCES, AutoFoldError, Budget, Group, allowed, attr_or_none, evaluated_groups, inst, is_hw,
    parallelism,
)
from .result import FoldingResult, evaluate_folding
from .streams import width_converters

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper

    from hw.boards import Board

METADATA_KEY = "onebit_autofold"
ORDERS = ("lut", "balanced")


def _fraction_cost(total: dict[str, float], device: dict[str, float]) -> float:
    cost = 0.0
    for r in RESOURCES:
        if total[r] == 0:
            continue
        if device[r] <= 0:
            return float("inf")  # e.g. URAM on a Zynq-7000: a setting that needs it is impossible
        cost += total[r] / device[r]
    return cost


class _Orders:
    """Per group and order: setting indices sorted cheapest first, with their cycles (numpy, for T scans)."""

    def __init__(self, groups: list[Group], device: dict[str, float],
                 banned: frozenset[tuple[str, int]] = frozenset()) -> None:
        self.by_order: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {o: [] for o in ORDERS}
        for group in groups:
            allowed_idx = [i for i in range(len(group.settings)) if (group.name, i) not in banned]
            totals = [group.total(i) for i in range(len(group.settings))]
            keys = {
                "lut": lambda i: (totals[i]["LUT"], totals[i]["BRAM_18K"], _fraction_cost(totals[i], device),
                                  parallelism(group.settings[i]), i),
                "balanced": lambda i: (_fraction_cost(totals[i], device), totals[i]["LUT"], totals[i]["BRAM_18K"],
                                       parallelism(group.settings[i]), i),
            }
            for order in ORDERS:
                idx = np.array(sorted(allowed_idx, key=keys[order]), dtype=np.int64)
                cyc = np.array([group.evals[i][0] for i in idx], dtype=np.int64)
                self.by_order[order].append((idx, cyc))

    def state(self, order: str, target: int) -> list[int]:
        """Each group's cheapest setting (in `order`) with at most `target` cycles."""
        return [int(idx[int(np.argmax(cyc <= target))]) for idx, cyc in self.by_order[order]]


def state_resources(groups: list[Group], state: list[int]) -> dict[str, float]:
    total = dict.fromkeys(RESOURCES, 0.0)
    for group, idx in zip(groups, state):
        for r, v in group.total(idx).items():
            total[r] += v
    return total


def state_cycles(groups: list[Group], state: list[int]) -> int:
    return max(group.evals[idx][0] for group, idx in zip(groups, state))


class _RamStylePlanner:
    """Moves MVAU weight memories out of BRAM (to URAM, then LUTRAM) until BRAM fits; estimates memoised."""

    def __init__(self, model: "ModelWrapper", groups: list[Group], fpga_part: str, costs=None) -> None:
        self.model, self.groups, self.fpga_part = model, groups, fpga_part
        self.costs = costs
        self.nodes = {n.name: n for n in model.graph.node}
        self.cache: dict[tuple[str, int, str], dict[str, float]] = {}

    def _estimate(self, group: Group, idx: int, style: str) -> dict[str, float]:
        key = (group.name, idx, style)
        if key not in self.cache:
            instance = inst(self.nodes[group.name])
            setting = group.settings[idx][group.name]
            old = {a: instance.get_nodeattr(a) for a in ("PE", "SIMD", "ram_style")}
            instance.set_nodeattr("PE", setting["PE"])
            instance.set_nodeattr("SIMD", setting["SIMD"])
            instance.set_nodeattr("ram_style", style)
            if self.costs is not None:
                self.cache[key] = self.costs.estimate(self.nodes[group.name], instance)
            else:
                estimate = instance.node_res_estimation(self.fpga_part)
                self.cache[key] = {r: float(estimate.get(r, 0) or 0) for r in RESOURCES}
            for a, v in old.items():
                instance.set_nodeattr(a, v)
        return self.cache[key]

    def plan(self, state: list[int], limit: dict[str, float]) -> tuple[bool, dict[str, str], dict[str, float]]:
        """(fits, {mvau: ram_style}, totals). The move order depends on the state only (monotone in budget)."""
        totals = state_resources(self.groups, state)
        styles: dict[str, str] = {}
        if totals["BRAM_18K"] > limit["BRAM_18K"] and totals["LUT"] <= limit["LUT"]:
            options = {"ultra": [], "distributed": []}
            for group, idx in zip(self.groups, state):
                if group.kind != "mvau":
                    continue
                instance = inst(self.nodes[group.name])
                if attr_or_none(instance, "mem_mode") != "internal_decoupled":
                    continue
                before = group.evals[idx][2][group.name]
                for style in options:
                    if style not in allowed(instance, "ram_style") or (style == "ultra" and limit["URAM"] <= 0):
                        continue
                    if style == "ultra" and self.costs is not None and not self.costs.allows_uram(group.name):
                        continue  # onebit's RTL weight memory has no URAM
                    after = self._estimate(group, idx, style)
                    saved = before["BRAM_18K"] - after["BRAM_18K"]
                    added = after["LUT"] - before["LUT"] if style == "distributed" else after["URAM"] - before["URAM"]
                    if saved > 0:
                        options[style].append((-(saved / max(added, 1.0)), group.name, saved, after, before))
            for style in ("ultra", "distributed"):  # URAM first: it costs no LUT
                for _, name, saved, after, before in sorted(options[style], key=lambda o: (o[0], o[1])):
                    if totals["BRAM_18K"] <= limit["BRAM_18K"]:
                        break
                    if name in styles:
                        continue
                    if style == "ultra" and totals["URAM"] + after["URAM"] - before["URAM"] > limit["URAM"]:
                        continue
                    styles[name] = style
                    for r in RESOURCES:
                        totals[r] += after[r] - before[r]
        fits = all(totals[r] <= limit[r] + 1e-9 for r in RESOURCES)
        return fits, styles, totals


def apply_state(model: "ModelWrapper", groups: list[Group], state: list[int],
                styles: dict[str, str]) -> dict[str, Any]:
    """Set the chosen attributes on the model; return them as a FINN folding config."""
    nodes = {n.name: n for n in model.graph.node}
    config: dict[str, Any] = {"Defaults": {}}
    for group, idx in zip(groups, state):
        for name, attrs in group.settings[idx].items():
            instance = inst(nodes[name])
            entry = config.setdefault(name, {})
            for attr, value in attrs.items():
                instance.set_nodeattr(attr, int(value))
                entry[attr] = int(value)
        if group.kind == "mvau":
            instance = inst(nodes[group.name])
            if group.name in styles:
                instance.set_nodeattr("ram_style", styles[group.name])
                if styles[group.name] == "ultra":
                    # FINN refuses URAM weights without it on non-Versal parts (MVAU.generate_params):
                    # UltraRAM has no initial contents, the driver writes the weights at start.
                    instance.set_nodeattr("runtime_writeable_weights", 1)
                    config[group.name]["runtime_writeable_weights"] = 1
            config[group.name]["ram_style"] = instance.get_nodeattr("ram_style")
    return {k: v for k, v in config.items() if v or k == "Defaults"}


def _dwc_totals(model: "ModelWrapper", groups: list[Group], state: list[int], styles: dict[str, str],
                fpga_part: str) -> dict[str, float]:
    work = copy.deepcopy(model)
    apply_state(work, groups, state, styles)
    totals = dict.fromkeys(RESOURCES, 0.0)
    for row in width_converters(work, fpga_part):
        for r in RESOURCES:
            totals[r] += row[r]
    return totals


def fold_for_board(
    model: "ModelWrapper",
    board: "Board | str",
    margin: float | Mapping[str, float] = DEFAULT_MARGIN,
    clock_mhz: float | None = None,
    progress: bool = False,
    mvau: str = "hls",
) -> tuple["ModelWrapper", FoldingResult]:
    """Fold a HW-layer graph (after step_specialize_layers) for the best estimated FPS within budget.

    `margin` is the usable fraction of each resource (LUT, BRAM_18K, URAM, DSP), one number or a dict.
    `mvau` "rtl": the MVAUs become onebit's RTL (hw/finn/rtl_mvau.py), costed by the yosys-calibrated model
    (synth_costs.py), and a folding whose onebit MVAU misses the clock under the Fmax estimate of
    hw/rtl/timing.py is rejected (that node's settings with that SIMD banned, the search rerun, at most
    TIMING_ROUNDS times).
    Returns a folded copy of the model and the result (FINN folding config + per-layer report).
    Raises AutoFoldError if even the fully folded design does not fit.
    """
    from hw.boards import get_board
    from .synth_costs import make_costs

    board = get_board(board) if isinstance(board, str) else board
    budget = Budget.from_board(board, margin)
    clock = float(clock_mhz) if clock_mhz else float(board.clock_mhz)
    model = copy.deepcopy(model)
    check_hw_graph(model)
    costs = make_costs(model, board.fpga_part, 1000.0 / clock, mvau)
    groups = evaluated_groups(model, board.fpga_part, board.axi_port_bits, costs)
    planner = _RamStylePlanner(model, groups, board.fpga_part, costs)
    banned: set[tuple[str, int]] = set()
    rejected: list[dict[str, Any]] = []
    for _ in range(TIMING_ROUNDS if hasattr(costs, "timing_misses") else 1):
        step, state, styles, path, n_targets = _search(model, groups, budget, board, clock, planner,
                                                       frozenset(banned), progress)
        if not hasattr(costs, "timing_misses"):
            break
        trial = copy.deepcopy(model)
        apply_state(trial, groups, state, styles)
        misses = costs.timing_misses(trial, clock)
        if not misses:
            break
        for group, idx in zip(groups, state):
            if group.name in misses:
                # one PE is timed (hw/rtl/timing.py): its path is set by SIMD (the dot product's depth), not by
                # PE, so every setting of the node with that SIMD goes
                simd = group.settings[idx][group.name].get("SIMD")
                banned.update((group.name, i) for i, st in enumerate(group.settings)
                              if st[group.name].get("SIMD") == simd)
                rejected.append({"node": group.name, "setting": group.settings[idx][group.name],
                                 "ram_style": styles.get(group.name), "why": misses[group.name]})
    else:
        raise AutoFoldError(f"auto-fold found no folding whose onebit MVAUs meet {clock:g} MHz in {TIMING_ROUNDS} "
                            f"rounds (last: {rejected[-1]['node']}: {rejected[-1]['why']}); lower --clock-mhz")
    config = apply_state(model, groups, state, styles)
    result = evaluate_folding(model, board, margin=margin, clock_mhz=clock, config=config, costs=costs)
    result.path_steps, result.chosen_step, result.path = n_targets, step, path
    result.timing_rejected = rejected
    result.node_fmax_mhz = dict(getattr(costs, "timings", {}))
    return model, result


TIMING_ROUNDS = 12


def _search(model, groups: list[Group], budget: Budget, board, clock: float, planner: "_RamStylePlanner",
            banned: frozenset[tuple[str, int]], progress: bool):
    """The budget cut of the module docstring over the settings not banned: (chosen step, state, styles,
    the explored path, number of targets)."""
    from onebit.progress import bar as progress_bar

    orders = _Orders(groups, budget.device, banned)
    allowed_evals = [[ev for i, ev in enumerate(g.evals) if (g.name, i) not in banned] for g in groups]
    if any(not evs for evs in allowed_evals):
        raise AutoFoldError("every setting of a layer was rejected for timing; lower --clock-mhz")
    floor = max(min(ev[0] for ev in evs) for evs in allowed_evals)
    targets = sorted({ev[0] for evs in allowed_evals for ev in evs if ev[0] >= floor})
    path: list[dict[str, Any]] = []
    chosen = None
    for step, target in enumerate(progress_bar(targets, desc="auto-fold", unit="target", enabled=progress)):
        lut_state = orders.state("lut", target)
        totals = state_resources(groups, lut_state)
        point = {"target_cycles": int(target), "cycles": int(state_cycles(groups, lut_state)),
                 "lut": totals["LUT"], "bram18": totals["BRAM_18K"], "fits": False}
        point["fps"] = clock * 1e6 / point["cycles"]
        path.append(point)
        for order in ORDERS:
            state = lut_state if order == "lut" else orders.state(order, target)
            ok, styles, planned = planner.plan(state, budget.limit)
            if not ok:
                continue
            extra = _dwc_totals(model, groups, state, styles, board.fpga_part)
            if all(planned[r] + extra[r] <= budget.limit[r] + 1e-9 for r in RESOURCES):
                chosen = (step, state, styles)
                point["fits"] = True
                break
        if chosen is not None:
            break
    if chosen is None:
        totals = state_resources(groups, orders.state("lut", targets[-1]))
        over = ", ".join(f"{r} {totals[r]:,.0f} > {budget.limit[r]:,.0f}" for r in RESOURCES
                         if totals[r] > budget.limit[r]) or "width converters over the budget"
        raise AutoFoldError(
            f"the network does not fit {board.name} even fully folded ({over}); use a larger board "
            "or a higher --margin"
        )
    step, state, styles = chosen
    # the rest of the FPS-vs-LUT curve (slower, cheaper foldings), for the plot only
    for target in targets[step + 1:]:
        rest = orders.state("lut", target)
        totals = state_resources(groups, rest)
        cycles = state_cycles(groups, rest)
        path.append({"target_cycles": int(target), "cycles": int(cycles), "lut": totals["LUT"],
                     "bram18": totals["BRAM_18K"], "fps": clock * 1e6 / cycles, "fits": None})
    return step, state, styles, path, len(targets)


def check_hw_graph(model: "ModelWrapper") -> None:
    hw = [n for n in model.graph.node if is_hw(n)]
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


def auto_fold(
    model: "ModelWrapper",
    board: "Board | str",
    margin: float | Mapping[str, float] = DEFAULT_MARGIN,
    clock_mhz: float | None = None,
    report_dir: str | Path | None = None,
    progress: bool = False,
    mvau: str = "hls",
) -> "ModelWrapper":
    """The builder-step form: fold for `board` and return the folded model.

    The result summary (FPS, bottleneck, totals, budget, folding config) is stored in the model's
    metadata under `onebit_autofold` (JSON) so a later step can report it; with `report_dir` the full
    report (folding.json, autofold_report.json/.md, autofold_resources.png, autofold_path.png) is
    written there too.
    """
    folded, result = fold_for_board(model, board, margin=margin, clock_mhz=clock_mhz, progress=progress, mvau=mvau)
    summary = {k: v for k, v in result.to_dict().items() if k not in ("layers", "path")}
    folded.set_metadata_prop(METADATA_KEY, json.dumps(summary))
    if report_dir is not None:
        result.write(report_dir)
    return folded


def fastest_valid_folding(model: "ModelWrapper", fpga_part: str) -> dict[str, Any]:
    """The least-cycles valid setting of every folding group, as a FINN folding config.

    Used to fill in layers a foreign folding file has no entry for (e.g. finn-plus' Reshape and the
    SWG + Pool pair that replaced StreamingMaxPool), so that they never become the bottleneck.
    """
    groups = evaluated_groups(model, fpga_part)
    config: dict[str, Any] = {"Defaults": {}}
    for group in groups:
        idx = min(range(len(group.evals)), key=lambda i: (group.evals[i][0], parallelism(group.settings[i]), i))
        for name, attrs in group.settings[idx].items():
            config.setdefault(name, {}).update(attrs)
    return config


def make_autofold_step(board: "Board | str", margin: float | Mapping[str, float] = DEFAULT_MARGIN,
                       out_dir: str | Path | None = None, progress: bool = True, mvau: str = "hls"):
    """A FINN builder step (model, cfg) -> model that auto-folds and writes the report into cfg.output_dir.

    Put it in place of step_target_fps_parallelization/step_apply_folding_config in a step list.
    """

    def step_onebit_auto_fold(model, cfg):
        return auto_fold(model, board, margin=margin, clock_mhz=1000.0 / float(cfg.synth_clk_period_ns),
                         report_dir=out_dir or cfg.output_dir, progress=progress, mvau=mvau)

    return step_onebit_auto_fold
