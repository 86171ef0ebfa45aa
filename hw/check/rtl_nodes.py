"""Verification level `rtl_nodes`: every `*_rtl` node of the final HW graph simulated in Verilator.

Each RTL node (ConvolutionInputGenerator_rtl, FMPadding_rtl, ... whatever FINN chose) is built with
Verilator from the files FINN's code generation wrote into the build folder (`get_rtl_file_list`: the
node's generated wrapper/implementation in hw/code_gen_ipgen_<node>_*/ plus finn-rtllib shipped in the
finn-plus wheel) and driven by onebit's generic AXI-stream testbench (verilator/axis_harness.cpp: random
input stalls and output back-pressure, a no-progress limit that reports a deadlock). Its output stream is
unpacked with FINN's own packing helpers and compared with FINN's Python execution of the same node on
the same inputs: the node's real inputs for the first N test images (captured from the HW-layer graph)
and random frames over the node's input datatype (all-max, all-min, uniform).

Each simulator runs in the node's code-gen folder: FINN's generated Verilog reads its init files by
`$readmemh("./<node>_threshs_0_0.dat")`, relative to the working directory (FINN's ReplaceVerilogRelPaths
makes them absolute for Vivado), so they resolve to the build's files and never to a stale copy where onebit
was started. Verilator only warns about a missing init file and reads zeros: any such complaint (missing or
unreadable file, assertion, error) fails the node with that line (hw.rtl.verilator.simulator_complaint).

What it proves: the generated Verilog of these nodes computes, cycle-accurately in a simulator and under
any stream timing, what FINN's Python model of them computes. What not: timing closure, synthesis,
Vivado-specific behaviour, the stitched design (FIFO depths, width converters), HLS nodes (level cppsim).

Verilator builds are cached per content under $ONEBIT_CACHE/verilator (default ~/.cache/onebit/verilator):
the key hashes every source file, the generated port header, the harness, the flags and Verilator's
version, so a rebuild that changes nothing compiles nothing. Reusable pieces for other levels:
`verilator_path()`, `build_simulator()`, `run_simulator()`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hw.check.levels import (LevelContext, LevelOutcome, cache_root, mismatch_rows, python_node_output, random_frames,
                             selected_nodes)
from hw.rtl.verilator import simulator_complaint

HARNESS = Path(__file__).resolve().parent / "verilator" / "axis_harness.cpp"
# FINN's SystemVerilog trips many lint warnings that Vivado accepts; FMPadding_rtl's packed structs need
# --structs-packed with Verilator 5.006. -O1: the simulations are short, compile time dominates.
VERILATOR_FLAGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-WIDTH", "--structs-packed", "--x-assign", "0",
                   "--x-initial", "0"]
CXXFLAGS = "-O1 -std=c++17"
P_STALL, P_BACKPRESSURE = 0.3, 0.3
SKIP_MESSAGE = "skipped: verilator not found (apt-get install verilator; tools/setup_env.sh installs it)"


class SimulationError(RuntimeError):
    """A node's simulator failed to build or run (deadlock, crash)."""


def verilator_path() -> str | None:
    return shutil.which(os.environ.get("VERILATOR", "verilator"))


def _verilator_version(exe: str) -> str:
    return subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()


def ports_header(top: str, in_port: str, in_width: int, out_port: str, out_width: int) -> str:
    """The per-node header axis_harness.cpp includes: the Verilated class and its stream ports."""
    return "\n".join([
        "#pragma once",
        f"#define TOP_CLASS V{top}",
        f'#define TOP_HEADER "V{top}.h"',
        f"#define IN_DATA {in_port}_TDATA", f"#define IN_VALID {in_port}_TVALID", f"#define IN_READY {in_port}_TREADY",
        f"#define OUT_DATA {out_port}_TDATA", f"#define OUT_VALID {out_port}_TVALID",
        f"#define OUT_READY {out_port}_TREADY",
        f"#define IN_WORDS {words(in_width)}", f"#define OUT_WORDS {words(out_width)}", ""])


def words(bits: int) -> int:
    return max(1, (bits + 31) // 32)


def build_simulator(top: str, sources: list[Path], include_dirs: list[Path], header: str,
                    cache_dir: Path | None = None, harness: Path = HARNESS) -> tuple[Path, bool, float]:
    """(executable, compiled now?, seconds): a Verilator build of `top` + harness, cached by content."""
    exe = verilator_path()
    if exe is None:
        raise SimulationError(SKIP_MESSAGE)
    cache_dir = Path(cache_dir or cache_root() / "verilator")
    digest = hashlib.sha256()
    for part in (_verilator_version(exe), " ".join(VERILATOR_FLAGS), CXXFLAGS, top, header, harness.read_text()):
        digest.update(part.encode() + b"\0")
    for source in sources:
        digest.update(Path(source).name.encode() + b"\0" + Path(source).read_bytes() + b"\0")
    for folder in include_dirs:  # `include`d files (e.g. memstream templates) are part of the design
        for path in sorted(Path(folder).glob("*.*v*")):
            if path.suffix in (".v", ".sv", ".vh", ".svh") and path not in sources:
                digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    key = digest.hexdigest()[:24]
    target = cache_dir / f"{top}-{key}"
    binary = target / "sim"
    if binary.is_file():
        return binary, False, 0.0
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f".{top}-", dir=cache_dir))
    try:
        (work / "harness_ports.h").write_text(header)
        command = [exe, "--cc", "--exe", "--build", "-j", str(min(2, os.cpu_count() or 1)), "--top-module", top,
                   "-Mdir", str(work / "obj"), "-o", str(work / "sim"), *VERILATOR_FLAGS,
                   *[f"-I{d}" for d in include_dirs], "-CFLAGS", f"{CXXFLAGS} -I{work}",
                   *[str(s) for s in sources], str(harness)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not (work / "sim").is_file():
            raise SimulationError(f"Verilator build of {top} failed: {_first_error(done.stdout + done.stderr)}")
        final = target.with_name(target.name + ".tmp")
        shutil.rmtree(final, ignore_errors=True)
        final.mkdir()
        shutil.copy2(work / "sim", final / "sim")
        (final / "command.txt").write_text(" ".join(command) + "\n")
        try:
            final.rename(target)  # atomic: a half-built simulator never looks cached
        except OSError:  # another process finished the same build first
            shutil.rmtree(final, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return binary, True, time.perf_counter() - started


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "%Error" in line or "error:" in line:
            return line.strip()[:300]
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "no output").strip()[:300]


def run_simulator(binary: Path, beats: list[int] | np.ndarray, in_width: int, expected_out: int, out_width: int,
                  seed: int = 0, p_stall: float = P_STALL, p_backpressure: float = P_BACKPRESSURE,
                  idle_limit: int = 100_000, cwd: Path | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Stream `beats` (ints, or pack_elements' bytes) into the simulator; returns the `expected_out` output
    beats (uint32 words, least significant first: expected_out x words(out_width)) and the run's statistics.

    cwd: where the simulator runs, i.e. where the design's relative `$readmemh("./...")` paths resolve: the
    node's code-gen folder (node_run_dir). Any complaint the simulator prints (a missing init file, an
    assertion, an error) is a SimulationError with that line, even when it exits 0."""
    in_bytes, out_bytes = words(in_width) * 4, words(out_width) * 4
    with tempfile.TemporaryDirectory(prefix="onebit-sim-") as tmp:
        in_file, out_file = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        if isinstance(beats, np.ndarray):
            in_file.write_bytes(np.ascontiguousarray(beats, dtype=np.uint8).tobytes())
        else:
            in_file.write_bytes(b"".join(int(b).to_bytes(in_bytes, "little") for b in beats))
        done = subprocess.run([str(binary), str(in_file), str(out_file), str(expected_out), str(seed),
                               str(p_stall), str(p_backpressure), str(idle_limit)], capture_output=True, text=True,
                              cwd=cwd)
        complaint = simulator_complaint(done.stderr + "\n" + done.stdout)
        if complaint is not None:
            raise SimulationError(f"{complaint} (simulator run in {cwd or Path.cwd()})")
        if done.returncode != 0:
            raise SimulationError((done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}")
                                  .splitlines()[0][:300])
        data = out_file.read_bytes()
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    return np.frombuffer(data, dtype="<u4").reshape(-1, out_bytes // 4), stats


def unpack_elements(words: np.ndarray, count: int, bits: int, dtype) -> np.ndarray:
    """Beats (n x 32-bit words) -> n x count element values, element i in bits [i*bits, (i+1)*bits).

    The same unpacking as FINN's rtlsim_output_to_npy (reverse_inner=True), vectorized: FINN's goes through
    one hex string per element and took 100 s for 30 frames of a 32x32 sliding window. simulate_node checks
    the two agree on the first frame.
    """
    raw = np.unpackbits(np.ascontiguousarray(words).view(np.uint8).reshape(len(words), -1), axis=1,
                        bitorder="little")[:, :count * bits].reshape(len(words), count, bits)
    values = raw.astype(np.int64) @ (np.int64(1) << np.arange(bits, dtype=np.int64))
    if dtype.get_canonical_name() == "BIPOLAR":
        return (2 * values - 1).astype(np.float32)
    if dtype.signed():
        values = np.where(values >= (1 << (bits - 1)), values - (1 << bits), values)
    return values.astype(np.float32)


PACKING_PROBE_BEATS = 256  # beats of the first frame also packed/unpacked by FINN's own functions, as a check


def pack_elements(values: np.ndarray, bits: int, dtype, width: int) -> np.ndarray:
    """Beats (n x count element values) -> n x words(width)*4 bytes, element i in bits [i*bits, (i+1)*bits).

    The same packing as FINN's npy_to_rtlsim_input (reverse_inner=True, BIPOLAR -1/+1 as 0/1, signed values
    in two's complement), vectorized: FINN's builds one hex string per element (minutes for 100 frames of a
    CNV sliding window). simulate_node checks the two agree on the first frame.
    """
    v = np.rint(values).astype(np.int64)
    if dtype.get_canonical_name() == "BIPOLAR":
        v = (v + 1) // 2
    v &= (1 << bits) - 1
    raw = ((v[..., None] >> np.arange(bits, dtype=np.int64)) & 1).astype(np.uint8).reshape(len(v), -1)
    n_bytes = words(width) * 4
    raw = np.concatenate([raw, np.zeros((len(v), n_bytes * 8 - raw.shape[1]), np.uint8)], axis=1)
    return np.packbits(raw, axis=1, bitorder="little")


def _words_to_ints(words: np.ndarray) -> list[int]:
    return [int.from_bytes(row.astype("<u4").tobytes(), "little") for row in words]


# ---------------------------------------------------------------------------------------------------
# one node

def node_sources(inst) -> tuple[list[Path], list[Path], Path]:
    """(sources, include folders, run folder) of a built node: hw.rtl.custom_op.node_build_files, the one
    place that says which files the build folder holds for a node; the run folder is its code-gen folder."""
    from hw.rtl.custom_op import node_build_files

    try:
        return node_build_files(inst)
    except FileNotFoundError as error:
        raise SimulationError(str(error)) from None


def rtl_nodes_of(model) -> list:
    return [n for n in model.graph.node if n.domain.endswith(".rtl") or n.op_type.endswith("_rtl")]


def simulate_node(model, node, frames: np.ndarray, cache_dir: Path | None, seed: int) -> tuple[np.ndarray, dict]:
    """Outputs (frames x normal output shape) of `node`'s generated Verilog on `frames` (normal input shape)."""
    from finn.util.data_packing import npy_to_rtlsim_input, rtlsim_output_to_npy
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    interfaces = inst.get_verilog_top_module_intf_names()
    if len(interfaces["s_axis"]) != 1 or len(interfaces["m_axis"]) != 1 or interfaces.get("aximm"):
        raise SimulationError(f"{len(interfaces['s_axis'])} input / {len(interfaces['m_axis'])} output streams: "
                              "the harness drives nodes with one input and one output stream")
    (in_port, in_width), (out_port, out_width) = interfaces["s_axis"][0], interfaces["m_axis"][0]
    top = inst.get_verilog_top_module_name()
    sources, include_dirs, run_dir = node_sources(inst)
    binary, compiled, build_seconds = build_simulator(
        top, sources, include_dirs, ports_header(top, in_port, in_width, out_port, out_width), cache_dir)

    idt, odt = inst.get_input_datatype(0), inst.get_output_datatype(0)
    folded_in, folded_out = inst.get_folded_input_shape(0), inst.get_folded_output_shape(0)
    # a node whose stream order is not FINN's folded shape (onebit's max pool reads the depthwise window
    # generator's (channel fold, window element, PE) order) says how to reorder the normal layout
    reorder = getattr(inst, "stream_order_input", None)
    ordered = reorder(frames) if reorder is not None else frames
    beats_per_frame = int(np.prod(folded_in[:-1]))
    beats = pack_elements(ordered.reshape(len(frames) * beats_per_frame, int(folded_in[-1])), idt.bitwidth(), idt,
                          in_width)
    probe_in = min(beats_per_frame, PACKING_PROBE_BEATS)  # FINN's packing costs ~1 ms per beat: a prefix suffices
    first = ordered[0].reshape(beats_per_frame, int(folded_in[-1]))[:probe_in]
    finn_first = [int(b) for b in npy_to_rtlsim_input(first, idt, in_width)]
    if [int.from_bytes(b.tobytes(), "little") for b in beats[:probe_in]] != finn_first:
        raise SimulationError("onebit's input packing disagrees with FINN's npy_to_rtlsim_input")
    out_per_frame = int(np.prod(folded_out[:-1]))
    started = time.perf_counter()
    out, stats = run_simulator(binary, beats, in_width, out_per_frame * len(frames), out_width, seed=seed,
                               cwd=run_dir)
    sim_seconds = time.perf_counter() - started
    normal_out = tuple(inst.get_normal_output_shape(0))

    def finn_unpack(frame: int) -> np.ndarray:  # FINN's own unpacking of one frame
        return rtlsim_output_to_npy(_words_to_ints(out[frame * out_per_frame:(frame + 1) * out_per_frame]), None, odt,
                                    folded_out, inst.get_outstream_width(0), odt.bitwidth()).reshape(normal_out)

    if odt.is_integer():
        outputs = unpack_elements(out, int(folded_out[-1]), odt.bitwidth(), odt).reshape(len(frames), *normal_out)
        probe_out = min(out_per_frame, PACKING_PROBE_BEATS)
        finn_prefix = rtlsim_output_to_npy(_words_to_ints(out[:probe_out]), None, odt, (probe_out, int(folded_out[-1])),
                                           inst.get_outstream_width(0), odt.bitwidth())
        if not np.array_equal(outputs[0].reshape(-1)[:finn_prefix.size], finn_prefix.reshape(-1)):
            raise SimulationError("onebit's output unpacking disagrees with FINN's rtlsim_output_to_npy")
    else:
        outputs = np.stack([finn_unpack(i) for i in range(len(frames))])
    stats.update({"verilator_build": f"compiled in {build_seconds:.0f} s" if compiled else "cached",
                  "build_seconds": round(build_seconds, 1), "sim_seconds": round(sim_seconds, 2),
                  "simulator": str(binary)})
    return outputs, stats


def reference_outputs(model, node, frames: np.ndarray) -> np.ndarray:
    """FINN's Python execution of the node (exec_mode cppsim = the Python model for RTL nodes) on `frames`.

    All frames in one call where the node's Python model takes a batch (the sliding window's Im2Col and the
    padder's np.pad do) and that call reproduces the per-frame results on the first frames; else per frame.
    """
    shape = tuple(model.get_tensor_shape(node.input[0]))
    out_shape = tuple(model.get_tensor_shape(node.output[0]))

    def run(chunk: np.ndarray) -> np.ndarray:
        x = chunk.reshape(len(chunk), *shape[1:]).astype(np.float32)
        return python_node_output(model, node, {node.input[0]: x}, "cppsim", batch=len(chunk))

    per_frame = np.stack([run(f[None]) for f in frames[:2]]).reshape(min(2, len(frames)), *out_shape[1:])
    try:
        batched = run(frames).reshape(len(frames), *out_shape[1:])
    except Exception:  # the node's Python model is batch-1 only
        batched = None
    if batched is not None and np.array_equal(batched[:2], per_frame):
        return batched
    return np.stack([run(f[None]) for f in frames]).reshape(len(frames), *out_shape[1:])


# ---------------------------------------------------------------------------------------------------
# the level

class RtlNodesLevel:
    name = "rtl_nodes"
    default = True

    def skipped(self) -> str | None:
        return None if verilator_path() else SKIP_MESSAGE

    def run(self, ctx: LevelContext) -> LevelOutcome:
        from qonnx.custom_op.registry import getCustomOp

        from onebit.progress import bar as progress_bar

        model, nodes = selected_nodes(ctx, rtl_nodes_of)
        n_images = len(ctx.images)
        if not nodes:
            return LevelOutcome.nothing_to_simulate(f"no *_rtl node in the final HW graph ({Path(ctx.final_model).name}); "
                                                    "level cppsim simulates its HLS nodes")
        real = ctx.node_inputs([n.input[0] for n in nodes])
        cache_dir = ctx.options.get("cache_dir")
        rows, bad_images, total_bad = [], set(), 0
        for index, node in enumerate(progress_bar(nodes, desc="rtl_nodes (Verilator)", unit="node",
                                                  enabled=ctx.progress)):
            inst = getCustomOp(node)
            shape = tuple(model.get_tensor_shape(node.input[0]))
            frames_real = real[node.input[0]].reshape(n_images, *shape[1:])
            frames_random = random_frames(inst.get_input_datatype(0), shape[1:], ctx.random_samples,
                                          ctx.seed + 7919 * (index + 1))
            frames = np.concatenate([frames_real, frames_random]).astype(np.float32)
            row: dict[str, Any] = {"node": node.name, "op_type": node.op_type, "images": n_images,
                                   "random_frames": ctx.random_samples,
                                   "input_datatype": inst.get_input_datatype(0).get_canonical_name()}
            try:
                actual, stats = simulate_node(model, node, frames, cache_dir, ctx.seed + index)
            except SimulationError as error:
                row.update({"status": f"failed: {error}", "mismatching_images": n_images,
                            "mismatching_random": ctx.random_samples})
                total_bad += len(frames)
                bad_images.update(range(n_images))
                rows.append(row)
                continue
            expected = reference_outputs(model, node, frames)
            wrong = mismatch_rows(expected, actual.reshape(expected.shape))
            wrong_real = [int(i) for i in wrong if i < n_images]
            wrong_random = [int(i) - n_images for i in wrong if i >= n_images]
            status = "ok" if not len(wrong) else "MISMATCH"
            # Beats after the last expected one are not an error: a padder streams the next frame's leading
            # padding before that frame's input arrives (FMPadding_rtl does); they are reported, not compared.
            row.update({"status": status, "mismatching_images": len(wrong_real), "mismatching_random": len(wrong_random),
                        "first_mismatching_images": wrong_real[:10], "first_mismatching_random": wrong_random[:5],
                        "beats_after_last_frame": int(stats.get("extra_out_beats", 0)),
                        **{k: stats[k] for k in ("cycles", "verilator_build", "build_seconds", "sim_seconds")}})
            total_bad += len(wrong)
            bad_images.update(wrong_real)
            rows.append(row)
        compiled = sum(1 for r in rows if str(r.get("verilator_build", "")).startswith("compiled"))
        return LevelOutcome(
            executed=True, samples=n_images, integer_mismatches=total_bad,
            first_mismatches=sorted(bad_images)[:20], nodes=rows,
            how=f"Verilator, {len(nodes)} RTL nodes x ({n_images} images + {ctx.random_samples} random frames), "
                f"random stalls/back-pressure {P_STALL}/{P_BACKPRESSURE}; {compiled} compiled, "
                f"{len(nodes) - compiled} cached")


LEVEL = RtlNodesLevel()
