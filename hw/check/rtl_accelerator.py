"""Verification level `rtl_accelerator`: the whole accelerator of a `--mvau rtl` build simulated in
Verilator (hw/rtl/stitch.py: every node of the dataflow partition, FIFOs, width converters), fed the
bytes the driver's input DMA would send for the test images, its output-DMA bytes unpacked by the
driver into class scores in the same integer form as every other level (popcount p, z = 2p - n).

It also compares the raw outputs with the bit-exact accelerator model (hw/check/accel_model.py) of the
same final graph, and on any difference names the nodes whose init files (the weights/thresholds
the build generated, the files Vivado would read) differ from the model's values. It measures the
steady-state cycles per image and the first image's latency, beside FINN's estimated bottleneck.

What it proves: the RTL that `--mvau rtl` hands to Vivado (onebit's MVAU / max pool plus FINN's own
generated RTL nodes, stitched the way FINN stitches them) computes the trained network's scores
bit-exactly under real stream back-pressure, at the measured cycle count. What it does not: Vivado's
own stitching/IP packaging, timing closure at the board clock, the DMA engines and the board itself.
With `--mvau hls` the partition holds HLS nodes (only Vitis HLS turns those into RTL): the level says so.
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from onebit.errors import OnebitError

NAME = "rtl_accelerator"


def skip_reason() -> str | None:
    if shutil.which("verilator") is None:
        return "skipped: verilator not found (apt-get install verilator; tools/setup_env.sh installs it)"
    return None


def run_rtl_accelerator(build_dir: str | Path, images: np.ndarray, *, final_model: str | Path | None = None,
                        fifo_depth: int | None = None, init_dir: str | Path | None = None,
                        progress: bool = False, chunk: int = 500, **stream_options: Any) -> dict[str, Any]:
    """Simulate the build's accelerator on uint8 images (N, C, H, W); a dict with `scores` (z),
    `raw` outputs, `mismatching` image indices against the accelerator model, per-node rows and cycles.
    init_dir: read the nodes' init files from there (default: copies of the build's generated files)."""
    from qonnx.core.modelwrapper import ModelWrapper

    from onebit.progress import bar as progress_bar

    from hw.check.accel_model import AcceleratorModel, final_model_path
    from hw.driver.accelerator import Accelerator
    from hw.driver.io_spec import IOSpec
    from hw.rtl.stitch import RTLAccelerator

    from hw.finn.env import prepare_finn, prepared_dir

    build_dir = Path(build_dir)
    if prepared_dir() is None:  # FINN's settings locate finn-rtllib for its own RTL nodes' file lists
        prepare_finn(build_dir / "hw")
    spec = IOSpec.load(build_dir / "driver" / "io.json")
    path = Path(final_model) if final_model is not None else final_model_path(build_dir, spec.hw_model)
    model = ModelWrapper(str(path))
    if init_dir is None:  # a build's simulation: every node from the files the build folder holds
        from hw.rtl.stitch import plan_accelerator

        stand_ins = [note for note in plan_accelerator(model).notes
                     if "repository" in note or "step_hw_codegen not run" in note]
        if stand_ins:
            raise OnebitError(f"{NAME}: {stand_ins[0]}; the build folder lacks files Vivado would receive: "
                              "rerun `onebit build`")
    started = time.perf_counter()
    sim = RTLAccelerator(model, workdir=init_dir, fifo_depth=fifo_depth, artifacts=build_dir / "hw" / NAME,
                         overwrite_init_files=init_dir is None)
    build_seconds = time.perf_counter() - started

    class _Backend:  # the driver's model backend, with stream options and run statistics
        runs: list = []

        def run(self, packed: np.ndarray) -> np.ndarray:
            out = sim.run(packed, **stream_options)
            self.runs.append(sim.last)
            return out

    backend = _Backend()
    driver = Accelerator(spec, backend="model", model=backend, batch_size=chunk)
    reference = Accelerator(spec, backend="model", model=AcceleratorModel.from_file(path), batch_size=chunk)
    raw, scores, expected = [], [], []
    for start in progress_bar(range(0, len(images), chunk), desc=NAME, unit="chunk", enabled=progress):
        part = images[start:start + chunk]
        prediction = driver.predict(part)
        raw.append(prediction.raw)
        scores.append(prediction.scores)
        expected.append(reference.predict(part).raw)
    raw_all, expected_all = np.concatenate(raw), np.concatenate(expected)
    mismatching = np.flatnonzero(np.any(raw_all != expected_all, axis=1))
    suspects = sim.init_file_differences() if len(mismatching) else {}
    runs = backend.runs
    steady = [r.cycles_per_image for r in runs if len(r.stream.image_done) >= 3]
    cycles = float(np.mean(steady)) if steady else runs[0].cycles_per_image
    design = sim.design
    waits = runs[-1].stream_waits(design.stages)
    nodes = []
    for stage in design.nodes:
        row = {"node": stage.name, "op_type": stage.op_type, "kind": stage.kind, "exp_cycles": stage.exp_cycles,
               "input_wait_cycles": waits.get(stage.name, 0), "status": "ok"}
        if stage.name in suspects:
            row["status"] = f"mismatch: {suspects[stage.name]}"
        nodes.append(row)
    return {
        "samples": int(len(images)), "scores": np.concatenate(scores), "raw": raw_all,
        "mismatching": mismatching.tolist(), "suspect_nodes": suspects,
        "cycles_per_image": cycles, "first_image_latency": runs[0].first_image_latency,
        "estimated_bottleneck_cycles": design.bottleneck_cycles,
        "fifo_depths": {s.name: s.parameters["DEPTH"] for s in design.stages if s.kind == "fifo"},
        "fifo_sizing": {k: v for k, v in (sim.sizing or {}).items() if k != "key"} or None,
        "fifo_source": sim.fifo_source,
        "width_converters": [s.name for s in design.stages if s.kind == "dwc"],
        "nodes": nodes, "build_seconds": round(build_seconds, 2), "notes": design.notes,
        "simulated_cycles": int(sum(r.stream.cycles for r in runs)),
    }


def mismatch_message(result: dict[str, Any]) -> str | None:
    """One line naming the nodes behind a mismatch (None when the outputs agree)."""
    if not result["mismatching"]:
        return None
    n = len(result["mismatching"])
    if result["suspect_nodes"]:
        named = "; ".join(f"{k}: {v}" for k, v in result["suspect_nodes"].items())
    else:
        named = "no init file differs from the model: the RTL itself or the stitching differs"
    return f"{NAME}: {n} of {result['samples']} images differ from the accelerator model; {named}"


def _naming_the_node(message: str) -> str:
    """`node N: message` when the message points into node N's code-gen folder (a compiler error in the
    build's copy of a file), else the message."""
    match = re.search(r"code_gen_ipgen_(\w+?)_[A-Za-z0-9_]{8}/", message)
    return f"node {match.group(1)}: {message}" if match and not message.startswith("node ") else message


class RTLAcceleratorLevel:
    """The hw/check/levels.py interface (name, default, skipped, run)."""

    name = NAME
    default = True  # cheap where it cannot run: no verilator, or HLS nodes in the partition (--mvau hls)

    def skipped(self) -> str | None:
        return skip_reason()

    def run(self, ctx) -> Any:
        from hw.check.levels import LevelOutcome

        started = time.perf_counter()
        try:
            result = run_rtl_accelerator(ctx.build_dir, ctx.images, final_model=ctx.final_model,
                                         progress=ctx.progress)
        except OnebitError as error:
            if "FINN HLS nodes" in str(error):  # only Vitis HLS (absent) turns these into RTL
                return LevelOutcome.skip(str(error))
            raise OnebitError(_naming_the_node(str(error))) from None
        except Exception as error:  # a failure of this level, by node where the message shows it
            named = _naming_the_node(str(error))
            if named == str(error):
                raise
            raise OnebitError(f"{named} ({type(error).__name__})") from None
        message = mismatch_message(result)
        how = (f"whole accelerator in Verilator ({len(result['nodes'])} nodes, FIFOs, width converters), "
               f"driver-packed DMA bytes; {result['cycles_per_image']:.0f} cycles/image "
               f"(FINN estimate {result['estimated_bottleneck_cycles']}), first image "
               f"{result['first_image_latency']} cycles; FIFO depths {result['fifo_source']}")
        if message:
            how += "; " + message
        return LevelOutcome(executed=True, samples=result["samples"], integer_mismatches=len(result["mismatching"]),
                            argmax_mismatches=None, first_mismatches=result["mismatching"][:10], how=how,
                            seconds=time.perf_counter() - started, nodes=result["nodes"], scores=result["scores"])


LEVEL = RTLAcceleratorLevel()
