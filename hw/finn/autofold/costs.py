"""The cost model: folding groups, their valid settings, and FINN's cycles and resources for each.

Every cycle count is the HW node's `get_exp_cycles()` and every resource figure its
`node_res_estimation()` (the per-node numbers behind FINN's `exp_cycles_per_layer` and `res_estimation`
analyses). The one cost FINN's per-node estimates leave out, the DMAs that move each image in and out
(finn-plus inserts IODMAs at the board's native AXI port width), enters as a pseudo-node of the group
that holds the first (last) HW node: see streams.py.

Folding groups: parallelism attributes that FINN requires to move together form one group. An MVAU and
the ConvolutionInputGenerator feeding it share SIMD (finn-examples' convention; it also avoids the width
converters FINN would insert), or, for the RTL SWG, the SWG emits whole windows (`parallel_window=1`,
SIMD = IFMChannels) and the MVAU takes them at SIMD = MW; a depthwise SWG shares SIMD with the Pool/VVAU it
feeds (SetFolding's rule). Valid values follow FINN's constraints: PE divides MH (or the channel count),
SIMD divides MW (and the SWG's IFMChannels), the node's folded shapes must pass FINN's own asserts, and
an MVAU's PE x SIMD obeys the limits of what it will be built as (`mvau_refusal`): FINN's MVAU_hls keeps
its weight stream and its streams within HLS ap_int's 8191 bits; onebit's RTL MVAU (`--mvau rtl`, the
nodes synth_costs.RTLCosts covers) reads its weights from its own memory, which has no such limit.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from hw.finn.folding_check import base_op, divisors
from onebit.errors import OnebitError

from .streams import INPUT_DMA, OUTPUT_DMA, dma_cycles

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper

    from hw.boards import Board

RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")
DEFAULT_MARGIN = 0.8
# HLS ap_int<> is limited to 8191 bits (finn.util.basic.MAX_ALLOWED_AP_INT_W); an HLS MVAU's weight
# stream is PE*SIMD*weight_bits wide. Read from FINN at run time, this is only the fallback.
_AP_INT_MAX_W = 8191
# attributes a setting may carry, restored after evaluation
_FOLD_ATTRS = ("PE", "SIMD", "parallel_window")


class AutoFoldError(OnebitError):
    """The network cannot be folded into the requested budget (or the input graph is not HW layers)."""


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


@dataclass
class Group:
    """Nodes whose folding attributes are chosen together, and the valid settings for them."""

    name: str  # the node whose attribute drives the group (the compute node)
    nodes: list[str]
    kind: str  # "mvau", "pe", "simd" or "fixed"
    settings: list[dict[str, dict[str, int]]] = field(default_factory=list)  # node -> {attr: value}
    # per setting index: (cycles of the slowest node of the group, {node: cycles}, {node: {res: n}})
    evals: list[tuple[int, dict[str, int], dict[str, dict[str, float]]]] = field(default_factory=list)

    def total(self, index: int) -> dict[str, float]:
        """Resources of the whole group at setting `index`."""
        out = dict.fromkeys(RESOURCES, 0.0)
        for res in self.evals[index][2].values():
            for r in RESOURCES:
                out[r] += res[r]
        return out


def is_hw(node) -> bool:
    from finn.util.fpgadataflow import is_hls_node, is_rtl_node

    return is_hls_node(node) or is_rtl_node(node)


def inst(node):
    from qonnx.custom_op.registry import getCustomOp

    return getCustomOp(node)


def attr_or_none(instance, name: str):
    if name not in instance.get_nodeattr_types():
        return None
    return instance.get_nodeattr(name)


def allowed(instance, attr: str) -> set:
    spec = instance.get_nodeattr_types().get(attr)
    return set(spec[3]) if spec and len(spec) > 3 and spec[3] else set()


def parallelism(setting: dict[str, dict[str, int]]) -> int:
    """Product of the PE/SIMD values of a setting (parallel_window is a mode, not a factor)."""
    total = 1
    for attrs in setting.values():
        for a, v in attrs.items():
            if a in ("PE", "SIMD"):
                total *= int(v)
    return total


def _pe_limit(instance, base: str) -> int:
    attr = _PE_LIMIT_ATTR.get(base)
    value = attr_or_none(instance, attr) if attr else None
    if value is None:
        # SetFolding's fallback for ops without NumChannels: the last axis of the normal output.
        value = instance.get_normal_output_shape()[-1]
    return int(value)


def _simd_limit(instance, base: str) -> int:
    attr = _SIMD_LIMIT_ATTR.get(base, "NumChannels")
    value = attr_or_none(instance, attr)
    if value is None:
        value = instance.get_normal_input_shape()[-1]
    return int(value)


def ap_int_max_w() -> int:
    try:
        from finn.util.basic import MAX_ALLOWED_AP_INT_W

        return int(MAX_ALLOWED_AP_INT_W)
    except ImportError:  # older FINN: same limit, not exported
        return _AP_INT_MAX_W


def hls_mvau_refusal(instance, pe: int, simd: int) -> str | None:
    """Why FINN's MVAU_hls cannot be built at PE x SIMD (None: it can): FINN's MVAU_hls.get_ap_int_max_w,
    every ap_int of the HLS top (the weight stream PE*SIMD*weight bits of internal_decoupled weights, the
    input stream SIMD*input bits, the output stream PE*output bits) within MAX_ALLOWED_AP_INT_W."""
    return _over_ap_int({"weight stream": pe * simd * instance.get_input_datatype(1).bitwidth(),
                         **_stream_widths(instance, pe, simd)}, "HLS ap_int's {limit}")


def _stream_widths(instance, pe: int, simd: int) -> dict[str, int]:
    return {"input stream": simd * instance.get_input_datatype(0).bitwidth(),
            "output stream": pe * instance.get_output_datatype().bitwidth()}


def _over_ap_int(widths: dict[str, int], what: str) -> str | None:
    """'<name> <bits> bits > <what>' for the widths over FINN's ap_int limit, None if none is."""
    limit = ap_int_max_w()
    over = [f"{k} {w} bits" for k, w in widths.items() if w > limit]
    return ", ".join(over) + " > " + what.format(limit=limit) if over else None


def onebit_rtl_mvau_refusal(instance, pe: int, simd: int) -> str | None:
    """Why onebit's RTL MVAU (hw/rtl/sv/onebit_mvau.sv) cannot be built at PE x SIMD (None: it can).

    Its elaboration checks on the folding are PE | MH and SIMD | MW (and TREE_STAGES <= clog2(SIMD) + 1,
    which hw/rtl/timing.tree_stages always keeps); everything else it checks (XNOR on 1-bit data, ACC_BITS
    in 2..62, thresholds within OBITS) does not depend on PE or SIMD. The weights are a plain Verilog
    memory of WMEM = (MH/PE)(MW/SIMD) words of PE*SIMD bits (onebit_rom, no ap_int, no weight stream);
    synthesis splits a wide word over as many block RAMs or LUTs as it needs, which the cost model charges
    (hw/rtl/costmodel.py: block RAM by aspect ratio, LUT_ROM_DEPTH at the clock), and the timing check of
    the search rejects a SIMD whose dot product misses the clock. So PE x SIMD has no bit limit of its own.
    The node's two AXI streams (SIMD*input bits in, PE*output bits out) meet FINN's nodes (the SWG, FIFOs,
    width converters: FINN's StreamingDataWidthConverter_hls, for widths that are not multiples, holds a
    beat in one ap_int), so they keep ap_int's limit."""
    mw, mh = int(instance.get_nodeattr("MW")), int(instance.get_nodeattr("MH"))
    if mw % simd or mh % pe:
        return f"PE ({pe}) must divide MH ({mh}) and SIMD ({simd}) MW ({mw})"
    return _over_ap_int(_stream_widths(instance, pe, simd), "{limit} (FINN's stream nodes' ap_int)")


def mvau_refusal(node, instance, pe: int, simd: int, costs=None) -> str | None:
    """Why an MVAU node cannot be folded at PE x SIMD (None: it can), by what it will be built as: onebit's
    RTL MVAU where `costs` (synth_costs.RTLCosts, `--mvau rtl`) covers the node, FINN's MVAU_hls otherwise."""
    if costs is not None and costs.covers(node.name):
        return onebit_rtl_mvau_refusal(instance, pe, simd)
    if node.op_type.endswith("_hls"):
        return hls_mvau_refusal(instance, pe, simd)
    return None


def _mvau_settings(node, instance, swg_node, swg, costs=None) -> list[dict[str, dict[str, int]]]:
    mw, mh = int(instance.get_nodeattr("MW")), int(instance.get_nodeattr("MH"))
    swg_ch = int(swg.get_nodeattr("IFMChannels")) if swg else None
    rtl_swg = swg is not None and swg_node.op_type == "ConvolutionInputGenerator_rtl"
    pes = [pe for pe in divisors(mh)]
    settings = []
    for simd in divisors(mw):
        if swg_ch is not None and swg_ch % simd:
            continue  # the SWG delivers SIMD channels of one pixel: SIMD must divide them
        for pe in pes:
            if mvau_refusal(node, instance, pe, simd, costs):
                continue
            setting = {node.name: {"PE": pe, "SIMD": simd}}
            if swg is not None:
                setting[swg_node.name] = {"SIMD": simd, **({"parallel_window": 0} if rtl_swg else {})}
            settings.append(setting)
    if rtl_swg and swg_ch is not None and mw != swg_ch:
        # FINN's RTL SWG in parallel_window mode emits a whole kh x kw window per cycle (SIMD must equal
        # IFMChannels); the MVAU then takes the window at SIMD = MW, with no width converter between.
        for pe in pes:
            if mvau_refusal(node, instance, pe, mw, costs):
                continue
            settings.append({node.name: {"PE": pe, "SIMD": mw},
                             swg_node.name: {"SIMD": swg_ch, "parallel_window": 1}})
    return settings


def build_groups(model: "ModelWrapper", costs=None) -> list[Group]:
    """The folding groups of a HW graph and their valid settings; `costs` (synth_costs.py) says which MVAUs
    become onebit's RTL, whose limits differ from FINN's MVAU_hls (mvau_refusal)."""
    nodes = [n for n in model.graph.node if is_hw(n)]
    by_name = {n.name: n for n in nodes}
    tied: dict[str, str] = {}  # SWG name -> consumer compute node name
    for node in nodes:
        base = base_op(node.op_type)
        if base in ("MVAU", "Pool", "VVAU"):
            producer = model.find_producer(node.input[0])
            if producer is not None and base_op(producer.op_type) == "ConvolutionInputGenerator":
                depthwise = int(attr_or_none(inst(producer), "depthwise") or 0)
                # MVAUs pair with dense SWGs, Pool/VVAU with depthwise ones (SetFolding's rule)
                if (base == "MVAU") == (depthwise == 0):
                    tied[producer.name] = node.name

    groups: list[Group] = []
    for node in nodes:
        if node.name in tied:
            continue
        instance = inst(node)
        base = base_op(node.op_type)
        swg_name = next((s for s, c in tied.items() if c == node.name), None)
        swg = inst(by_name[swg_name]) if swg_name else None
        members = [node.name] + ([swg_name] if swg_name else [])
        types = instance.get_nodeattr_types()
        if base == "MVAU":
            group = Group(node.name, members, "mvau",
                          settings=_mvau_settings(node, instance, by_name.get(swg_name), swg, costs))
        elif "PE" in types:
            group = Group(node.name, members, "pe")
            swg_ch = int(swg.get_nodeattr("IFMChannels")) if swg else None
            for pe in divisors(_pe_limit(instance, base)):
                if swg_ch is not None and swg_ch % pe:
                    continue
                setting = {node.name: {"PE": pe}}
                if swg_name:
                    setting[swg_name] = {"SIMD": pe}
                group.settings.append(setting)
        elif "SIMD" in types:
            group = Group(node.name, members, "simd")
            for simd in divisors(_simd_limit(instance, base)):
                group.settings.append({node.name: {"SIMD": simd}})
        else:
            group = Group(node.name, members, "fixed", settings=[{}])
        groups.append(group)
    return groups


_GROUP_CACHE: dict[tuple[str, str, int, str], list[Group]] = {}


def evaluated_groups(model: "ModelWrapper", fpga_part: str, port_bits: int | None = None,
                     costs=None) -> list[Group]:
    """Groups with FINN's estimates for every setting, memoised per (graph, part, DMA port width).

    Asking FINN for ~1000 estimates is most of auto-fold's time; a sweep over margins or boards of the
    same part (the benchmark, the monotonicity tests) reuses them. The key is the whole serialized
    graph, so any change to the model (datatypes, ram_style, mem_mode) is a new entry. `port_bits`
    None leaves the DMAs out (cycles of the layers alone). `costs` (synth_costs.py) gives each node's
    resources: FINN's estimates when None.
    """
    key = (hashlib.sha256(model.model.SerializeToString()).hexdigest(), fpga_part, int(port_bits or 0),
           getattr(costs, "key", "finn"))
    if key not in _GROUP_CACHE:
        groups = build_groups(model, costs)
        _evaluate_groups(model, groups, fpga_part, port_bits, costs)
        if len(_GROUP_CACHE) >= 8:
            _GROUP_CACHE.pop(next(iter(_GROUP_CACHE)))
        _GROUP_CACHE[key] = groups
    return _GROUP_CACHE[key]


def _evaluate_groups(model: "ModelWrapper", groups: list[Group], fpga_part: str, port_bits: int | None,
                     costs=None) -> None:
    """Ask FINN for cycles and resources of every valid setting of every group (cached on the group).

    A setting FINN's own shape checks reject (e.g. a Reshape whose PE does not divide both axes) is
    dropped here, so the search never proposes a folding that step_apply_folding_config would refuse.
    The group holding the first (last) HW node also carries the input (output) DMA's cycles, which
    depend on that node's stream width.
    """
    nodes = {n.name: n for n in model.graph.node}
    hw_nodes = [n for n in model.graph.node if is_hw(n)]
    first, last = hw_nodes[0].name, hw_nodes[-1].name
    for group in groups:
        insts = {name: inst(nodes[name]) for name in group.nodes}
        original = {name: {a: insts[name].get_nodeattr(a) for a in _FOLD_ATTRS
                           if a in insts[name].get_nodeattr_types()} for name in group.nodes}
        valid_settings, evals = [], []
        for setting in group.settings:
            try:
                for name, attrs in setting.items():
                    for attr, value in attrs.items():
                        insts[name].set_nodeattr(attr, int(value))
                cycles, res = {}, {}
                for name, instance in insts.items():
                    instance.get_folded_input_shape(0)
                    instance.get_folded_output_shape(0)
                    cycles[name] = int(instance.get_exp_cycles())
                    if costs is not None:
                        res[name] = costs.estimate(nodes[name], instance)
                    else:
                        estimate = instance.node_res_estimation(fpga_part)
                        res[name] = {r: float(estimate.get(r, 0) or 0) for r in RESOURCES}
                if port_bits and first in insts:
                    cycles[INPUT_DMA] = dma_cycles(insts[first], "in", port_bits)["cycles"]
                if port_bits and last in insts:
                    cycles[OUTPUT_DMA] = dma_cycles(insts[last], "out", port_bits)["cycles"]
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
