"""FIFO depths of the whole-accelerator simulation by simulation, as FINN's step_set_fifo_depths sizes them on
a Vivado host (there by RTL simulation of the stitched IP, here in Verilator on hw/rtl/stitch.py's build).

FINN's rule depths (stitch.py: producer's outFIFODepths, consumer's inFIFODepths, one MVAU input vector) let
a CNV run 1.14-1.19x slower than its bottleneck node: sliding-window generators, pools and MVAUs produce and
consume in bursts (a window, a row, an MVAU input vector read in its first output fold) that FIFOs of a
few beats cannot absorb (bench/results/rtl_accelerator.md, node by node). Sized here, the same designs run
at FINN's bottleneck estimate.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hw.rtl.stitch import AcceleratorDesign, _drive, _write_init_files
from hw.rtl.verilator import content_key
from onebit.atomic import write_text_atomic
from onebit.errors import OnebitError

SIZING_IMAGES = 8   # images streamed by the FIFO sizing run (the first fills the pipeline)


def size_fifos(sim, deep: AcceleratorDesign, rule: AcceleratorDesign, folder: str | Path,
               images: int = SIZING_IMAGES) -> dict[str, Any]:
    """FIFO depths by simulation (FINN's step_set_fifo_depths, here in Verilator), on the build `sim` of
    `deep` (every FIFO one image of its stream deeper than the rule's depth, `rule`): the input paced at
    FINN's bottleneck rate (one image per bottleneck cycles: the steady state of a chain whose input
    DMA runs ahead), `images` all-zero images (the nodes' timing does not depend on the data); each
    FIFO's depth = the most beats it held, at least the rule's. Cached in folder/fifo_sizing.json by
    the design's content. A FIFO that filled up to its sizing depth is listed in "capped" (the chain
    ran slower than the pace there: a node slower than FINN's estimate)."""
    folder = Path(folder)
    key = content_key("fifo-sizing-1", rule.top_verilog(), deep.top_verilog(), images)
    cache = folder / "fifo_sizing.json"
    if cache.is_file():
        data = json.loads(cache.read_text())
        if data.get("key") == key:
            return data
    first = deep.nodes[0]
    run = folder / "fifo_sizing"
    _write_init_files(deep, run)
    packed = np.zeros((images, first.in_beats, deep.in_width // 8), np.uint8)
    result = _drive(sim, deep, packed, run, deep.controls(pace=(first.in_beats, deep.bottleneck_cycles)))
    fill = {}
    for line in result.stream.probes:
        parts = line.split()
        if len(parts) == 4 and parts[1] == "FILL":
            fill[deep.stages[int(parts[2])].name] = int(parts[3])
    rule_depths = {s.name: s.parameters["DEPTH"] for s in rule.stages if s.kind == "fifo"}
    deep_depths = {s.name: s.parameters["DEPTH"] for s in deep.stages if s.kind == "fifo"}
    if set(fill) != set(rule_depths):
        raise OnebitError(f"FIFO sizing: fill levels for {sorted(fill)} but the design has {sorted(rule_depths)}")
    data = {"key": key, "images": images, "pace_cycles_per_image": deep.bottleneck_cycles,
            "depths": {name: max(rule_depths[name], fill[name]) for name in rule_depths}, "fill": fill,
            "rule_depths": rule_depths, "capped": [name for name in fill if fill[name] >= deep_depths[name]],
            "cycles_per_image_paced": result.cycles_per_image}
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cache, json.dumps(data, indent=1))
    return data
