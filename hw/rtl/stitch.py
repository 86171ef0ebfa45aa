"""The whole accelerator in Verilator, without Vivado: a generated SystemVerilog top level that chains
every node of FINN's dataflow partition (onebit's MVAU / max pool, FINN's own RTL nodes such as
ConvolutionInputGenerator_rtl and FMPadding_rtl from the build's generated code) through stream FIFOs
and, where a producer's beat holds a different number of elements than its consumer's, a width
converter (what FINN's InsertDWC / InsertFIFO add in step_set_fifo_depths, a Vivado-host step here).

Stream FIFOs (onebit_fifo): one before the first node, one between every two nodes, one after the last,
as FINN's InsertFIFO places them. Depth rule: the largest of the producer's outFIFODepths and the
consumer's inFIFODepths (FINN's own rule; FINN's sizes once step_set_fifo_depths ran on a Vivado host),
2 (a FIFO needs two entries to pass a beat every cycle) and, in front of an MVAU, one input vector of
that MVAU (see `vector_beats`; without it the chain runs ~1.5x slower than its bottleneck node). Where a
width converter is needed: FIFO (producer's depth), converter, FIFO (consumer's depth and the vector),
FINN's order.
These rule depths are the floor: `RTLAccelerator` then sizes every FIFO by simulation (fifo_sizing.py),
as FINN's step_set_fifo_depths does on a Vivado host: the design with deep FIFOs, its input paced at
FINN's estimated bottleneck rate (the steady state of a chain whose DMA runs ahead), the most beats
each FIFO ever held becomes its depth. The rule alone ran a narrow CNV 1.14x slower than its
bottleneck: SWGs, pools and MVAUs produce and consume in bursts (a window, a row, an MVAU's input
vector in its first output fold) that FIFOs of a few beats cannot absorb (bench/rtl_accelerator.md).
`fifo_depth=` overrides every depth (no sizing).
In a linear chain a small FIFO costs throughput, never correctness; a consumer that stops accepting
(the output DMA, or a FIFO too small in a design with reconverging streams) stops the whole chain,
which the harness reports as StreamDeadlock (no transfer for `idle_limit` cycles, or `max_cycles`
passed) instead of hanging.

The input is the byte buffer the input DMA reads (hw/driver: `Accelerator.fold_and_pack`), one beat
per innermost row; the output is the byte buffer the output DMA writes, so `RTLAccelerator.run` is a
drop-in backend of the driver's `Accelerator(backend="model")`.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hw.rtl.chain import (FIFO_DEPTHS_KEY, STITCH_OPS, _add_build_copies, _chain,  # noqa: F401 (API)
                          stitched_depths, vector_beats)
from hw.rtl.registry import ensure_onebit_ops
from hw.rtl.verilator import SV_DIR, StreamDeadlock, StreamResult, build_simulator, run_stream
from onebit.atomic import write_text_atomic
from onebit.errors import OnebitError

TOP = "onebit_accel"
CONTROLS_FILE = "onebit_sim_controls.dat"   # read by the top level under Verilator (top_verilog)
# FINN's FMPadding_rtl needs packed structs in Verilator 5.006; FINN's RTL expects registers it does not
# reset to start at 0, as in Vivado's simulator (x-initial 0), not at Verilator's random "fast" values.
FINN_FLAGS = ("--structs-packed", "--x-assign", "0", "--x-initial", "0")
# onebit's modules that only the simulation adds (FINN inserts its own FIFOs and width converters in
# Vivado), taken from the repository; every node's modules come from the build folder's copies
STITCH_SOURCES = ("onebit_fifo.sv", "onebit_dwc.sv")


@dataclass
class Stage:
    """One instance in the chain: a node, a FIFO or a width converter."""

    name: str
    module: str
    parameters: dict[str, Any]
    in_width: int          # padded TDATA bits
    out_width: int
    kind: str              # onebit, finn, fifo, dwc
    exp_cycles: int = 0
    op_type: str = ""
    tied: dict[str, str] = field(default_factory=dict)   # other input ports -> constant (AXI-lite kept idle)
    in_beats: int = 0      # beats per image on the input / output stream (nodes only)
    out_beats: int = 0


@dataclass
class AcceleratorDesign:
    stages: list[Stage]
    sources: list[Path]                       # FINN's generated node files
    include_dirs: list[Path]
    init_files: dict[str, str]                # file name in the run folder -> content (model's view)
    init_sources: dict[str, Path]             # file name -> the generated file it is copied from
    node_names: list[str]
    library_sources: list[Path]               # onebit's modules: the build's code-gen copies + stitch-only ones
    in_width: int
    out_width: int
    out_folded: tuple[int, ...] = ()          # the last node's folded output shape (batch 1)
    notes: list[str] = field(default_factory=list)

    @property
    def nodes(self) -> list[Stage]:
        return [s for s in self.stages if s.kind in ("onebit", "finn")]

    @property
    def bottleneck_cycles(self) -> int:
        return max(s.exp_cycles for s in self.nodes)

    def stream_beats(self) -> list[int]:
        """Beats per image on each stage's input stream (a FIFO's or converter's from its neighbours)."""
        beats, current = [], 0
        for i, stage in enumerate(self.stages):
            if stage.kind in ("onebit", "finn"):
                current = stage.in_beats
            elif stage.kind == "fifo" and i + 1 < len(self.stages) and self.stages[i + 1].kind in ("onebit", "finn"):
                current = self.stages[i + 1].in_beats
            beats.append(current)
            if stage.kind in ("onebit", "finn"):
                current = stage.out_beats
            elif stage.kind == "dwc":
                nxt = next((s for s in self.stages[i + 1:] if s.kind in ("onebit", "finn")), None)
                current = nxt.in_beats if nxt is not None else current
        return beats

    def top_verilog(self) -> str:
        """The top level. Under Verilator it also reads CONTROLS_FILE from the run folder at time 0:
        word 0/1 pace the input (at most word 0 beats per word 1 cycles on average; 0 = free), word
        2 + j caps the beats FIFO j may hold at that depth (0 = its DEPTH): one build with deep FIFOs
        simulates any depths up to DEPTH (FIFO sizing, the rule, a test's small FIFO). A FIFO of
        DEPTH d holds d beats plus its output register, so a cap d takes beats while count < d + 1."""
        def value(v):
            return f'"{v}"' if isinstance(v, str) else str(int(v))

        lines = [f"// generated by onebit (hw/rtl/stitch.py): {len(self.nodes)} nodes, FIFOs and width converters",
                 f"module {TOP} (",
                 "  input  logic ap_clk,", "  input  logic ap_rst_n,",
                 f"  input  logic [{self.in_width - 1}:0] in0_V_TDATA,", "  input  logic in0_V_TVALID,",
                 "  output logic in0_V_TREADY,",
                 f"  output logic [{self.out_width - 1}:0] out0_V_TDATA,", "  output logic out0_V_TVALID,",
                 "  input  logic out0_V_TREADY", ");"]
        widths = [self.stages[0].in_width] + [s.out_width for s in self.stages]
        for i, w in enumerate(widths):
            lines.append(f"  logic [{w - 1}:0] s{i}_TDATA; logic s{i}_TVALID, s{i}_TREADY;")
        last = len(self.stages)
        fifos = [i for i, stage in enumerate(self.stages) if stage.kind == "fifo"]
        lines += ["  logic paced;", *[f"  logic g{i}, r{i}; logic [$clog2({self.stages[i].parameters['DEPTH']}+1)-1:0] c{i};"
                                      for i in fifos],
                  "`ifdef VERILATOR  // simulation controls (see top_verilog in hw/rtl/stitch.py)",
                  f"  logic [63:0] controls [{2 + len(fifos)}], credit;",
                  f'  initial $readmemh("{CONTROLS_FILE}", controls);',
                  "  assign paced = controls[0] == 0 || credit >= controls[1];",
                  "  always_ff @(posedge ap_clk) begin  // + word 0 every cycle, - word 1 per beat, at most 2 beats ahead",
                  "    if (!ap_rst_n) credit <= '0;",
                  "    else credit <= (credit >= 2 * controls[1] ? credit : credit + controls[0])",
                  "                   - ((s0_TVALID && s0_TREADY) ? controls[1] : 64'd0);",
                  "  end"]
        for j, i in enumerate(fifos):
            lines.append(f"  assign g{i} = controls[{2 + j}] == 0 || 64'(c{i}) < controls[{2 + j}] + 1;")
        lines += ["`else", "  assign paced = 1'b1;", *[f"  assign g{i} = 1'b1;" for i in fifos], "`endif",
                  "  assign s0_TVALID = in0_V_TVALID && paced;", "  assign in0_V_TREADY = s0_TREADY && paced;",
                  "  assign s0_TDATA = in0_V_TDATA;",
                  f"  assign out0_V_TDATA = s{last}_TDATA;", f"  assign out0_V_TVALID = s{last}_TVALID;",
                  f"  assign s{last}_TREADY = out0_V_TREADY;"]
        for i, stage in enumerate(self.stages):
            params = ", ".join(f".{k}({value(v)})" for k, v in stage.parameters.items())
            lines.append(f"  {stage.module}{f' #({params})' if params else ''} u_{i}_{_ident(stage.name)} (")
            lines.append("    .ap_clk(ap_clk), .ap_rst_n(ap_rst_n),")
            if stage.kind == "fifo":
                lines.append(f"    .in0_V_TDATA(s{i}_TDATA), .in0_V_TVALID(s{i}_TVALID && g{i}), .in0_V_TREADY(r{i}),")
            else:
                lines.append(f"    .in0_V_TDATA(s{i}_TDATA), .in0_V_TVALID(s{i}_TVALID), .in0_V_TREADY(s{i}_TREADY),")
            lines.append(f"    .out0_V_TDATA(s{i + 1}_TDATA), .out0_V_TVALID(s{i + 1}_TVALID), "
                         f".out0_V_TREADY(s{i + 1}_TREADY){',' if stage.tied or stage.kind == 'fifo' else ''}")
            if stage.kind == "fifo":
                lines.append(f"    .count(c{i})")
            if stage.tied:
                lines.append("    " + ", ".join(f".{port}({value})" for port, value in stage.tied.items()))
            lines.append("  );")
            if stage.kind == "fifo":
                lines.append(f"  assign s{i}_TREADY = r{i} && g{i};")
        # beats per stream and the handshake state at the end: a stalled chain names where it stopped
        # and cycles where a stream's producer waits (valid, not ready): the stage after it is the slower
        # one; the most beats each FIFO held (FIFO sizing)
        lines.append("`ifdef VERILATOR  // simulation probes only")
        lines.append(f"  longint unsigned beats [{len(widths)}], waits [{len(widths)}], most [{len(self.stages)}];")
        lines.append("  always_ff @(posedge ap_clk) begin")
        lines.append("    if (!ap_rst_n) begin")
        lines.append(f"      for (int i = 0; i < {len(widths)}; i++) begin beats[i] <= 0; waits[i] <= 0; end")
        lines.append(f"      for (int i = 0; i < {len(self.stages)}; i++) most[i] <= 0;")
        lines.append("    end else begin")
        for i in fifos:
            lines.append(f"      if (longint'(c{i}) > most[{i}]) most[{i}] <= longint'(c{i});")
        for i in range(len(widths)):
            lines.append(f"      if (s{i}_TVALID && s{i}_TREADY) beats[{i}] <= beats[{i}] + 1;")
            lines.append(f"      if (s{i}_TVALID && !s{i}_TREADY) waits[{i}] <= waits[{i}] + 1;")
        lines += ["    end", "  end", "  final begin"]
        for i in range(len(widths)):
            lines.append(f'    $display("STREAM {i} %0d %0d %0d %0d", beats[{i}], s{i}_TVALID, s{i}_TREADY, waits[{i}]);')
        for i in fifos:
            lines.append(f'    $display("STREAM FILL {i} %0d", most[{i}]);')
        lines += ["  end", "`endif", "endmodule"]
        return "\n".join(lines) + "\n"

    def controls(self, depths: dict[str, int] | None = None, pace: tuple[int, int] | None = None) -> str:
        """CONTROLS_FILE for this design's top level: FIFO caps (name -> depth; the others keep DEPTH)
        and the input pace (beats, cycles)."""
        depths = depths or {}
        words = [pace[0], pace[1]] if pace else [0, 1]
        for stage in self.stages:
            if stage.kind == "fifo":
                cap = int(depths.get(stage.name, 0))
                if cap > stage.parameters["DEPTH"]:
                    raise OnebitError(f"{stage.name}: depth {cap} is larger than the simulated FIFO's "
                                      f"{stage.parameters['DEPTH']}")
                words.append(cap)
        return "\n".join(f"{w:x}" for w in words) + "\n"


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def plan_accelerator(model, fifo_depth: int | None = None, fifo_depths: dict[str, int] | None = None,
                     exact_depths: dict[str, int] | None = None, attribute_depths: bool = True) -> AcceleratorDesign:
    """The stitched design of a final (code-generated) dataflow partition, a qonnx ModelWrapper; FINN's
    StreamingFIFO / width converter nodes, where step_set_fifo_depths inserted them, become this module's
    FIFO / converter stages. fifo_depth: every FIFO's depth; fifo_depths: FIFO name -> depth where larger
    than the rule's; exact_depths: FIFO name -> depth, exactly (stitched_depths); attribute_depths=False
    ignores the nodes' inFIFODepths/outFIFODepths (the rule from FINN's defaults: 2 and the MVAU vector)."""
    from finn.util.fpgadataflow import is_hls_node
    from qonnx.custom_op.registry import getCustomOp

    from hw.rtl.custom_op import OnebitMVAU_rtl, OnebitPool_rtl, node_build_files

    ensure_onebit_ops(model)
    nodes, _ = _chain(model)
    hls = [n for n in nodes if is_hls_node(n)]
    if hls:
        raise OnebitError(f"{hls[0].name} ({hls[0].op_type}) and {len(hls) - 1} more are FINN HLS nodes, which "
                          "only Vitis HLS turns into RTL; build with --mvau rtl for a whole-accelerator simulation")
    if fifo_depth is not None and fifo_depth < 2:
        raise OnebitError(f"fifo_depth must be at least 2, got {fifo_depth}")
    stages: list[Stage] = []
    sources: list[Path] = []
    library: dict[str, tuple[Path, str]] = {}  # onebit module file name -> (the build's copy, node it came from)
    include_dirs: list[Path] = []
    init_files: dict[str, str] = {}
    init_sources: dict[str, Path] = {}
    notes: list[str] = []
    insts = [getCustomOp(n) for n in nodes]

    def fifo(name: str, width: int, depths: list[int]) -> Stage:
        if fifo_depth is not None:
            depth = fifo_depth
        elif exact_depths is not None:
            if name not in exact_depths:
                raise OnebitError(f"no depth given for FIFO {name} (depths for {sorted(exact_depths)})")
            depth = int(exact_depths[name])
        else:
            depth = max([2, *[int(d) for d in depths], int((fifo_depths or {}).get(name, 0))])
        return Stage(name, "onebit_fifo", {"WIDTH": width, "DEPTH": depth}, width, width, "fifo")

    def attr(inst, name: str) -> int:
        return int(inst.get_nodeattr(name)[0]) if attribute_depths else 2

    first = insts[0]
    stages.append(fifo("fifo_in", first.get_instream_width_padded(), [attr(first, "inFIFODepths")]))
    for i, (node, inst) in enumerate(zip(nodes, insts)):
        if i > 0:
            prev = insts[i - 1]
            out_elems, in_elems = prev.get_folded_output_shape()[-1], inst.get_folded_input_shape()[-1]
            out_depth, in_depth = attr(prev, "outFIFODepths"), attr(inst, "inFIFODepths")
            if out_elems == in_elems:
                stages.append(fifo(f"fifo_{i}", prev.get_outstream_width_padded(),
                                   [out_depth, in_depth, vector_beats(inst, in_elems)]))
            else:
                # FINN's order (InsertDWC, then InsertFIFO on every edge): FIFO, converter, FIFO. The vector
                # FIFO sits after the converter, in the consumer's beats, so an MVAU reads a buffered
                # vector at one beat per cycle (before the converter it would wait for the narrow side)
                bits = prev.get_output_datatype().bitwidth()
                stages.append(fifo(f"fifo_{i}", prev.get_outstream_width_padded(), [out_depth]))
                stages.append(Stage(f"dwc_{i}", "onebit_dwc", {"EBITS": bits, "IN_ELEMS": out_elems,
                                                               "OUT_ELEMS": in_elems},
                                    prev.get_outstream_width_padded(), inst.get_instream_width_padded(), "dwc"))
                stages.append(fifo(f"fifo_{i}b", inst.get_instream_width_padded(),
                                   [in_depth, vector_beats(inst, in_elems)]))
        in_w, out_w = inst.get_instream_width_padded(), inst.get_outstream_width_padded()
        cycles = int(inst.get_exp_cycles())
        beats = {"in_beats": int(np.prod(inst.get_folded_input_shape()[1:-1])),
                 "out_beats": int(np.prod(inst.get_folded_output_shape()[1:-1]))}
        if isinstance(inst, (OnebitMVAU_rtl, OnebitPool_rtl)):
            rtl = inst.rtl_node(model)
            params = rtl.parameters()
            generated = Path(inst.get_nodeattr("code_gen_dir_ipgen") or "/nonexistent")
            for file_name, text in rtl.init_files().items():
                run_name = f"{_ident(node.name)}_{file_name}"
                params["WEIGHT_FILE" if file_name.startswith("weights") else "THRESH_FILE"] = run_name
                init_files[run_name] = text
                if (generated / file_name).is_file():
                    init_sources[run_name] = generated / file_name
                else:
                    notes.append(f"{node.name}: no generated {file_name} (step_hw_codegen not run); written "
                                 "from the model's weights")
            _add_build_copies(model, node, inst, library, notes)
            stages.append(Stage(node.name, rtl.top, params, in_w, out_w, "onebit", cycles, node.op_type, **beats))
        else:
            try:
                files, _, code_gen = node_build_files(inst)
            except FileNotFoundError as error:
                raise OnebitError(f"{node.name}: {error}; run the build's step_hw_codegen (onebit build) before "
                                  "simulating the accelerator") from None
            # FINN's generated Verilog reads its init files by "./" paths: the run folder gets copies
            for dat in sorted(code_gen.glob("*.dat")):
                if dat.name in init_files and init_sources.get(dat.name) != dat:
                    raise OnebitError(f"{node.name}: init file {dat.name} also belongs to another node")
                init_files[dat.name] = dat.read_text()
                init_sources[dat.name] = dat
            for f in files:
                if f.resolve() not in [s.resolve() for s in sources]:
                    sources.append(f)
            include_dirs += [Path(d) for d in inst.get_verilog_paths() if Path(d) not in include_dirs]
            module = inst.get_nodeattr("gen_top_module") or inst.get_verilog_top_module_name()
            # an AXI-lite port (FMPadding_rtl's / SWG's run-time configuration) stays idle: the parameters
            # FINN generated hold; left unconnected, Verilator would drive its valids with X
            tied = {}
            for bus in inst.get_verilog_top_module_intf_names().get("axilite", []):
                tied.update({f"{bus}_{sig}": "'0" for sig in ("AWVALID", "AWADDR", "WVALID", "WDATA", "WSTRB",
                                                            "ARVALID", "ARADDR")})
                tied.update({f"{bus}_BREADY": "1'b1", f"{bus}_RREADY": "1'b1"})
            stages.append(Stage(node.name, module, {}, in_w, out_w, "finn", cycles, node.op_type, tied, **beats))
    last = insts[-1]
    stages.append(fifo("fifo_out", last.get_outstream_width_padded(), [attr(last, "outFIFODepths")]))
    library_sources = [path for path, _ in library.values()] + [SV_DIR / name for name in STITCH_SOURCES]
    return AcceleratorDesign(stages, sources, include_dirs, init_files, init_sources, [n.name for n in nodes],
                             library_sources,
                             stages[0].in_width, stages[-1].out_width,
                             tuple(int(v) for v in last.get_folded_output_shape()), notes)


@dataclass
class AcceleratorRun:
    """Output bytes of one whole-accelerator simulation and its cycle counts."""

    packed: np.ndarray           # (N, *oshape_packed[1:]) uint8, what the output DMA writes
    stream: StreamResult

    @property
    def cycles_per_image(self) -> float:
        """Steady state: mean distance between consecutive images' last output beats (skipping the
        first image, whose time is the pipeline's fill)."""
        done = self.stream.image_done
        if len(done) >= 3:
            return float(np.mean(np.diff(done[1:])))
        return self.stream.cycles_per_image

    def stream_waits(self, stages: list[Stage]) -> dict[str, int]:
        """Cycles each stage's input stream had a beat waiting for the stage (its back-pressure)."""
        waits = {int(p.split()[1]): int(p.split()[5]) for p in self.stream.probes if len(p.split()) > 5}
        return {stage.name: waits.get(i, 0) for i, stage in enumerate(stages)}

    @property
    def first_image_latency(self) -> int:
        """Cycles from the first input beat to the first image's last output beat."""
        return int(self.stream.image_done[0] - self.stream.first_input) if self.stream.image_done else -1


def _build(design: AcceleratorDesign, folder: Path):
    folder = folder.resolve()  # Verilator runs in a folder of its own
    folder.mkdir(parents=True, exist_ok=True)
    top = write_text_atomic(folder / f"{TOP}.sv", design.top_verilog())
    finn_nodes = any(s.kind == "finn" for s in design.stages)
    try:
        return top, build_simulator(TOP, {}, name="rtl_accelerator", extra_sources=[top, *design.sources],
                                    library=design.library_sources,
                                    include_dirs=design.include_dirs, extra_flags=FINN_FLAGS if finn_nodes else ())
    except OnebitError as error:  # the shared sources' paths name no node: say which nodes use the failing file
        from hw.rtl.custom_op import nodes_using

        raise OnebitError(f"{nodes_using(design.stages, str(error))}{error}") from None


def _write_init_files(design: AcceleratorDesign, folder: Path, overwrite: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in design.init_files.items():
        if not overwrite and (folder / name).is_file():
            continue
        source = design.init_sources.get(name)
        write_text_atomic(folder / name, source.read_text() if source is not None else text)


def _drive(sim, design: AcceleratorDesign, packed: np.ndarray, workdir: Path, controls: str,
           **options: Any) -> AcceleratorRun:
    """Stream input-DMA bytes (N, ..., bytes per beat) through a built design."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    n = packed.shape[0]
    in_bytes, out_bytes = design.in_width // 8, design.out_width // 8
    if packed.shape[-1] != in_bytes:
        raise OnebitError(f"rtl_accelerator: input beats of {packed.shape[-1]} bytes, the first node takes "
                          f"{in_bytes}")
    beats = packed.reshape(-1, in_bytes)
    words = np.zeros((beats.shape[0], (in_bytes + 3) // 4 * 4), np.uint8)
    words[:, :in_bytes] = beats
    out_per_image = int(np.prod(design.out_folded[1:-1]))
    total = sum(s.exp_cycles for s in design.nodes)
    options.setdefault("max_cycles", 200_000 + 4 * (n + 2) * design.bottleneck_cycles + 4 * total)
    options.setdefault("idle_limit", 10_000 + 2 * total)
    workdir = workdir.resolve()  # the simulator runs there and reads its files by relative name
    workdir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(workdir / CONTROLS_FILE, controls)
    result = run_stream(sim, words.view("<u4"), n * out_per_image, (out_bytes + 3) // 4, workdir,
                        name="rtl_accelerator", out_per_image=out_per_image, **options)
    out = result.words.view(np.uint8).reshape(n * out_per_image, -1)[:, :out_bytes]
    return AcceleratorRun(out, result)


class RTLAccelerator:
    """A built whole-accelerator simulator; `run(packed)` is the driver's model backend.

    One Verilator build per partition: every FIFO is simulated one image of its stream deeper than the
    rule's depth and capped at run time (top_verilog's controls) to the depths in use: FIFO sizing,
    the rule, or `fifo_depth` run on the same executable."""

    def __init__(self, model, workdir: str | Path | None = None, fifo_depth: int | None = None,
                 artifacts: str | Path | None = None, overwrite_init_files: bool = True,
                 fifo_sizing: str = "simulated") -> None:
        """workdir: where the simulation runs and reads the init files (default artifacts/run);
        overwrite_init_files=False keeps init files already there (a test's corrupted copy);
        fifo_sizing: "simulated" (the default: the depths the design is stitched with, where the graph
        carries them (stitched_depths: FINN's StreamingFIFO nodes, or onebit's sizing written into the
        nodes), else sized here by size_fifos) or "rule" (the rule depths only); a fifo_depth sets every
        FIFO's depth instead."""
        if fifo_sizing not in ("simulated", "rule"):
            raise OnebitError(f"fifo_sizing must be 'simulated' or 'rule', got {fifo_sizing!r}")
        if fifo_depth is not None and fifo_depth < 2:
            raise OnebitError(f"fifo_depth must be at least 2, got {fifo_depth}")
        folder = Path(artifacts) if artifacts is not None else Path(tempfile.mkdtemp(prefix="onebit-accel-"))
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        rule = plan_accelerator(model)
        exact, source = stitched_depths(model) if fifo_depth is None and fifo_sizing == "simulated" else (None, "")
        # The simulated FIFOs: one image of their stream deeper than the rule from FINN's default depths, so
        # that sizing, the sized depths written back into the graph and FINN's stitched FIFOs all run on
        # one Verilator build (the depths in use are run-time caps).
        base = plan_accelerator(model, attribute_depths=False)
        beats = base.stream_beats()
        deep = {s.name: max(s.parameters["DEPTH"] + beats[i] + 2, fifo_depth or 0, (exact or {}).get(s.name, 0),
                            rule.stages[i].parameters["DEPTH"])
                for i, s in enumerate(base.stages) if s.kind == "fifo"}
        self.simulated = plan_accelerator(model, fifo_depths=deep)   # what Verilator builds
        self.top_file, self.sim = _build(self.simulated, folder)
        self.sizing: dict[str, Any] | None = None
        if fifo_depth is not None:
            self.fifo_source = f"fixed: every FIFO {fifo_depth} deep"
        elif exact is not None:
            self.fifo_source = f"as stitched: {source}"
        elif fifo_sizing == "simulated":
            from hw.rtl.fifo_sizing import size_fifos  # it drives this module's builds

            self.sizing = size_fifos(self.sim, self.simulated, rule, folder)
            exact = self.sizing["depths"]
            self.fifo_source = "sized here by simulation (hw/rtl/fifo_sizing.py)"
        else:
            self.fifo_source = "rule (nodes' FIFO depth attributes, 2, one MVAU input vector)"
            if stitched_depths(model)[0] is not None:  # the attributes hold a sizing: the rule from FINN's defaults
                rule = base
                self.fifo_source = "rule (FINN's default FIFO depths, 2, one MVAU input vector)"
            exact = {s.name: s.parameters["DEPTH"] for s in rule.stages if s.kind == "fifo"}
        # the design in use: its FIFO depths are the caps of every run
        self.design = plan_accelerator(model, fifo_depth, exact_depths=exact if fifo_depth is None else None)
        self.workdir = Path(workdir) if workdir is not None else folder / "run"
        self.write_init_files(self.workdir, overwrite_init_files)
        self.last: AcceleratorRun | None = None

    @property
    def depths(self) -> dict[str, int]:
        return {s.name: s.parameters["DEPTH"] for s in self.design.stages if s.kind == "fifo"}

    def where_stopped(self, probes: list[str], n_images: int) -> str:
        """From the per-stream beat counts of a stalled run: the first stage that holds beats it does not pass on."""
        counts = {}
        for line in probes:
            if not line.split()[1].isdigit():
                continue
            _, index, beats, valid, ready = line.split()[:5]
            counts[int(index)] = (int(beats), int(valid), int(ready))
        if len(counts) != len(self.design.stages) + 1:
            return "no stream counts"
        parts = []
        for i, stage in enumerate(self.design.stages):
            b_in, b_out = counts[i][0], counts[i + 1][0]
            v_out, r_out = counts[i + 1][1], counts[i + 1][2]
            state = "output waits for ready" if v_out and not r_out else ("no output valid" if not v_out else "")
            parts.append(f"{stage.name} {b_in}->{b_out} beats ({state})" if state else f"{stage.name} {b_in}->{b_out}")
        blocked = next((self.design.stages[i].name for i in range(len(self.design.stages))
                        if counts[i + 1][1] and not counts[i + 1][2]), None)
        head = f"stream backed up at the input of the stage after {blocked}; " if blocked else ""
        return head + "beats in -> out per stage: " + ", ".join(parts)

    def write_init_files(self, folder: str | Path, overwrite: bool = True) -> None:
        """The nodes' init files as the build generated them (the files Vivado would read), else from the model."""
        _write_init_files(self.design, Path(folder), overwrite)

    def init_file_differences(self, folder: str | Path | None = None) -> dict[str, str]:
        """node -> which of its init files in the run folder differ from the model's weights/thresholds."""
        folder = Path(folder) if folder is not None else self.workdir
        bad: dict[str, str] = {}
        for node in self.design.node_names:
            prefix = f"{_ident(node)}_"
            for name, text in self.design.init_files.items():
                if name.startswith(prefix):
                    path = folder / name
                    got = path.read_text() if path.is_file() else None
                    if got != text:
                        lines = (got or "").splitlines()
                        first = next((i for i, (a, b) in enumerate(zip(lines, text.splitlines())) if a != b), None)
                        where = f" (first at line {first + 1})" if first is not None else ""
                        bad[node] = f"{name} differs from the node's values in the model{where}"
        return bad

    def run(self, packed: np.ndarray, **options: Any) -> np.ndarray:
        """Input-DMA bytes (N, ..., bytes per beat) -> output-DMA bytes (N, ..., bytes per beat)."""
        n = packed.shape[0]
        try:
            self.last = _drive(self.sim, self.design, packed, self.workdir, self.simulated.controls(self.depths),
                               **options)
        except StreamDeadlock as error:
            raise StreamDeadlock(f"{error}; {self.where_stopped(error.probes, n)}") from None
        return self.last.packed.reshape(n, *self.design.out_folded[1:-1], self.design.out_width // 8)
