"""Verilator builds of onebit's RTL nodes and their stream simulation, driven from Python.

`build_simulator` verilates one top module with its parameters and the generic AXI-stream harness
(harness/axis_harness.cpp) into an executable, cached under $ONEBIT_CACHE/verilator (default
~/.cache/onebit/verilator) by a hash of the sources, parameters, harness, flags and Verilator version.
Init files are not part of the build: $readmemh reads them at run time from the run's working
directory, so new weights (or a corrupted file) reuse the build.

`run_stream` feeds input beats, collects output beats and cycle counts, and turns a stalled
simulation into a StreamDeadlock error instead of a hang.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from onebit.errors import OnebitError

RTL_DIR = Path(__file__).resolve().parent
SV_DIR = RTL_DIR / "sv"
HARNESS = RTL_DIR / "harness" / "axis_harness.cpp"
# -O1 for the C++: these models are small and compile time dominates on shared 2-core machines.
CFLAGS = "-O1 -std=c++17"
VERILATOR_FLAGS = ("-Wno-fatal", "-Werror-USERERROR", "-Werror-USERFATAL", "-Wno-lint", "-Wno-style",
                   "--x-assign", "fast", "--x-initial", "fast")
MAX_BEAT_WORDS = 4096  # the harness' beat buffer


class StreamDeadlock(OnebitError):
    """A simulation that stopped moving data (or ran past its cycle limit) before all output arrived.
    `probes`: the `STREAM ...` lines a design's final blocks printed (hw/rtl/stitch.py: beats per stream)."""

    probes: list[str] = []

    @classmethod
    def with_probes(cls, probes: list[str], message: str) -> "StreamDeadlock":
        error = cls(message)
        error.probes = probes
        return error


def cache_root() -> Path:
    return Path(os.environ.get("ONEBIT_CACHE") or Path.home() / ".cache" / "onebit")


def sv_sources() -> list[Path]:
    return sorted(SV_DIR.glob("*.sv"))


@lru_cache(maxsize=None)
def tool_version(tool: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        raise OnebitError(f"{tool} is not installed; run tools/setup_env.sh as root or `apt-get install {tool}`")
    out = subprocess.run([exe, "-V" if tool == "yosys" else "--version"], capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()


def content_key(*parts: object, files: list[Path] = ()) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode())
        digest.update(b"\0")
    for path in files:
        digest.update(path.name.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return digest.hexdigest()[:24]


def sv_literal(value: int | str) -> str:
    """A parameter value as Verilator's -G and yosys' chparam read it."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(int(value))


@dataclass(frozen=True)
class Simulator:
    """One verilated top module with fixed parameters: an executable of the stream harness."""

    executable: Path
    top: str
    parameters: tuple[tuple[str, int | str], ...]


# What a simulation prints that makes its result worthless even when it exits 0: Verilator's run-time
# warnings and errors ("%Warning: ./x.dat:0: $readmem file not found", "$readmem file ended before ..."),
# failed assertions ($error, $fatal, immediate assertions) and X values a design reports.
_COMPLAINT = re.compile(r"^%(Warning|Error|Fatal)|\$readmem|[Aa]ssert(ion)? fail|\bfile not found\b|"
                        r"cannot (open|read)|^\[?(ERROR|FATAL)\b|\bX (value|detected)", re.MULTILINE)


def simulator_complaint(text: str) -> str | None:
    """The first line of a simulator's output that reports a missing/unreadable file, an assertion, an error
    or an X (None when there is none): any of them fails the simulated node with that line."""
    for line in text.splitlines():
        if _COMPLAINT.search(line.strip()):
            return line.strip()[:300]
    return None


def _user_errors(log: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"%(?:Warning|Error)-USER(?:ERROR|FATAL):[^:]*:\d+:\d+: (.*)", log)]


def build_simulator(top: str, parameters: dict[str, int | str], name: str | None = None,
                    jobs: int = 2, extra_sources: list[Path] = (), include_dirs: list[Path] = (),
                    extra_flags: tuple[str, ...] = (), library: list[Path] | None = None) -> Simulator:
    """Verilate `top` (a module in `library`, or in extra_sources: a generated top level, FINN's
    generated node files) with `parameters`, or reuse the cached build. library: onebit's modules
    (default the repository's hw/rtl/sv; a build's simulation passes the build folder's copies). The key
    covers every source's content and the files in include_dirs (FINN's `include`d templates)."""
    tool_version("verilator")
    sources = [*(sv_sources() if library is None else [Path(p) for p in library]), *[Path(p) for p in extra_sources]]
    included = sorted(f for d in include_dirs for f in Path(d).glob("*") if f.is_file() and
                      f.suffix in (".v", ".sv", ".vh", ".svh", ".dat") and f not in sources)
    params = tuple(sorted(parameters.items()))
    key = content_key("verilator-build-2", tool_version("verilator"), top, params, CFLAGS, VERILATOR_FLAGS,
                      tuple(extra_flags), files=[*sources, *included, HARNESS])
    target = cache_root() / "verilator" / f"{top}-{key}"
    executable = target / "sim"
    if executable.is_file():
        return Simulator(executable, top, params)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{top}-", dir=target.parent))
    try:
        cmd = ["verilator", "--cc", "--exe", "--build", "-j", str(jobs), "--prefix", "Vtop",
               "--top-module", top, "-Mdir", str(work / "obj"), "-o", str(work / "sim"),
               *VERILATOR_FLAGS, *extra_flags, *[f"-I{d}" for d in include_dirs], "-CFLAGS", CFLAGS,
               *[f"-G{k}={sv_literal(v)}" for k, v in params], *map(str, sources), str(HARNESS)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
        if proc.returncode != 0 or not (work / "sim").is_file():
            log = proc.stdout + proc.stderr
            errors = _user_errors(log)
            what = name or top
            if errors:
                raise OnebitError(f"{what}: parameters rejected at elaboration: {errors[0]}")
            tail = " | ".join([line for line in log.splitlines() if "rror" in line][:3] or log.splitlines()[-3:])
            raise OnebitError(f"{what}: Verilator build of {top} failed: {tail}")
        (work / "sim").rename(work / "sim.keep")
        shutil.rmtree(work / "obj", ignore_errors=True)  # the object files are not needed again
        (work / "sim.keep").rename(work / "sim")
        try:
            work.rename(target)  # atomic: a concurrent build of the same key simply loses the race
        except OSError:
            if not executable.is_file():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return Simulator(executable, top, params)


@dataclass
class StreamResult:
    """Output beats and cycle counts of one simulation (cycle 0 is the first cycle after reset)."""

    words: np.ndarray                 # (n_out, out_words) uint32 output beats
    cycles: int                       # cycles simulated, including a short drain after the last beat
    first_input: int                  # cycle of the first input transfer
    first_output: int                 # cycle of the first output transfer
    last_transfer: int
    image_done: list[int] = field(default_factory=list)  # cycle of each image's last output beat
    probes: list[str] = field(default_factory=list)      # `STREAM ...` lines of the design's final blocks

    @property
    def first_output_latency(self) -> int:
        """Cycles from the first input beat to the first output beat."""
        return self.first_output - self.first_input

    @property
    def cycles_per_image(self) -> float:
        """Steady-state cycles between consecutive images' last output beats (the first image's
        completion time when only one image was simulated)."""
        if len(self.image_done) >= 2:
            return float(np.mean(np.diff(self.image_done)))
        return float(self.image_done[0] - self.first_input + 1) if self.image_done else float("nan")


def run_stream(sim: Simulator, in_words: np.ndarray, n_out: int, out_words: int, workdir: str | Path, *,
               name: str = "node", out_per_image: int = 0, in_stall: float = 0.0, out_stall: float = 0.0,
               seed: int = 0, max_cycles: int | None = None, idle_limit: int = 10_000,
               sink_capacity: int | None = None) -> StreamResult:
    """Stream `in_words` (n_in, words) into the simulator running in `workdir` (where its init files
    are) and collect `n_out` output beats. in_stall / out_stall: probability that the source holds
    back a beat / the sink drops TREADY in a cycle. sink_capacity: the sink stops accepting after that
    many beats (a consumer that is too small). Raises StreamDeadlock when no beat moves for idle_limit
    cycles or max_cycles pass first, naming the node and how far it got."""
    workdir = Path(workdir)
    in_words = np.ascontiguousarray(in_words, dtype="<u4")
    n_in = in_words.shape[0]
    if max(in_words.shape[1], out_words) > MAX_BEAT_WORDS:
        raise OnebitError(f"{name}: beats wider than {32 * MAX_BEAT_WORDS} bits are not supported by the harness")
    for p in (in_stall, out_stall):
        if not 0.0 <= p < 1.0:
            raise OnebitError(f"{name}: stall probabilities must be in [0, 1), got {p}")
    if max_cycles is None:
        slow = 1.0 / ((1.0 - in_stall) * (1.0 - out_stall))
        max_cycles = int(100_000 + 20 * slow * (n_in + n_out) * 8)
    with tempfile.TemporaryDirectory(prefix="stream-", dir=workdir) as tmp:
        src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        in_words.tofile(src)
        cmd = [str(sim.executable), str(src), str(dst), str(n_in), str(n_out), str(in_words.shape[1]),
               str(out_words), str(out_per_image), str(int(round(in_stall * 1000))),
               str(int(round(out_stall * 1000))), str(seed), str(max_cycles), str(idle_limit),
               str(-1 if sink_capacity is None else sink_capacity)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
        stats_line = next((line for line in reversed(proc.stdout.splitlines()) if line.startswith("STATS ")), None)
        complaint = simulator_complaint(proc.stderr + "\n" + proc.stdout)
        if complaint is not None:  # a missing init file reads as zeros: the run proves nothing
            raise OnebitError(f"{name}: simulation of {sim.top} in {workdir}: {complaint}")
        if stats_line is None:
            detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise OnebitError(f"{name}: simulation of {sim.top} failed (exit {proc.returncode}): {detail}")
        stats = dict(item.split("=", 1) for item in stats_line.split()[1:])
        got = np.fromfile(dst, dtype="<u4") if dst.exists() else np.zeros(0, "<u4")
    verdict = stats["verdict"]
    progress = (f"{stats['in']}/{n_in} input and {stats['out']}/{n_out} output beats moved, "
                f"last transfer at cycle {stats['last_transfer']}")
    probes = [line for line in proc.stdout.splitlines() if line.startswith("STREAM ")]
    if verdict == "deadlock":
        raise StreamDeadlock.with_probes(probes,f"{name}: deadlock in {sim.top}: no stream transfer for {idle_limit} cycles "
                             f"(stopped at cycle {stats['cycles']}); {progress}; check FIFO depths and that "
                             "the consumer accepts every beat")
    if verdict == "cycle_limit":
        raise StreamDeadlock.with_probes(probes,f"{name}: {sim.top} passed the cycle limit of {max_cycles} cycles; {progress}")
    if verdict == "extra_output":
        raise OnebitError(f"{name}: {sim.top} produced {stats['extra']} output beats beyond the expected {n_out}")
    if verdict != "done":
        raise OnebitError(f"{name}: simulation of {sim.top} ended with '{verdict}'")
    done = [int(v) for v in stats["image_done"].split(",") if v]
    return StreamResult(got.reshape(n_out, out_words), int(stats["cycles"]), int(stats["first_in"]),
                        int(stats["first_out"]), int(stats["last_transfer"]), done, probes)
