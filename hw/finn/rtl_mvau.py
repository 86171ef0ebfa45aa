"""`--mvau rtl`: the builder step that puts onebit's own RTL nodes (hw/rtl) in place of FINN's HLS
MVAU and max-pool nodes, after folding, so every later FINN step (estimates, code generation, FIFO
insertion, stitched IP, Zynq project on a Vivado host) takes them as it takes FINN's own RTL nodes.

Replaced: MVAU_hls with +-1 weights (XNOR mode, BIPOLAR x BIPOLAR, integer x bipolar, noActivation) by
OnebitMVAU_rtl; Pool_hls with Function = MaxPool by OnebitPool_rtl. Every attribute the new op knows
is copied (PE, SIMD, datatypes, ram_style, FIFO depths), so the folding chosen before (folding file,
target FPS or auto-fold) stays as it was. A node onebit's RTL cannot implement stays on FINN's HLS node
and is listed with the reason in the model's metadata (`onebit_rtl_nodes`) and the build log.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from hw.rtl.custom_op import FINN_RTL_DOMAIN, OnebitMVAU_rtl, OnebitPool_rtl, register
from onebit.errors import OnebitError

MVAU_CHOICES = ("hls", "rtl")
METADATA_KEY = "onebit_rtl_nodes"
STEP_NAME = "step_onebit_rtl_nodes"

_REPLACEMENTS = {"MVAU_hls": OnebitMVAU_rtl, "Pool_hls": OnebitPool_rtl}


def check_mvau_choice(value: str) -> str:
    if value not in MVAU_CHOICES:
        raise OnebitError(f"--mvau must be one of {', '.join(MVAU_CHOICES)}, got '{value}'")
    return value


def bipolar_weight_datatype(model, node, inst) -> str:
    """The weight datatype onebit's RTL sees: FINN's MinimizeWeightBitWidth turns +-1 weights of an
    integer-input MVAU into INT2; they are still +-1, which is what onebit's add/subtract datapath takes,
    so they are BIPOLAR again (the node's own datatype otherwise)."""
    import numpy as np

    wdt = inst.get_nodeattr("weightDataType")
    if inst.get_nodeattr("binaryXnorMode") or wdt == "BIPOLAR":
        return wdt
    weights = model.get_initializer(node.input[1])
    return "BIPOLAR" if weights is not None and np.isin(weights, (-1, 1)).all() else wdt


def _bipolar_weights(model, node, inst) -> None:
    """Set the node's weight datatype to what onebit's RTL sees (bipolar_weight_datatype)."""
    from qonnx.core.datatype import DataType

    wdt = bipolar_weight_datatype(model, node, inst)
    if wdt != inst.get_nodeattr("weightDataType"):
        inst.set_nodeattr("weightDataType", wdt)
        model.set_tensor_datatype(node.input[1], DataType[wdt])


def _unsupported(model, node, inst) -> str | None:
    """Why onebit's RTL cannot take this node (None: it can)."""
    from hw.rtl.layout import MVAUConfig
    from hw.rtl.nodes import MaxPoolConfig

    try:
        if node.op_type == "MVAU_hls":
            _bipolar_weights(model, node, inst)
            MVAUConfig.from_finn(inst, node.name)
            if inst.get_nodeattr("mem_mode") in ("external", "dynamic", "external_mem"):
                return f"mem_mode {inst.get_nodeattr('mem_mode')} streams weights at run time"
        else:
            MaxPoolConfig.from_finn(inst, node.name)
    except OnebitError as error:
        return str(error)
    return None


def replace_with_rtl(model, clock_ns: float | None = None) -> tuple[Any, dict[str, Any]]:
    """The model with every supported MVAU_hls / Pool_hls node replaced in place (same name, inputs,
    outputs, folding); returns (model, {"replaced": [...], "kept": {name: reason}}). clock_ns: the
    synthesis clock period, which decides how deep each MVAU is pipelined (attribute clk_ns)."""
    from onnx import helper
    from qonnx.custom_op.registry import getCustomOp

    register()
    replaced: list[str] = []
    kept: dict[str, str] = {}
    graph = model.graph
    # a folding that asks for URAM (auto-fold on ZCU104/KV260, a folding file) would overflow in block RAM:
    # refused before anything is built rather than silently downgraded or left on HLS
    uram = [n.name for n in graph.node if n.op_type == "MVAU_hls" and
            "ultra" in (getCustomOp(n).get_nodeattr("ram_style"),)]
    if uram:
        from hw.rtl.layout import uram_refusal

        raise OnebitError("--mvau rtl: " + uram_refusal(uram))
    for index, node in enumerate(list(graph.node)):
        cls = _REPLACEMENTS.get(node.op_type)
        if cls is None:
            continue
        inst = getCustomOp(node)
        reason = _unsupported(model, node, inst)
        if reason:
            kept[node.name] = reason
            continue
        new = helper.make_node(cls.__name__, list(node.input), list(node.output), domain=FINN_RTL_DOMAIN,
                               name=node.name)
        known = cls(new).get_nodeattr_types()
        for attr in node.attribute:
            if attr.name in known:
                new.attribute.append(attr)
        new_inst = getCustomOp(new)
        if node.op_type == "MVAU_hls":
            new_inst.set_nodeattr("mem_mode", "internal_embedded")  # weights in the node's own ROM
            if clock_ns:
                new_inst.set_nodeattr("clk_ns", float(clock_ns))
        graph.node.remove(node)
        graph.node.insert(index, new)
        replaced.append(node.name)
    if replaced:
        # FINN names nodes <op_type>_<k> (GiveUniqueNodeNames, which step_hw_codegen applies again): name
        # them so now, so the estimate reports written next carry the names of the final graph
        from qonnx.transformation.general import GiveUniqueNodeNames

        before = [n.name for n in model.graph.node]
        model = model.transform(GiveUniqueNodeNames())
        renamed = dict(zip(before, [n.name for n in model.graph.node]))
        replaced = [f"{renamed[name]} (was {name})" for name in replaced]
    summary = {"replaced": replaced, "kept": kept}
    model.set_metadata_prop(METADATA_KEY, json.dumps(summary))
    return model, summary


def step_onebit_rtl_nodes(model, cfg):
    """FINN builder step (hw/finn/build.py puts it after step_minimize_bit_width with --mvau rtl)."""
    model, summary = replace_with_rtl(model, getattr(cfg, "synth_clk_period_ns", None))
    log = logging.getLogger("onebit")
    log.info("onebit RTL nodes: %d replaced (%s)", len(summary["replaced"]), ", ".join(summary["replaced"]))
    for name, reason in summary["kept"].items():
        log.warning("%s stays on FINN's HLS node: %s", name, reason)
    return model


def rtl_summary(model) -> dict[str, Any] | None:
    text = model.get_metadata_prop(METADATA_KEY)
    return json.loads(text) if text else None
