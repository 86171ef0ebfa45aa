"""Resources of one onebit RTL node without Vivado: yosys `synth_xilinx` for the board's family,
counted from `stat -json`. Cached under $ONEBIT_CACHE/yosys by the hash of sources, parameters,
init-file contents, family and yosys version (a synthesis takes seconds to minutes).

$ONEBIT_YOSYS_TIMEOUT (seconds, unset = no limit) bounds each synthesis: one that runs longer is an
OnebitError naming the node (reported as that node's error in `resources_synth`, not cached, so a later
run without the limit synthesizes it). A full-width CNV's widest MVAUs take hours of yosys on two cores.

Yosys maps to the same primitives Vivado would (LUT1..6, CARRY4/8, FDRE, RAMB18/36, LUTRAM) but
does not place, route or close timing, and its optimisation differs from Vivado's: the counts are
a post-synthesis estimate, not Vivado's utilisation report.

The design is flattened except for the modules of PER_INSTANCE (an MVAU's per-PE dot product): those
are synthesized once per parameter set and counted once per instance. A PE's dot product depends only
on the shared input slice and its own weights, so nothing is lost between PEs, and flat synthesis of
wide add/subtract layers does not finish: yosys' alumacc merges each PE's adder tree into one $macc,
maccmap turns it into a full-adder compressor tree, and ABC's SAT sweeping (&fraig, scorr) of PE such
XOR networks over the same inputs grows far faster than PE (a UINT8 layer at PE 32 x SIMD 16 ran past
15 minutes; one PE's dot takes seconds).
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from onebit.atomic import write_text_atomic
from onebit.errors import OnebitError
from hw.rtl.verilator import cache_root, content_key, sv_literal, sv_sources, tool_version

FAMILIES = {"xc7": "Zynq-7000 / 7-series (Pynq-Z1, Pynq-Z2)", "xcup": "UltraScale+ (Ultra96-V2, ZCU104, KV260)"}
# LUTs a LUTRAM/SRL primitive occupies (7-series and UltraScale+ SLICEM).
LUTRAM_LUTS = {"RAM32M": 4, "RAM32M16": 8, "RAM64M": 4, "RAM64M8": 8, "RAM32X1D": 2, "RAM64X1D": 2,
               "RAM128X1D": 4, "RAM256X1S": 4, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2,
               "RAM512X1S": 8, "SRL16E": 1, "SRLC32E": 1, "SRLC16E": 1}
# Modules synthesized on their own (yosys keep_hierarchy) and counted per instance; see the docstring.
PER_INSTANCE = ("onebit_dot",)


def family_for_part(part: str) -> str:
    """synth_xilinx family of an FPGA part: Zynq-7000 / 7-series -> xc7, Zynq UltraScale+ -> xcup."""
    p = part.lower()
    if p.startswith(("xczu", "xcku", "xcvu", "xck26")) or "-ultra" in p:
        return "xcup"
    if p.startswith("xc7"):
        return "xc7"
    raise OnebitError(f"no yosys synth_xilinx family known for part {part}; onebit knows 7-series and UltraScale+")


@dataclass
class Resources:
    """Post-synthesis counts of one node (LUT counts logic LUTs; lutram_luts the LUTs used as memory)."""

    lut: int
    lutram_luts: int
    ff: int
    carry: int
    bram18: int           # RAMB18 equivalents (a RAMB36 counts 2)
    dsp: int
    family: str
    cells: dict[str, int] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)  # PER_INSTANCE module -> instances counted

    @property
    def lut_total(self) -> int:
        return self.lut + self.lutram_luts

    def as_dict(self) -> dict:
        return {**asdict(self), "lut_total": self.lut_total}


def parse_stat(cells: dict[str, int], family: str, instances: dict[str, int] | None = None) -> Resources:
    cells = {c: n for c, n in cells.items() if not c.startswith("$paramod")}  # submodule instances: counted inside
    lut = sum(n for c, n in cells.items() if c.startswith("LUT") and c[3:].isdigit())
    lutram = sum(LUTRAM_LUTS.get(c, 0) * n for c, n in cells.items())
    ff = sum(n for c, n in cells.items() if c in ("FDRE", "FDSE", "FDCE", "FDPE", "FDRE_1", "FDSE_1"))
    carry = sum(n for c, n in cells.items() if c in ("CARRY4", "CARRY8"))
    bram18 = sum(n for c, n in cells.items() if c.startswith("RAMB18")) + \
        2 * sum(n for c, n in cells.items() if c.startswith("RAMB36"))
    dsp = sum(n for c, n in cells.items() if c.startswith("DSP48"))
    return Resources(lut, lutram, ff, carry, bram18, dsp, family, dict(sorted(cells.items())), dict(instances or {}))


def _instances(stat: dict, top: str) -> dict[str, int]:
    """How many instances of each kept (PER_INSTANCE) module the top holds, from `stat -json`."""
    cells = stat.get("modules", {}).get(f"\\{top}", {}).get("num_cells_by_type", {})
    found: dict[str, int] = {}
    for cell, n in cells.items():
        for module in PER_INSTANCE:
            if cell.startswith("$paramod") and cell.endswith(f"\\{module}"):
                found[module] = found.get(module, 0) + n
    return found


def synthesis_timeout() -> float | None:
    """Seconds one yosys run may take ($ONEBIT_YOSYS_TIMEOUT), None = no limit."""
    value = os.environ.get("ONEBIT_YOSYS_TIMEOUT", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise OnebitError(f"ONEBIT_YOSYS_TIMEOUT={value!r} is not a number of seconds; set e.g. 600 or unset it") from None
    if seconds <= 0:
        raise OnebitError(f"ONEBIT_YOSYS_TIMEOUT={value!r} must be positive; unset it for no limit")
    return seconds


def run_yosys(script: list[str], init_files: dict[str, str], output: str, what: str) -> str:
    """Run a yosys script in a fresh folder holding the init files, bounded by $ONEBIT_YOSYS_TIMEOUT; the text
    of the file `output` it writes. `what` starts every error ("<node>: yosys synthesis of <top>")."""
    with tempfile.TemporaryDirectory(prefix="onebit-yosys-") as tmp:
        tmp = Path(tmp)
        for file_name, text in init_files.items():
            (tmp / file_name).write_text(text)
        (tmp / "script.ys").write_text("\n".join(script) + "\n")
        limit = synthesis_timeout()
        try:
            proc = subprocess.run(["yosys", "-q", "-l", "yosys.log", "script.ys"], capture_output=True, text=True,
                                  cwd=tmp, timeout=limit)
        except subprocess.TimeoutExpired:
            raise OnebitError(f"{what} did not finish within {limit:g} s (ONEBIT_YOSYS_TIMEOUT); unset it to "
                              "synthesize without a limit") from None
        if proc.returncode != 0 or not (tmp / output).is_file():
            errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line]
            raise OnebitError(f"{what} failed: {errors[0] if errors else proc.returncode}")
        return (tmp / output).read_text()


def synthesize(top: str, parameters: dict[str, int | str], init_files: dict[str, str] | None = None,
               family: str = "xc7", name: str | None = None, extra_sources: list[Path] = ()) -> Resources:
    """Synthesize `top` (a module in hw/rtl/sv or extra_sources) with `parameters` for `family` ('xc7' or
    'xcup'); init_files maps the file names the parameters refer to onto their contents."""
    if family not in FAMILIES:
        raise OnebitError(f"unknown FPGA family '{family}'; choose one of {', '.join(FAMILIES)}")
    what = name or top
    init_files = dict(init_files or {})
    params = tuple(sorted(parameters.items()))
    sources = [*sv_sources(), *[Path(p) for p in extra_sources]]
    key = content_key("yosys-synth-2", tool_version("yosys"), top, params, family, sorted(init_files.items()),
                      files=sources)
    cached = cache_root() / "yosys" / f"{top}-{key}.json"
    if cached.is_file():
        data = json.loads(cached.read_text())
        return Resources(**data)
    chparams = " ".join(f"-set {k} {sv_literal(v)}" for k, v in params)
    script = [f"read_verilog -defer -sv {' '.join(str(s) for s in sources)}",
              f"chparam {chparams} {top}" if params else "",
              f"hierarchy -top {top}",
              *[f"setattr -mod -set keep_hierarchy 1 *{m}" for m in PER_INSTANCE],
              f"synth_xilinx -family {family} -top {top} -flatten -noiopad -noclkbuf",
              f"tee -q -o stat.json stat -json -top {top}"]
    stat = json.loads(run_yosys(script, init_files, "stat.json", f"{what}: yosys synthesis of {top}"))
    cells = stat.get("design", stat).get("num_cells_by_type", {})  # the whole hierarchy's (stat -top)
    result = parse_stat(cells, family, _instances(stat, top))
    cached.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cached, json.dumps(asdict(result), indent=1))
    return result
