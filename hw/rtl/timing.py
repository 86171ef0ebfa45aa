"""Estimated Fmax of onebit's RTL nodes without Vivado: yosys' Xilinx cell delays plus a stated routing
allowance, and the delay model that chooses how deep onebit_mvau's dot products are pipelined.

How a node is timed (`estimate_timing`):
1. yosys `synth_xilinx -family xc7 -flatten` of the node (its parameters and init files, as for the LUT
   counts in hw/rtl/yosys.py), then `read_verilog -lib -specify +/xilinx/cells_sim.v` and `sta`: the
   longest register-to-register path in the cell delays yosys ships for 7-series (prjxray's Artix-7
   speed grade -1 SDF: LUT6 0.13-0.64 ns by input pin, CARRY4, MUXF7/8, LUTRAM, block RAM clock-to-out
   2.45 ns / 0.88 ns with its output register, flip-flop clock-to-out 0.30 ns).
2. plus ROUTE_NS per net on that path that goes through general routing: the net into every cell
   entered by a general pin (a LUT input, a carry chain's S/DI, a LUTRAM address, the endpoint's D/CE/R),
   not the dedicated ones (CARRY4 CI, MUXF7/8 I0/I1). ROUTE_NS = 0.5 ns is a typical 7-series net delay
   (Vivado's post-route reports of small, unconstrained-placement designs show 0.3-0.8 ns per net); it
   stands in for placement and routing, which yosys does not do.
   Shift registers: the timing run maps no SRLs (`-nosrl`). onebit's RTL asks Vivado (SRL_STYLE) to keep
   the fold-position chain in flip-flops and the last register of every other pipeline chain a flip-flop
   (srl_reg); yosys ignores the attribute and would end such a chain in an SRL (clock-to-out ~1.5 ns), a
   path Vivado does not build. The LUT/FF counts (hw/rtl/yosys.py) keep yosys' SRLs.
3. A path from a stream input port starts at 0 ns in yosys; the producer drives every onebit stream from
   a register (skid buffers, FIFOs), so such a path gets that register's clock-to-out and one net.
Fmax = 1000 / (cell delays + routing allowance) MHz.

What the model ignores (say so wherever an Fmax is shown): real placement and routing (congestion, long
nets across the die, SLR crossings), fanout (the pipeline's `advance` enable drives every register of a
node; Vivado replicates or routes it on global lines), clock skew and jitter, setup/hold beyond the
library's (0 ns setup on D), block RAM cascade and address setup, the speed grade of the user's part,
and UltraScale+ entirely: yosys has no UltraScale+ delays (CARRY8 has none), so every board is timed as
7-series -1, which is slower than a Zynq UltraScale+ part (an UltraScale+ estimate is conservative).

An MVAU is timed with one PE (`timing_node`): its PEs are copies of one datapath that share only the input
slice and the enable, the model has no fanout, and the flat synthesis of many PEs is what does not finish
for wide layers (hw/rtl/yosys.py). The weight memory keeps the style the full node gets.

$ONEBIT_YOSYS_TIMEOUT bounds each run like the LUT counts: a node over it gets an error, never an Fmax.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hw.rtl.verilator import cache_root, content_key, sv_literal, sv_sources, tool_version
from hw.rtl.yosys import run_yosys
from onebit.atomic import write_text_atomic
from onebit.errors import OnebitError

ROUTE_NS = 0.5            # routing allowance per general-routing net (see the module docstring)
CLOCK_TO_OUT_NS = 0.303   # FDRE C->Q in yosys' cells_sim.v: the producer side of a path from an input port
MARGIN = 1.25             # onebit_mvau is pipelined for the board clock times this, under this model
CELLS_LIBRARY = "+/xilinx/cells_sim.v"
# pins fed by a dedicated in-slice connection, not general routing
DEDICATED = {("CARRY4", "CI"), ("CARRY8", "CI"), ("MUXF7", "I0"), ("MUXF7", "I1"), ("MUXF8", "I0"), ("MUXF8", "I1")}

# Delay model of one adder level of a dot product, for the stage count: a LUT level (full adder,
# lane mux) into a carry chain and its nets under the allowance above. Calibrated on yosys sta of
# onebit_mvau (PE 1): UINT8 x bipolar at SIMD 16, 0 ranks: 6 levels in 10.2 ns; 1 rank: the tree's 5
# levels in 8.3 ns; XNOR at SIMD 64, 1 rank: 6 levels in 7.9 ns (yosys merges a segment's adders into
# one compressor tree, so a level costs less in a long segment).
LEVEL_NS = 2.5
SEGMENT_OVERHEAD_NS = 1.3  # clock-to-out, the first net and the endpoint's net of a pipeline segment


def dot_levels(simd: int, xnor: bool) -> int:
    """Adder levels from the dot product's input registers to the accumulator's: XNOR: the full-adder
    leaves and clog2(ceil(SIMD/3)) levels of partial counts; add/subtract: clog2(SIMD) levels and the
    popcount(~w) correction; both: the accumulator's adder."""
    if xnor:
        return 1 + math.ceil(math.log2(max(1, (simd + 2) // 3))) + 1
    return math.ceil(math.log2(max(1, simd))) + 1 + 1


def tree_stages(simd: int, ibits: int, xnor: bool, clock_ns: float, margin: float = MARGIN) -> int:
    """Register ranks each dot product of onebit_mvau gets for a target clock period: dot_levels split
    into the fewest segments of LEVEL_NS each that fit clock_ns / margin (the ranks that takes, at most
    clog2(SIMD) + 1). ibits is part of the signature for a model that weighs wide lanes; this one does not."""
    budget = clock_ns / margin - SEGMENT_OVERHEAD_NS
    per_segment = max(1, int(budget // LEVEL_NS))
    most = max(0, int(simd - 1).bit_length()) + 1
    return min(most, max(0, math.ceil(dot_levels(simd, xnor) / per_segment) - 1))


# A LUT ROM's read: one slice (LUT6 + MUXF7 + MUXF8) per 256 words, then a LUT level per 4:1 above that.
# yosys sta of onebit_mvau at PE 1: 4096 x 1 words 4.6 ns, 1024 x 4 words 4.3 ns register to register
# (addresses to the read register), 256 words ~2.5 ns.
LUT_ROM_SLICE_WORDS = 256
DEEP_LUT_ROM_NS = 4.6


def lut_rom_depth(clock_ns: float, margin: float = MARGIN) -> int:
    """Deepest memory onebit_mvau reads from LUTs in one cycle at this target clock (its LUT_ROM_DEPTH): no
    limit (0) while a deep LUT ROM's read fits clock_ns / margin, else one slice's 256 words."""
    return 0 if clock_ns / margin >= DEEP_LUT_ROM_NS else LUT_ROM_SLICE_WORDS


@dataclass
class Timing:
    """The longest register-to-register path of one node under the model of this module."""

    period_ns: float
    cell_ns: float
    route_ns: float
    nets: int
    cells: dict[str, int]            # cell types on the path
    start: str
    end: str
    family: str = "xc7"
    model: str = f"yosys sta cell delays (7-series -1) + {ROUTE_NS} ns per general-routing net"
    path: list[str] = field(default_factory=list)

    @property
    def fmax_mhz(self) -> float:
        return 1000.0 / self.period_ns

    def as_dict(self) -> dict:
        return {**asdict(self), "fmax_mhz": round(self.fmax_mhz, 1)}


_ARRIVAL = re.compile(r"Latest arrival time in '([^']*)' is (\d+):")
_STEP = re.compile(r"^\s*(\d+)\s+(\S*)\s*\(([^)]*)\)\s*$")


def parse_sta(text: str) -> Timing:
    """The critical path of yosys' `sta` report -> Timing (cell delays + the routing allowance)."""
    found = _ARRIVAL.search(text)
    if not found:
        raise OnebitError("yosys sta found no timing path (no flip-flop reached by logic?)")
    steps = []
    for line in text[found.end():].splitlines()[1:]:
        match = _STEP.match(line)
        if match:
            steps.append((int(match.group(1)), match.group(2), match.group(3)))
        elif line.strip() and not line.startswith((" " * 11, "Warning")):
            break
    if not steps:
        raise OnebitError("yosys sta printed no path")
    arrival_ps = int(found.group(2))
    cells: dict[str, int] = {}
    nets = 0
    _, start_name, start_pin = steps[-1]
    for _, name, pin in steps[:-1]:
        if "->" not in pin:       # the endpoint: its D/CE/R net (or "<unknown>": see below)
            nets += 1
            continue
        cell, arc = pin.split(".", 1)
        src, _ = arc.split("->", 1)
        src = src.split("[")[0]
        cells[cell] = cells.get(cell, 0) + 1
        if src in ("C", "CLK", "CLKARDCLK", "CLKBWRCLK", "WCLK"):   # the launching register
            continue
        if (cell, src) not in DEDICATED:
            nets += 1
    extra_ps = 0
    if "<primary input>" in start_pin and not re.search(r"clk", start_name, re.I):
        # a stream input, driven by the producer's register: its clock-to-out (the net from the port into
        # the first cell is counted above)
        extra_ps = round(CLOCK_TO_OUT_NS * 1000)
    cell_ns = (arrival_ps + extra_ps) / 1000.0
    route_ns = nets * ROUTE_NS
    path = [f"{t / 1000:.3f} ns {pin} {name}" for t, name, pin in reversed(steps)]
    # yosys reports the latest arrival on any net; where that is an unused carry-chain output ("<unknown>"
    # endpoint: the top bit of an adder whose lower bits feed registers) it is a few carry steps later
    # than the registered bits, so the estimate errs on the slow side
    end = steps[0][1]
    if not end and len(steps) > 1:
        end = f"unregistered net after {steps[1][1]}"
    start = steps[-2][1] if len(steps) > 1 and steps[-1][2] == "<primary input>" and "clk" in start_name.lower() \
        else start_name
    return Timing(round(cell_ns + route_ns, 3), round(cell_ns, 3), round(route_ns, 3), nets, cells, start, end,
                  path=path)


def estimate_timing(top: str, parameters: dict[str, int | str], init_files: dict[str, str] | None = None,
                    name: str | None = None, extra_sources: list[Path] = ()) -> Timing:
    """Time `top` (a module in hw/rtl/sv or extra_sources) with `parameters`; cached like the LUT counts."""
    what = name or top
    init_files = dict(init_files or {})
    params = tuple(sorted(parameters.items()))
    sources = [*sv_sources(), *[Path(p) for p in extra_sources]]
    key = content_key("yosys-sta-3", tool_version("yosys"), top, params, sorted(init_files.items()), ROUTE_NS,
                      files=sources)
    cached = cache_root() / "yosys" / f"{top}-sta-{key}.json"
    if cached.is_file():
        return Timing(**json.loads(cached.read_text()))
    chparams = " ".join(f"-set {k} {sv_literal(v)}" for k, v in params)
    script = [f"read_verilog -defer -sv {' '.join(str(s) for s in sources)}",
              f"chparam {chparams} {top}" if params else "",
              f"hierarchy -top {top}",
              f"synth_xilinx -family xc7 -top {top} -flatten -noiopad -noclkbuf -nosrl",
              f"read_verilog -lib -specify {CELLS_LIBRARY}",
              "tee -q -o sta.txt sta"]
    report = run_yosys(script, init_files, "sta.txt", f"{what}: timing estimate not made: yosys synthesis of {top}")
    try:
        result = parse_sta(report)
    except OnebitError as error:
        raise OnebitError(f"{what}: {error}") from None
    cached.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cached, json.dumps(asdict(result), indent=1))
    return result

