"""Node costs for auto-fold: FINN's estimates, or (`--mvau rtl`) onebit's synthesis-calibrated MVAU model.

`FinnCosts` is what auto-fold always used: every node's `node_res_estimation`. `RTLCosts` is for a build
whose MVAUs become onebit's RTL (hw/finn/rtl_mvau.py): an MVAU_hls node onebit's RTL takes is costed by
hw/rtl/costmodel.py (fitted to yosys synth_xilinx of onebit_mvau), every other node keeps FINN's estimate,
and each node says which (`source`): FINN's RTL nodes yosys cannot read (ConvolutionInputGenerator_rtl,
FMPadding_rtl), the max pools, label select, the width converters.

RTLCosts also checks timing: `timing_misses` runs the estimated-Fmax model of hw/rtl/timing.py (yosys sta of
one PE of the node, as the build's report does) on the onebit MVAUs of a folding, and the search rejects a
setting whose node misses the clock (search.py).
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from .costs import RESOURCES

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper

FINN_SOURCE = "FINN estimate"
SYNTH_SOURCE = "yosys-calibrated model"


class FinnCosts:
    """FINN's own per-node estimates (the default)."""

    key = "finn"
    description = "FINN's analytical estimates (node_res_estimation) for every node"

    def __init__(self, fpga_part: str) -> None:
        self.fpga_part = fpga_part

    def covers(self, name: str) -> bool:
        return False

    def source(self, name: str) -> str:
        return FINN_SOURCE

    def estimate(self, node, instance) -> dict[str, float]:
        estimate = instance.node_res_estimation(self.fpga_part)
        return {r: float(estimate.get(r, 0) or 0) for r in RESOURCES}

    def allows_uram(self, name: str) -> bool:
        return True


class RTLCosts(FinnCosts):
    """onebit MVAUs from the calibrated model, the rest from FINN (see the module docstring)."""

    def __init__(self, model: "ModelWrapper", fpga_part: str, clock_ns: float) -> None:
        from hw.rtl.costmodel import CostModel

        super().__init__(fpga_part)
        self.clock_ns = float(clock_ns)
        self.cost = CostModel.load()
        self.fixed: dict[str, dict[str, Any]] = {}   # node -> folding-independent shape fields
        self.kept: dict[str, str] = {}                # MVAU nodes that stay HLS: why
        self.timings: dict[str, float] = {}           # node -> estimated Fmax (MHz) of the last check
        for node in model.graph.node:
            if node.op_type != "MVAU_hls":
                continue
            fields = _fixed_fields(model, node, self.clock_ns)
            if isinstance(fields, str):
                self.kept[node.name] = fields
            else:
                self.fixed[node.name] = fields
        digest = hashlib.sha256(repr((sorted(self.cost.data["lut_coefficients"].items()),
                                      self.cost.data["yosys"], len(self.cost.data["dots"]))).encode()).hexdigest()[:12]
        self.key = f"rtl-{digest}-{self.clock_ns}"
        self.description = (f"onebit's RTL MVAUs: {self.cost.describe()}; every other node (and MVAUs onebit's RTL "
                            "does not take): FINN's estimate")

    def covers(self, name: str) -> bool:
        return name in self.fixed

    def source(self, name: str) -> str:
        return SYNTH_SOURCE if name in self.fixed else FINN_SOURCE

    def allows_uram(self, name: str) -> bool:
        return name not in self.fixed   # onebit_rom has no URAM (hw/rtl/layout.uram_refusal)

    def shape(self, name: str, instance):
        from hw.rtl.costmodel import NodeShape

        f = self.fixed[name]
        style = instance.get_nodeattr("ram_style")
        return NodeShape(f["mw"], f["mh"], int(instance.get_nodeattr("PE")), int(instance.get_nodeattr("SIMD")),
                         f["mode"], f["ibits"], f["acc_bits"], f["nthr"], f["obits"],
                         style if style in ("block", "distributed") else "auto",
                         f["ram_style_thresholds"], self.clock_ns)

    def estimate(self, node, instance) -> dict[str, float]:
        if node.name not in self.fixed:
            return super().estimate(node, instance)
        predicted = self.cost.predict(self.shape(node.name, instance))
        return {r: float(predicted.get(r, 0.0)) for r in RESOURCES}

    def timing_misses(self, model: "ModelWrapper", clock_mhz: float) -> dict[str, str]:
        """{node: why} for the onebit MVAUs of the folded `model` whose estimated Fmax (hw/rtl/timing.py) is
        below clock_mhz or could not be estimated (an error is a miss, never a pass)."""
        from onebit.errors import OnebitError

        misses: dict[str, str] = {}
        for node in model.graph.node:
            if node.name not in self.fixed:
                continue
            try:
                rtl = rtl_node(model, node, self.clock_ns)
                timing = rtl.timing()
            except OnebitError as error:
                misses[node.name] = f"no Fmax estimate: {error}"
                continue
            if timing.fmax_mhz < clock_mhz:
                misses[node.name] = (f"estimated Fmax {timing.fmax_mhz:.0f} MHz < {clock_mhz:.0f} MHz "
                                     f"({timing.start} -> {timing.end})")
            self.timings[node.name] = round(timing.fmax_mhz, 1)
        return misses


def rtl_node(model, node, clock_ns: float):
    """The RTLMvau the `--mvau rtl` build will make of this MVAU_hls node at its current folding."""
    from dataclasses import replace

    from qonnx.custom_op.registry import getCustomOp

    from hw.rtl.nodes import RTLMvau
    from onebit.errors import OnebitError

    cfg = replace(_config_with(getCustomOp(node), node, model), clock_ns=clock_ns)
    weights = model.get_initializer(node.input[1])
    if weights is None:
        raise OnebitError(f"{node.name}: weights are not an initializer")
    thresholds = None if cfg.no_activation else model.get_initializer(node.input[2])
    return RTLMvau(cfg, weights, thresholds)


def _config_with(inst, node, model):
    from hw.finn.rtl_mvau import bipolar_weight_datatype
    from hw.rtl.layout import MVAUConfig

    wdt = bipolar_weight_datatype(model, node, inst)
    old = inst.get_nodeattr("weightDataType")
    inst.set_nodeattr("weightDataType", wdt)
    try:
        return MVAUConfig.from_finn(inst, node.name)
    finally:
        inst.set_nodeattr("weightDataType", old)


def _fixed_fields(model, node, clock_ns: float) -> dict[str, Any] | str:
    """The folding-independent part of a node's shape (datatypes, accumulator width, thresholds), or why
    onebit's RTL does not take the node."""
    from qonnx.custom_op.registry import getCustomOp

    from hw.driver.packing import datatype_info
    from hw.rtl.layout import _bits_for, accumulator_range
    from onebit.errors import OnebitError

    inst = getCustomOp(node)
    try:
        if inst.get_nodeattr("mem_mode") in ("external", "dynamic", "external_mem"):
            return f"mem_mode {inst.get_nodeattr('mem_mode')}"
        cfg = _config_with(inst, node, model)
        weights = model.get_initializer(node.input[1])
        if weights is None:
            return "weights are not an initializer"
        lo, hi = accumulator_range(cfg, weights)
        if cfg.no_activation:
            acc_bits, nthr = _bits_for(lo, hi)[0], 0
        else:
            thresholds = model.get_initializer(node.input[2])
            if thresholds is None:
                return "thresholds are not an initializer"
            acc_bits, nthr = _bits_for(lo, hi + 1)[0], int(thresholds.shape[1])
    except OnebitError as error:
        return str(error)
    ibits = 1 if cfg.xnor else datatype_info(cfg.idt)[0]
    style = cfg.ram_style_thresholds
    return {"mw": cfg.mw, "mh": cfg.mh, "mode": "xnor" if cfg.xnor else "uint8", "ibits": ibits,
            "acc_bits": int(acc_bits), "nthr": nthr, "obits": datatype_info(cfg.odt)[0],
            "ram_style_thresholds": style if style in ("block", "distributed") else "auto"}


def make_costs(model: "ModelWrapper", fpga_part: str, clock_ns: float, mvau: str = "hls") -> FinnCosts:
    return RTLCosts(model, fpga_part, clock_ns) if mvau == "rtl" else FinnCosts(fpga_part)
