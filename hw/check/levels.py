"""The common shape of the verification levels that run generated hardware (rtl_nodes, cppsim, ...).

verify.py's score levels (pytorch_trained .. finn_hw_layers) each give class scores for every image. The
levels here execute what FINN generated (Verilog in Verilator, HLS C++ in FINN's cppsim, later the whole
stitched accelerator) and may need a tool that is absent; each is one module with a `LEVEL` object:

    class MyLevel:
        name = "my_level"                 # the key in verification.levels and --levels
        default = True                    # runs when the user names no --levels
        def skipped(self) -> str | None   # "skipped: <what is missing> (<how to get it>)", None = can run
        def run(self, ctx: LevelContext) -> LevelOutcome

registered by adding its module to LEVEL_MODULES. `LevelOutcome.entry()` has the fields every level has
(status, executed, samples, integer_mismatches, argmax_mismatches, first_mismatches, how, seconds) plus `nodes`,
one row per hardware node, and `scores` where a level computes class scores (verify compares those with
the collapsed integer model like the other levels). Node levels compare each node with FINN's Python execution of
the same node on the same inputs: the node's real inputs for the first test images (captured here from
the HW-layer graph, `capture_node_inputs`) and random inputs over the node's input datatype.

Every level that has something to run ends in one of three outcomes (`status`, hw/check/verdict.py applies them):
  passed   it ran and every output matched (the counts say on how much)
  failed   mismatches, or the design could not be run: a compile error, a simulator that exits non-zero or
           complains (a missing init file, an assertion), any exception; `error` holds the first error line
  skipped  a tool or dependency is absent (`reason` says which and how to get it); the exit status ignores it
A level skips only through `skipped()` or by returning `LevelOutcome.skip(...)`; an exception is a failure.
A build with no node of the level's kind (rtl_nodes on a build whose nodes are all HLS) has nothing for it to
run: `LevelOutcome.nothing_to_simulate(why)`, status "nothing to simulate", which verified nothing and so is
neither a pass nor a skip (no tool is missing); the exit status ignores it.
"""
from __future__ import annotations

import importlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hw.check.python_exec import fast_python_execution
from onebit.errors import OnebitError
from hw.check.verdict import NOTHING_TO_SIMULATE, first_line

# name -> module defining LEVEL; order = report order (after verify.LEVELS)
LEVEL_MODULES: dict[str, str] = {
    "rtl_nodes": "hw.check.rtl_nodes",
    "cppsim": "hw.check.cppsim",
    "rtl_accelerator": "hw.check.rtl_accelerator",
}
DEFAULT_NODE_SAMPLES = 100  # test images per node (onebit build --node-samples)
DEFAULT_RANDOM_SAMPLES = 20  # random input frames per node


@dataclass
class LevelContext:
    build_dir: Path                 # the build folder (finn/, hw/)
    final_model: Path               # finn/step_hw_codegen.onnx: specialized nodes with their generated code
    hw_layers_model: Path           # finn/step_create_dataflow_partition.onnx: the Python-executed HW graph
    images: np.ndarray              # test images (uint8, N x C x H x W), already cut to the level's sample count
    random_samples: int = DEFAULT_RANDOM_SAMPLES
    progress: bool = False
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # level-specific (e.g. nodes=[names])
    _captured: dict[str, np.ndarray] | None = None

    def node_inputs(self, tensor_names: list[str]) -> dict[str, np.ndarray]:
        """Tensor values (N x tensor shape) of the HW-layer graph on `images`, computed once per context."""
        missing = [t for t in tensor_names if self._captured is None or t not in self._captured]
        if missing:
            captured = capture_node_inputs(self.hw_layers_model, self.images, missing, self.progress)
            self._captured = {**(self._captured or {}), **captured}
        return {t: self._captured[t] for t in tensor_names}


PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass
class LevelOutcome:
    executed: bool                        # the design ran to a comparison (False: skipped, or an error first)
    reason: str | None = None             # why skipped ("skipped: ...")
    samples: int = 0
    integer_mismatches: int = 0
    argmax_mismatches: int | None = None  # node levels compare node outputs, not class scores
    first_mismatches: list[int] = field(default_factory=list)
    how: str = ""
    seconds: float = 0.0
    nodes: list[dict[str, Any]] = field(default_factory=list)
    scores: np.ndarray | None = None
    error: str | None = None              # the first error line of a design that could not be run
    nothing: str | None = None            # why the build has nothing for this level: no node of its kind

    @classmethod
    def skip(cls, reason: str) -> "LevelOutcome":
        return cls(executed=False, reason=reason if reason.startswith("skipped") else f"skipped: {reason}")

    @classmethod
    def nothing_to_simulate(cls, why: str) -> "LevelOutcome":
        return cls(executed=False, nothing=why)

    @classmethod
    def failure(cls, error: str, **fields: Any) -> "LevelOutcome":
        return cls(executed=False, error=error, **fields)

    @property
    def status(self) -> str:
        if self.error is not None:
            return FAILED
        if self.nothing is not None:
            return NOTHING_TO_SIMULATE
        if not self.executed:
            return SKIPPED
        return FAILED if self.integer_mismatches else PASSED

    def entry(self) -> dict[str, Any]:
        if self.error is not None:
            return {"status": FAILED, "executed": False, "error": self.error, "reason": f"failed: {self.error}",
                    "how": self.how, "seconds": round(self.seconds, 2), "nodes": self.nodes}
        if self.nothing is not None:
            return {"status": NOTHING_TO_SIMULATE, "executed": False, "reason": f"{NOTHING_TO_SIMULATE}: {self.nothing}",
                    "how": self.how, "seconds": round(self.seconds, 2), "nodes": []}
        if not self.executed:
            return {"status": SKIPPED, "executed": False, "reason": self.reason, "how": self.how,
                    "seconds": round(self.seconds, 2), "nodes": self.nodes}
        return {"status": self.status, "executed": True, "samples": self.samples,
                "integer_mismatches": self.integer_mismatches,
                "argmax_mismatches": self.argmax_mismatches, "first_mismatches": self.first_mismatches,
                "how": self.how, "seconds": round(self.seconds, 2), "nodes": self.nodes}


def failed_nodes_error(rows: list[dict[str, Any]]) -> str | None:
    """'node N: <its error>' of the first node row that could not be run (status failed...), else None."""
    bad = [r for r in rows if str(r.get("status", "")).startswith(("failed", "not compiled"))]
    if not bad:
        return None
    more = f" (and {len(bad) - 1} more node(s))" if len(bad) > 1 else ""
    return f"node {bad[0]['node']}: {bad[0]['status']}{more}"[:400]


class Level(Protocol):
    name: str
    default: bool

    def skipped(self) -> str | None: ...

    def run(self, ctx: LevelContext) -> LevelOutcome: ...


def get_level(name: str) -> Level:
    if name not in LEVEL_MODULES:
        raise KeyError(name)
    return importlib.import_module(LEVEL_MODULES[name]).LEVEL


def run_level(name: str, ctx: LevelContext) -> dict[str, Any]:
    """The level's report entry: passed, failed (mismatches, or any error running it) or skipped (a tool
    or dependency absent). An exception is a failure with its first line, never a skip."""
    started = time.perf_counter()
    level = get_level(name)
    reason = level.skipped()
    if reason:
        return LevelOutcome.skip(reason).entry()
    try:
        with fast_python_execution():  # the levels' FINN Python references and input capture: same values, faster
            outcome = level.run(ctx)
    except Exception as error:  # reported as this level's failure, never fatal for the build
        outcome = LevelOutcome.failure(first_line(error))
    if outcome.error is None and outcome.executed:  # a node that could not be run fails the level by name
        outcome.error = failed_nodes_error(outcome.nodes)
        if outcome.error is not None:
            outcome = LevelOutcome.failure(outcome.error, how=outcome.how, nodes=outcome.nodes)
    outcome.seconds = time.perf_counter() - started
    entry = outcome.entry()
    if outcome.scores is not None and outcome.error is None:
        entry["scores"] = outcome.scores
    return entry


def parse_levels(text: str | None, known: tuple[str, ...]) -> list[str] | None:
    """--levels 'a,b' -> the extra levels selected (None = defaults); unknown names raise ValueError."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return list(LEVEL_MODULES)
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in LEVEL_MODULES and n not in known]
    if unknown:
        raise ValueError(f"unknown level(s) {', '.join(unknown)}; known: {', '.join((*known, *LEVEL_MODULES))}, all, none")
    return [n for n in names if n in LEVEL_MODULES]


def default_levels() -> list[str]:
    """The levels run when none are named: $ONEBIT_LEVELS if set (same syntax as --levels), else each
    level's own default (rtl_nodes and cppsim both: each is skipped cheaply where its tools are missing)."""
    if os.environ.get("ONEBIT_LEVELS") is not None:
        try:
            return parse_levels(os.environ["ONEBIT_LEVELS"], ()) or []
        except ValueError as error:
            raise OnebitError(f"$ONEBIT_LEVELS={os.environ['ONEBIT_LEVELS']!r}: {error}; fix or unset it") from None
    return [name for name in LEVEL_MODULES if get_level(name).default]


# ---------------------------------------------------------------------------------------------------
# shared helpers of node levels

def host_input(model, images: np.ndarray) -> np.ndarray:
    """`images`, or their thresholded bits (N, bits) where the graph's input is bit-packed on the host
    (hw/finn/binary_input.py): the driver's own function, so every level sees what the accelerator gets."""
    from hw.driver.input_packing import PACKING_KEY, threshold_images

    text = model.get_metadata_prop(PACKING_KEY)
    return threshold_images(images, json.loads(text)) if text else images


def graph_input(model, images: np.ndarray) -> tuple[str, np.ndarray]:
    """(input name, images shaped for the HW-layer graph): NHWC for CNN graphs, NCHW flatten for MLPs.

    The same layout rule as verify._graph_runner (FINN's streamliner moves the NCHW->NHWC transpose to the host).
    """
    name = model.graph.input[0].name
    shape = model.get_tensor_shape(name)
    x = host_input(model, images)
    if x.ndim == 4 and len(shape) == 4 and list(shape[1:]) == [x.shape[2], x.shape[3], x.shape[1]] \
            and list(shape[1:]) != list(x.shape[1:]):
        x = x.transpose(0, 2, 3, 1)
    return name, x.reshape(len(x), *shape[1:]).astype(np.float32)


def capture_node_inputs(hw_layers_model: Path, images: np.ndarray, tensors: list[str],
                        progress: bool = False) -> dict[str, np.ndarray]:
    """Values of `tensors` while FINN executes the HW-layer graph on each image (stacked, N x shape).

    The specialized nodes of the final graph keep the tensor names of the HW-layer graph they came from,
    so these are exactly the inputs the generated node sees in the accelerator for those images.
    """
    from finn.core.onnx_exec import execute_onnx
    from qonnx.core.modelwrapper import ModelWrapper

    from onebit.progress import bar as progress_bar

    model = ModelWrapper(str(hw_layers_model))
    known = {t for n in model.graph.node for t in (*n.input, *n.output)} | {i.name for i in model.graph.input}
    absent = [t for t in tensors if t not in known]
    if absent:
        raise RuntimeError(f"tensors {absent[:3]} of the final graph are not in {Path(hw_layers_model).name}; "
                           "the build's step models do not belong together, rebuild")
    name, x = graph_input(model, images)
    values: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    with fast_python_execution():
        for i in progress_bar(range(len(x)), desc="capture node inputs", unit="img", enabled=progress):
            context = execute_onnx(model, {name: x[i:i + 1]}, return_full_exec_context=True)
            for t in tensors:
                values[t].append(np.asarray(context[t]))
    return {t: np.concatenate(v) for t, v in values.items()}


def random_frames(dtype, shape: tuple[int, ...], count: int, seed: int) -> np.ndarray:
    """`count` frames over the datatype's whole range: all-max, all-min, then uniform (count x shape)."""
    rng = np.random.default_rng(seed)
    lo, hi = int(dtype.min()), int(dtype.max())
    frames = rng.integers(lo, hi + 1, size=(count, *shape)).astype(np.float32)
    if dtype.get_canonical_name() == "BIPOLAR":
        frames = np.where(frames > 0, 1, -1).astype(np.float32)
    if count >= 1:
        frames[0] = hi
    if count >= 2:
        frames[1] = lo
    return frames


def selected_nodes(ctx: LevelContext, of_kind) -> tuple[Any, list]:
    """(final model, its nodes that `of_kind(model)` lists, narrowed to ctx.options["nodes"] when given)."""
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(ctx.final_model))
    nodes = of_kind(model)
    wanted = ctx.options.get("nodes")
    return model, [n for n in nodes if n.name in wanted] if wanted else nodes


def python_node_output(model, node, inputs: dict[str, np.ndarray], exec_mode: str | None, batch: int = 1) -> np.ndarray:
    """FINN's Python execution of one node: its weights/thresholds from the model's initializers.

    `batch` > 1 only for nodes whose Python model follows the batch of its input (callers check against batch 1).
    """
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    if exec_mode is not None:
        inst.set_nodeattr("exec_mode", exec_mode)
    context = {t: model.get_initializer(t) for t in node.input if model.get_initializer(t) is not None}
    context.update(inputs)
    for o, out in enumerate(node.output):
        context[out] = np.zeros((batch, *inst.get_normal_output_shape(o)[1:]), dtype=np.float32)
    inst.execute_node(context, model.graph)
    return np.asarray(context[node.output[0]])


def cache_root() -> Path:
    """onebit's build cache: $ONEBIT_CACHE, else $XDG_CACHE_HOME/onebit, else ~/.cache/onebit."""
    if os.environ.get("ONEBIT_CACHE"):
        return Path(os.environ["ONEBIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onebit"


def mismatch_rows(reference: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Indices of frames (axis 0) where any entry differs."""
    diff = np.any((reference != actual).reshape(len(reference), -1), axis=1)
    return np.flatnonzero(diff)


def node_table(levels: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows: one per hardware node of every level that has node rows (empty when none has)."""
    rows = []
    for name, entry in levels.items():
        for node in entry.get("nodes") or []:
            timing = ", ".join(f"{k} {node[k]}" for k in ("verilator_build", "compile_seconds", "sim_seconds", "cycles")
                               if k in node)
            rows.append(f"| {name} | {node['node']} | {node['op_type']} | {node.get('images', '')} + "
                        f"{node.get('random_frames', '')} random | {node.get('mismatching_images', '')} / "
                        f"{node.get('mismatching_random', '')} | {node['status']} | {timing} |")
    if not rows:
        return []
    return ["", "| level | node | op | frames (test images + random) | mismatching (images / random) | status | time |",
            "|---|---|---|---|---|---|---|", *rows]
