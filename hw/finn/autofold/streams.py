"""The streams FINN's per-node estimates leave out: the input/output DMAs and the width converters.

finn-plus' Zynq flow (`ZynqBuild`) wraps the dataflow graph with `InsertIODMA(pynq_native_port_width[board])`
and then `InsertDWC()`. FINN's `get_exp_cycles()` of an IODMA or a StreamingDataWidthConverter is 0 (the
HWCustomOp default), so its network estimate calls a folding "3.5 M images/s" that the board's AXI port
cannot feed. Here both get cycles per image:

* IODMA: FINN's own sizing (InsertIODMA.apply): the stream side is the first (last) node's padded stream
  width, the memory side `gcd(transfer bits, port bits)`. Per image the DMA needs `transfer bits /
  interface width` AXI beats and emits one stream word per cycle, so it takes max(beats, stream words)
  cycles; the beats are the I/O bound no folding can beat. AXI burst set-up and DDR latency are not
  modelled (finn-examples' measured TFC FPS is 82 % of this bound). With bit-packed input
  (hw/finn/binary_input.py) the first node is the MVAU reading BINARY bits, padded to whole port words per
  image so that the interface stays the port's full width (784 bits would give gcd(784, 64) = 16 bits).
* Width converters: where FINN's InsertDWC puts one (producer and consumer folded widths differ); it
  reads and writes one word per cycle, so it takes max(input words, output words) cycles. Its LUT/BRAM
  come from FINN's estimate of the inserted node.
"""
from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from qonnx.core.modelwrapper import ModelWrapper

INPUT_DMA = "input DMA"
OUTPUT_DMA = "output DMA"
DMA_OP = "IODMA_hls"
DWC_OP = "StreamingDataWidthConverter"


def dma_cycles(node_inst, direction: str, port_bits: int) -> dict[str, int]:
    """Cycles per image of the IODMA FINN would put in front of (direction "in") or behind ("out") a node.

    `node_inst` is the first (last) HW node's custom op with its current folding.
    """
    if direction == "in":
        width = int(node_inst.get_instream_width_padded())
        folded = node_inst.get_folded_input_shape()
    else:
        width = int(node_inst.get_outstream_width_padded())
        folded = node_inst.get_folded_output_shape()
    words = int(np.prod(folded[:-1]))
    transfer_bits = width * words
    intf = math.gcd(transfer_bits, int(port_bits))  # InsertIODMA's interface width
    beats = transfer_bits // intf
    return {"stream_width": width, "words": words, "transfer_bits": transfer_bits, "intf_width": intf,
            "beats": beats, "cycles": max(beats, words)}


def _hw_ends(model: "ModelWrapper"):
    from .costs import inst, is_hw

    hw = [n for n in model.graph.node if is_hw(n)]
    return inst(hw[0]), inst(hw[-1])


def dma_rows(model: "ModelWrapper", port_bits: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(input DMA, output DMA) of the model as folded: cycles and the I/O bound (beats) of each."""
    first, last = _hw_ends(model)
    rows = []
    for name, node, direction in ((INPUT_DMA, first, "in"), (OUTPUT_DMA, last, "out")):
        info = dma_cycles(node, direction, port_bits)
        rows.append({"name": name, "op_type": DMA_OP, "port_bits": int(port_bits), **info})
    return rows[0], rows[1]


def io_bound_cycles(model: "ModelWrapper", port_bits: int) -> int:
    """The fewest cycles per image any folding can reach: the AXI beats of the busier DMA direction."""
    dma_in, dma_out = dma_rows(model, port_bits)
    return max(dma_in["beats"], dma_out["beats"])


def width_converters(model: "ModelWrapper", fpga_part: str) -> list[dict[str, Any]]:
    """The width converters FINN's InsertDWC adds to the model as folded, with cycles and FINN's estimates.

    Each row names the producer it follows ("after"). Runs FINN's transformation on a copy.
    """
    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from qonnx.custom_op.registry import getCustomOp

    before = {n.name for n in model.graph.node}
    work = copy.deepcopy(model)
    work = work.transform(InsertDWC())
    rows = []
    for node in work.graph.node:
        if not node.op_type.startswith(DWC_OP) or node.name in before:
            continue
        dwc = getCustomOp(node)
        producer = work.find_producer(node.input[0])
        in_words = int(np.prod(dwc.get_folded_input_shape()[:-1]))
        out_words = int(np.prod(dwc.get_folded_output_shape()[:-1]))
        estimate = dwc.node_res_estimation(fpga_part)
        rows.append({"name": f"DWC after {producer.name if producer else 'input'}", "op_type": DWC_OP,
                     "after": producer.name if producer else None,
                     "in_width": int(dwc.get_nodeattr("inWidth")), "out_width": int(dwc.get_nodeattr("outWidth")),
                     "cycles": max(in_words, out_words),
                     "LUT": float(estimate.get("LUT", 0) or 0), "BRAM_18K": float(estimate.get("BRAM_18K", 0) or 0),
                     "URAM": float(estimate.get("URAM", 0) or 0), "DSP": float(estimate.get("DSP", 0) or 0)})
    return rows


def with_stream_rows(model: "ModelWrapper", port_bits: int, fpga_part: str,
                     rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A build report's layer rows ({"layer", "op_type", "PE", "SIMD", "cycles", "LUT", "BRAM_18K", "DSP"})
    with the input DMA first, FINN's width converters after their producers and the output DMA last.

    Nothing is added for streams the model already has (a full flow's IODMA/DWC nodes are layers then).
    """
    if any(r["op_type"].startswith(DMA_OP) for r in rows):
        return rows
    dma_in, dma_out = dma_rows(model, port_bits)

    def row(info: dict[str, Any]) -> dict[str, Any]:
        return {"layer": info["name"], "op_type": info["op_type"], "PE": None, "SIMD": None,
                "cycles": int(info["cycles"]), "LUT": float(info.get("LUT", 0.0)),
                "BRAM_18K": float(info.get("BRAM_18K", 0.0)), "DSP": float(info.get("DSP", 0.0)),
                "stream": True}

    dwcs = {d["after"]: d for d in width_converters(model, fpga_part)}
    out = [row(dma_in)] + ([row(dwcs[None])] if None in dwcs else [])
    for r in rows:
        out.append(r)
        if r["layer"] in dwcs:
            out.append(row(dwcs[r["layer"]]))
    return out + [row(dma_out)]
