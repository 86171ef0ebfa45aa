"""FINN build of a onebit QONNX model with finn-plus' own builder steps.

`build_accelerator(qonnx, out_dir, board, folding)` runs FINN's step functions (finn.builder.
build_dataflow_steps) one by one with one `DataflowBuildConfig`, saving the model after every step as
`finn/<step>.onnx` and naming the step when one fails. We call the step functions instead of
`build_dataflow_cfg` because the latter replaces sys.stdout/sys.stderr and the root logger for the whole
process (finn/builder/build_dataflow.py: setup_logging), which would swallow our progress bars and
errors; the steps and their configuration are FINN's own either way.

onebit's steps sit between FINN's, each a small documented graph edit (see their docstrings):
`step_onebit_uint8_input` (the accelerator reads raw UINT8 pixels; drop the identity input threshold;
`step_onebit_drop_input_identity` does it again after streamlining, for imported models' [0, 1] inputs),
`step_onebit_clip_thresholds` (thresholds clipped to what their input can reach, hw/finn/thresholds.py),
`step_onebit_binary_input` (binary-input networks: the pixel threshold unfoldable, or on the host with
bit-packed input; hw/finn/binary_input.py) and `step_onebit_split_score_affine` (the accelerator streams
the last layer's popcounts; the exact integer map z = 2p - n to the class scores runs on the host). Steps that need Vivado, Vitis HLS,
finn-hlslib or XSI run only where those tools exist; otherwise they are listed in skipped.txt.

The whole `onebit build` pipeline (checkpoint -> collapse -> QONNX -> this build -> checks -> report ->
deployment package) is hw/pipeline.py.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hw.boards import Board
from hw.finn.env import SKIP_RTLSIM_ENV, ToolStatus, import_finn_steps, tool_status
from hw.finn.folding import FoldingSpec, auto_fold_function, extract_folding
from hw.finn.partition import resolve_final_model
from hw.finn.thresholds import step_onebit_clip_thresholds
from onebit.atomic import write_atomic, write_text_atomic
from onebit.errors import OnebitError, first_line

SCORE_AFFINE_KEY = "onebit_score_affine"

# FINN steps that run everywhere (pure Python): streamlining to XNOR-popcount, HW layers, folding,
# estimates and HLS/RTL code generation. The folding steps are chosen per FoldingSpec in _step_list.
FRONTEND_HEAD = ["step_qonnx_to_finn", "step_tidy_up", "step_onebit_uint8_input", "step_streamline",
                 "step_onebit_drop_input_identity", "step_onebit_clip_thresholds", "step_onebit_binary_input",
                 "step_onebit_split_score_affine", "step_convert_to_hw", "step_minimize_bit_width_initial",
                 "step_create_dataflow_partition", "step_specialize_layers"]
FRONTEND_TAIL = ["step_minimize_bit_width", "step_generate_estimate_reports", "step_hw_codegen"]

_HOW_TO_GET = ("install AMD Vivado + Vitis HLS 2024.2 (the version finn-plus 1.6.1 supports) and put them on "
               "PATH (source settings64.sh), then `finn deps update` (fetches finn-hlslib, builds XSI); or "
               "use the onebit Docker image")
# FINN steps that need external tools: (step, tools it needs). Order = FINN's default flow.
TOOL_STEPS: list[tuple[str, tuple[str, ...]]] = [
    ("step_hw_ipgen", ("vitis_hls", "finn_hlslib")),
    ("step_set_fifo_depths", ("vivado", "vitis_hls", "finn_hlslib", "xsi")),
    ("step_create_stitched_ip", ("vivado",)),
    ("step_measure_rtlsim_performance", ("vivado", "xsi")),
    ("step_out_of_context_synthesis", ("vivado",)),
    ("step_prepare_synthesis", ("vivado",)),
    ("step_synthesize_bitfile", ("vivado",)),
    ("step_make_driver", ("vivado",)),  # needs the bitfile flow's IODMA-wrapped model
    ("step_deployment_package", ("vivado",)),
]


class BuildError(OnebitError):
    """A FINN step failed or the graph is not the XNOR-popcount dataflow graph onebit expects."""


# ---------------------------------------------------------------------------------------------------
# onebit's two graph edits (custom builder steps: same signature as FINN's)

def step_onebit_uint8_input(model, cfg):
    """Annotate the graph input UINT8 and drop the input quantizer when it is an exact identity on UINT8.

    Why: the model input is raw pixels 0..255 (docs/design.md §1). Brevitas exports the 8-bit input
    quantizer (scale 1, zero point 0) as a Quant node that FINN turns into a MultiThreshold with the 255
    thresholds 0.5, 1.5, .., 254.5 -- the identity on UINT8. Left in, FINN builds a Thresholding layer
    with float thresholds on a FLOAT32 input (~100k LUT in its estimate) that does nothing. With the
    input annotated UINT8 the identity goes and the first MVAU reads the pixels. Any other threshold
    (the binary-input variant's pixel >= 128) stays: it is part of the accelerator.
    """
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.infer_datatypes import InferDataTypes

    graph_input = model.graph.input[0].name
    model.set_tensor_datatype(graph_input, DataType["UINT8"])
    node = model.find_consumer(graph_input)
    # Layout-only nodes (flatten of the MLP input) may sit in front of the quantizer.
    while node is not None and node.op_type in ("Reshape", "Flatten", "Transpose"):
        node = model.find_consumer(node.output[0])
    if node is not None and node.op_type == "MultiThreshold" and _is_uint8_identity(model, node, getCustomOp(node)):
        producer_output, consumer_input = node.input[0], node.output[0]
        for consumer in model.find_consumers(consumer_input) or []:
            for index, name in enumerate(consumer.input):
                if name == consumer_input:
                    consumer.input[index] = producer_output
        model.graph.node.remove(node)
    node = model.find_consumer(graph_input)
    # The MLP's flatten (N, C, H, W) -> (N, C*H*W) becomes a host-side reshape: the accelerator reads the
    # pixels in NCHW-flatten order (for C=1 exactly the dataset's byte order). finn-plus would otherwise
    # make it a HW Reshape layer, which has no Python execution (not in its custom-op registry), so the
    # HW-layer graph could not be verified.
    if node is not None and node.op_type == "Reshape" and node.domain in ("", "ai.onnx"):
        flat_shape = model.get_tensor_shape(node.output[0])
        if flat_shape is not None and len(flat_shape) == 2:
            for consumer in model.find_consumers(node.output[0]) or []:
                for index, name in enumerate(consumer.input):
                    if name == node.output[0]:
                        consumer.input[index] = graph_input
            model.graph.node.remove(node)
            dims = model.graph.input[0].type.tensor_type.shape.dim
            del dims[:]
            dims.add().dim_value = 1
            dims.add().dim_value = int(flat_shape[1])
            model.set_metadata_prop("onebit_input_layout", json.dumps({"host_reshape": "NCHW flatten",
                                                                       "accelerator_input_shape": [1, int(flat_shape[1])]}))
    model = model.transform(InferDataTypes())
    return model


def _is_uint8_identity(model, node, inst) -> bool:
    thresholds = model.get_initializer(node.input[1])
    if thresholds is None or thresholds.shape[-1] != 255:
        return False
    out_dtype = inst.get_nodeattr("out_dtype")
    out_dtype = out_dtype.decode() if isinstance(out_dtype, bytes) else out_dtype
    # On integer pixels x >= t is x >= ceil(t): thresholds with ceil(t_k) = k + 1 (0.5, 1.5, .. as exported,
    # or 1, 2, .. after streamlining rounded them) count the pixel value itself.
    expected = np.arange(255, dtype=np.float64) + 1.0
    return (out_dtype == "UINT8" and float(inst.get_nodeattr("out_scale")) == 1.0
            and float(inst.get_nodeattr("out_bias")) == 0.0
            and bool(np.all(np.ceil(thresholds.astype(np.float64)) == expected[None, :])))


def step_onebit_drop_input_identity(model, cfg):
    """After streamlining, drop the input MultiThreshold again when it has become the identity on UINT8.

    Why: a QONNX model from elsewhere (export/qonnx_import.py) quantizes a [0, 1] input, e.g. Brevitas'
    Uint8ActPerTensorFloat with scale 1/255; once streamlining absorbed the declared x/255 into it, its
    thresholds are 1..255 on the raw pixels, which FINN would build as a ~25k-LUT Thresholding layer that
    does nothing. Same test as step_onebit_uint8_input; a no-op for onebit's own exports.
    """
    return step_onebit_uint8_input(model, cfg)


def step_onebit_split_score_affine(model, cfg):
    """Make the accelerator output the last layer's popcounts p; z = 2p - n runs on the host.

    Why: streamlining turns the bipolar score layer into XnorPopcountMatMul (p = number of agreeing
    bits) followed by Mul(2a) and Add(-n a), which restore a*z with z = 2p - n (a = the layer's scale, 1
    for onebit's plain model). finn-plus would map those two float ops to ElementwiseMul/Add layers with
    FLOAT32 arithmetic in the fabric. Removing them keeps the accelerator integer-only; the exact integer
    affine is recorded in the model's metadata (and report.json) for the driver and the verification.
    """
    graph_output = model.graph.output[0].name
    add = model.find_producer(graph_output)
    mul = model.find_producer(add.input[0]) if add is not None and add.op_type == "Add" else None
    xnor = model.find_producer(mul.input[0]) if mul is not None and mul.op_type == "Mul" else None
    if xnor is None or xnor.op_type != "XnorPopcountMatMul":
        found = " -> ".join(n.op_type for n in model.graph.node[-3:])
        raise BuildError(f"the streamlined graph ends in {found}, not XnorPopcountMatMul -> Mul -> Add; "
                         "the score layer must be a binary layer on binary activations")
    scale = model.get_initializer(mul.input[1])
    offset = model.get_initializer(add.input[1])
    fan_in = int(model.get_initializer(xnor.input[1]).shape[0])
    if scale is None or offset is None or scale.size != 1 or offset.size != 1:
        raise BuildError("the score layer's Mul/Add are not scalar constants: a per-class scale or offset "
                         "cannot be moved off the accelerator exactly; the score layer needs one scale")
    a, b = float(scale.reshape(-1)[0]), float(offset.reshape(-1)[0])
    alpha = a / 2.0
    if not alpha > 0:
        raise BuildError(f"score affine y = {a} p + {b} (node {mul.name}) has a scale <= 0, which changes which class "
                         "wins; refusing")
    # y = a p + b = alpha (2p - n) + beta: beta is 0 for onebit's own exports; a positive scalar tail left in
    # a graph (e.g. a TensorNorm) gives beta != 0, which shifts every class alike (the argmax is z's).
    beta = b + fan_in * alpha
    if abs(beta) <= 1e-6 * fan_in * alpha:
        beta = 0.0
    popcount = xnor.output[0]
    popcount_dtype = model.get_tensor_datatype(popcount)
    model.graph.node.remove(mul)
    model.graph.node.remove(add)
    # The graph output keeps its name and shape (N, classes) but now carries p.
    xnor.output[0] = graph_output
    for value in [v for v in model.graph.value_info if v.name in (popcount, mul.output[0])]:
        model.graph.value_info.remove(value)
    model.set_tensor_datatype(graph_output, popcount_dtype)
    model.set_metadata_prop(SCORE_AFFINE_KEY, json.dumps(
        {"form": "popcount", "n": fan_in, "alpha": alpha, "beta": beta, "scores": "z = 2*p - n",
         "float_scores": f"y = {alpha:.6g} * z {beta:+.6g}"}))
    return model


_ONEBIT_STEPS: dict[str, Callable] = {
    "step_onebit_uint8_input": step_onebit_uint8_input,
    "step_onebit_drop_input_identity": step_onebit_drop_input_identity,
    "step_onebit_split_score_affine": step_onebit_split_score_affine,
    "step_onebit_clip_thresholds": step_onebit_clip_thresholds,
}


# ---------------------------------------------------------------------------------------------------
# the build

@dataclass
class BuildResult:
    out_dir: Path
    board: Board
    folding: FoldingSpec
    steps_run: list[str]
    step_seconds: dict[str, float]
    skipped: list[dict[str, str]]
    tools: ToolStatus
    final_model: Path
    score_affine: dict[str, Any]
    extras: dict[str, Any] = field(default_factory=dict)

    def step_model(self, step: str) -> Path:
        return self.out_dir / "finn" / f"{step}.onnx"


def _step_list(folding: FoldingSpec, mvau: str = "hls", fifo_sizing: str = "auto") -> list[str]:
    if folding.mode == "auto":
        middle = ["step_onebit_auto_fold"]
    elif folding.mode == "file":
        middle = ["step_apply_folding_config"]
    else:
        middle = ["step_target_fps_parallelization", "step_apply_folding_config"]
    tail = list(FRONTEND_TAIL)
    if mvau == "rtl":  # after folding and bit-width minimisation: onebit's RTL nodes (hw/finn/rtl_mvau.py)
        tail.insert(tail.index("step_minimize_bit_width") + 1, "step_onebit_rtl_nodes")
        if fifo_sizing != "finn":  # on the generated code: onebit sizes the FIFOs FINN stitches (fifo_depths.py)
            tail.append("step_onebit_fifo_depths")
    return FRONTEND_HEAD + middle + tail


def _make_config(out_dir: Path, board: Board, folding: FoldingSpec, tools: ToolStatus, keep_autofold: bool = False):
    """FINN's DataflowBuildConfig for this build, passed through finn-plus' own DataflowBuildConfig.construct_from
    (which insists on target_fps or an existing folding_config_file)."""
    from finn.builder.build_dataflow_config import (AutoFIFOSizingMethod, DataflowBuildConfig,
                                                    DataflowOutputType, ShellFlowType)

    outputs = [DataflowOutputType.ESTIMATE_REPORTS]
    if tools.bitstream_flow:
        outputs += [DataflowOutputType.STITCHED_IP, DataflowOutputType.BITFILE, DataflowOutputType.PYNQ_DRIVER,
                    DataflowOutputType.DEPLOYMENT_PACKAGE]
        if tools.full_flow:
            outputs.insert(2, DataflowOutputType.RTLSIM_PERFORMANCE)
    folding_file = folding.file if folding.mode == "file" else None
    if folding.mode == "auto":
        # The auto-fold step sets PE/SIMD itself (no FINN step reads this file); it writes its choice here
        # (_autofold_step), so the config names the folding the accelerator really has.
        folding_file = out_dir / "finn" / AUTOFOLD_FOLDING
        if not (keep_autofold and folding_file.is_file()):  # a resumed build keeps the folding it chose
            write_text_atomic(folding_file, json.dumps({"Defaults": {}}, indent=2))
    cfg = DataflowBuildConfig(
        output_dir=str(out_dir),
        synth_clk_period_ns=board.clock_ns,
        board=board.finn_board,
        fpga_part=board.fpga_part,
        shell_flow_type=ShellFlowType[board.shell_flow],
        generate_outputs=outputs,
        target_fps=folding.target_fps if folding.mode == "target_fps" else None,
        folding_config_file=folding_file,
        save_intermediate_models=True,
    )
    if tools.bitstream_flow and not tools.full_flow:
        # ONEBIT_SKIP_RTLSIM (hw/finn/env.py): FINN's own strategy that inserts the FIFOs without simulation.
        cfg.auto_fifo_strategy = AutoFIFOSizingMethod.FORCE_MINIMAL_FIFOS
    try:
        return DataflowBuildConfig.construct_from(cfg)
    except Exception as error:  # FINNConfigurationError
        raise BuildError(f"finn-plus rejects the build configuration: {error}") from None


AUTOFOLD_FOLDING = "autofold_folding.json"


def _autofold_step(fold: Callable, out_dir: Path) -> Callable:
    def step(model, cfg):
        model = fold(model, cfg)
        write_text_atomic(out_dir / "finn" / AUTOFOLD_FOLDING, json.dumps(extract_folding(model), indent=2))
        return model

    return step


def build_steps(folding: FoldingSpec, mvau: str = "hls", tools: ToolStatus | None = None,
                fifo_sizing: str = "auto") -> tuple[list[str], list[dict[str, str]]]:
    """This build's step list (FINN's names, onebit's `step_onebit_*`) and the tool steps skipped here."""
    tools = tool_status() if tools is None else tools
    skipped = _skipped_steps(tools)
    skipped_names = {row["step"] for row in skipped}
    return (_step_list(folding, mvau, fifo_sizing) + [name for name, _ in TOOL_STEPS if name not in skipped_names],
            skipped)


ONEBIT_STEP_NAMES = frozenset(list(_ONEBIT_STEPS) + ["step_onebit_binary_input", "step_onebit_auto_fold",
                                                     "step_onebit_rtl_nodes", "step_onebit_fifo_depths"])
DATAFLOW_CONFIG = "dataflow_build_config.json"


def build_accelerator(qonnx_path: str | Path, out_dir: str | Path, board: Board, folding: FoldingSpec,
                      progress: bool = True, mvau: str = "hls", start_from: str | None = None,
                      stop_after: str | None = None, fingerprint: dict[str, Any] | None = None,
                      input_packing: str = "auto", fifo_sizing: str = "auto") -> BuildResult:
    """Run FINN's steps on a QONNX model; every step's model lands in `out_dir/finn/<step>.onnx`.
    mvau: "hls" (FINN's MVAU_hls / Pool_hls) or "rtl" (onebit's RTL nodes, hw/finn/rtl_mvau.py).
    start_from / stop_after: run part of the step list (hw/finn/steps.py); a stopped build's result has
    `stopped_after` set and no folding.json/skipped.txt written. fingerprint: what the caller's models depend
    on beyond board, clock, folding and mvau (e.g. the checkpoint's sha256), checked on --start-from.
    input_packing: "auto", "host" or "none" for binary-input networks (hw/finn/binary_input.py).
    fifo_sizing: who sizes the stitched FIFOs of an rtl build (hw/finn/fifo_depths.py): "auto" (onebit
    where it can), "onebit" (or fail) or "finn" (FINN's step_set_fifo_depths)."""
    from hw.finn.fifo_depths import check_fifo_sizing
    from qonnx.core.modelwrapper import ModelWrapper

    from hw.finn.steps import StepRecord, plan

    out_dir = Path(out_dir).resolve()
    (out_dir / "finn").mkdir(parents=True, exist_ok=True)
    # FINN's scratch (HLS/RTL code-gen folders, partition models) is the build folder's hw/.
    finn_steps = import_finn_steps(out_dir / "hw")
    tools = tool_status()
    if mvau not in ("hls", "rtl"):
        raise OnebitError(f"mvau must be 'hls' or 'rtl', got '{mvau}'")
    steps, skipped = build_steps(folding, mvau, tools, check_fifo_sizing(fifo_sizing))
    first, end = plan(steps, {row["step"]: row["missing"] for row in skipped}, start_from, stop_after)
    cfg = _make_config(out_dir, board, folding, tools, keep_autofold=first > steps.index("step_onebit_auto_fold")
                       if "step_onebit_auto_fold" in steps else False)

    lookup = dict(finn_steps.build_dataflow_step_lookup)
    lookup.update(_ONEBIT_STEPS)
    from hw.finn.binary_input import STEP_NAME as BINARY_INPUT_STEP, make_binary_input_step

    lookup[BINARY_INPUT_STEP] = make_binary_input_step(input_packing, board.axi_port_bits)
    if mvau == "rtl":
        from hw.finn.rtl_mvau import STEP_NAME, step_onebit_rtl_nodes

        lookup[STEP_NAME] = step_onebit_rtl_nodes
        from hw.finn.fifo_depths import STEP_NAME as FIFO_STEP, make_fifo_step

        lookup[FIFO_STEP] = make_fifo_step(out_dir, board.fpga_part, mvau, fifo_sizing)
    if folding.mode == "file":  # names, attributes and divisors checked against the graph first
        from hw.finn.folding_check import checked_apply_folding

        lookup["step_apply_folding_config"] = checked_apply_folding(lookup["step_apply_folding_config"], folding.file)
    if folding.mode == "auto":
        import hw.finn.autofold as autofold

        if hasattr(autofold, "make_autofold_step"):  # writes its own report next to ours
            margin = {} if folding.margin is None else {"margin": folding.margin}
            # --mvau rtl: onebit's MVAUs costed by the yosys-calibrated model, checked against the clock
            fold = autofold.make_autofold_step(board, **margin, progress=progress, mvau=mvau)
        else:
            auto_fold = auto_fold_function()
            fold = lambda model, cfg: auto_fold(model, board)  # noqa: E731
        lookup["step_onebit_auto_fold"] = _autofold_step(fold, out_dir)

    from onebit.buildfolder import sha256_file

    record = StepRecord(out_dir, {"board": board.name, "clock_ns": board.clock_ns, "folding": folding.mode,
                                  "target_fps": folding.target_fps, "margin": folding.margin,
                                  "folding_file_sha256": sha256_file(folding.file) if folding.file else None,
                                  "mvau": mvau, "steps": steps, **(fingerprint or {})}, sha256_file(qonnx_path))
    seconds: dict[str, float] = {}
    previous = Path(qonnx_path)
    if first > 0:
        previous, seconds = record.resume(steps, first)
    record.save()
    # FINN's own record of its configuration, as finn-plus' DataflowBuildConfig serialises it.
    write_text_atomic(out_dir / DATAFLOW_CONFIG, json.dumps(json.loads(cfg.to_json()), indent=2) + "\n")
    model = ModelWrapper(str(previous))
    log_path = out_dir / "build.log"
    bar = _progress(steps[first:end], progress)
    with open(log_path, "a") as log_file, _finn_logging_to(log_file):
        for step in bar:
            if hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(step.removeprefix("step_"))
            started = time.perf_counter()
            try:
                model = lookup[step](model, cfg)
            except OnebitError:
                raise
            except Exception as error:  # FINN raises anything from AssertionError to FINNUserError
                log_file.write(f"\n[{step}] failed:\n{traceback.format_exc()}")
                raise BuildError(f"FINN step {step} failed: {first_line(error)} "
                                 f"(input model {previous}, traceback in {log_path})") from None
            seconds[step] = round(time.perf_counter() - started, 3)
            previous = out_dir / "finn" / f"{step}.onnx"
            write_atomic(previous, lambda tmp: model.save(str(tmp)))  # never a half-written model (disk full)
            record.add(step, previous, seconds[step])
    stopped_after = steps[end - 1] if end < len(steps) else None
    record.finish(stopped_after)
    if stopped_after is not None:
        result = BuildResult(out_dir=out_dir, board=board, folding=folding, steps_run=steps[:end], step_seconds=seconds,
                             skipped=skipped, tools=tools, final_model=previous, score_affine={})
        result.extras.update(stopped_after=stopped_after, next_step=steps[end], steps_reused=steps[:first])
        return result
    # After ZynqBuild/VitisBuild the model is the partitioned parent: onebit reads its dataflow child.
    final_model, parent = resolve_final_model(previous, out_dir)
    if parent is not None:
        model = ModelWrapper(str(final_model))
    affine_text = model.get_metadata_prop(SCORE_AFFINE_KEY)
    result = BuildResult(out_dir=out_dir, board=board, folding=folding, steps_run=steps, step_seconds=seconds,
                         skipped=skipped, tools=tools, final_model=final_model,
                         score_affine=json.loads(affine_text) if affine_text else {})
    if parent is not None:
        result.extras["partitioned_parent_model"] = str(parent)
    result.extras["mvau"] = mvau
    if first > 0:
        result.extras["steps_reused"] = steps[:first]
    from hw.finn.binary_input import input_packing_of

    packing = input_packing_of(model)
    result.extras["input_packing"] = packing or "none"
    from hw.finn.fifo_depths import fifo_summary

    fifos = fifo_summary(model) if mvau == "rtl" else None
    if fifos is None and mvau == "rtl":  # the partitioned child carries no metadata: the un-partitioned model's
        fifos = fifo_summary(ModelWrapper(str(out_dir / "finn" / "step_onebit_fifo_depths.onnx"))) \
            if (out_dir / "finn" / "step_onebit_fifo_depths.onnx").is_file() else None
    result.extras["fifo_depths"] = fifos or {"source": "finn", "why": "--fifo-sizing finn" if mvau == "rtl"
                                             else "--mvau hls"}
    write_text_atomic(out_dir / "folding.json", json.dumps(extract_folding(model), indent=2))
    write_text_atomic(out_dir / "skipped.txt", _skipped_text(skipped))
    return result


def _skipped_steps(tools: ToolStatus) -> list[dict[str, str]]:
    if tools.full_flow:
        return []
    if tools.bitstream_flow:  # XSI missing and ONEBIT_SKIP_RTLSIM=1: only the rtlsim measurement goes
        return [{"step": "step_measure_rtlsim_performance",
                 "missing": f"XSI RTL simulation, skipped on purpose ({SKIP_RTLSIM_ENV}=1; FIFOs of --mvau hls builds "
                            f"at FINN's force_minimal_fifos depths, no simulation; --mvau rtl builds take "
                            f"onebit's sizing): {tools.xsi}",
                 "how": _HOW_TO_GET}]
    rows = []
    for step, needs in TOOL_STEPS:
        missing = [getattr(tools, tool) for tool in needs if getattr(tools, tool)]
        rows.append({"step": step, "missing": "; ".join(missing) or "an earlier skipped step's output",
                     "how": _HOW_TO_GET})
    return rows


def _skipped_text(skipped: list[dict[str, str]]) -> str:
    if not skipped:
        return "none: every FINN step ran (Vivado, Vitis HLS, finn-hlslib and XSI were found)\n"
    if [row["step"] for row in skipped] == ["step_measure_rtlsim_performance"] and SKIP_RTLSIM_ENV in skipped[0]["missing"]:
        return (f"step_measure_rtlsim_performance: missing {skipped[0]['missing']}\n\n"
                "Every other FINN step ran, with step_set_fifo_depths inserting the FIFOs at onebit's sized depths "
                "(--mvau rtl, finn/onebit_fifo_config.json) or by force_minimal_fifos (--mvau hls) instead of XSI "
                "simulation.\n")
    lines = ["FINN steps not run on this machine (never faked; re-run `onebit build` where the tools exist):", ""]
    for row in skipped:
        lines.append(f"{row['step']}: missing {row['missing']}")
    lines += ["", f"How to get them: {skipped[0]['how']}."]
    return "\n".join(lines) + "\n"


def _progress(steps: list[str], enabled: bool):
    if not enabled:
        return steps
    from onebit.progress import bar

    return bar(steps, desc="FINN build", unit="step", leave=True)


class _finn_logging_to:
    """Send FINN's logging (and its prints) for the duration of the build to the build log.

    Why: FINN's transformations print and log a lot (warnings about float ops, folding notes), which
    would bury the progress bar and the report; the build log keeps all of it.
    """

    def __init__(self, stream) -> None:
        self.stream = stream

    def __enter__(self):
        import contextlib

        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(logging.Formatter("[%(name)s] %(levelname)s: %(message)s"))
        self.loggers = [logging.getLogger(name) for name in ("finn", "finn_logger", "qonnx", "py.warnings")]
        self.saved = [(lg.handlers[:], lg.propagate) for lg in self.loggers]
        for lg in self.loggers:
            lg.handlers = [self.handler]
            lg.propagate = False
        logging.captureWarnings(True)
        self.redirect = contextlib.redirect_stdout(self.stream)
        self.redirect.__enter__()
        return self

    def __exit__(self, *exc):
        self.redirect.__exit__(*exc)
        logging.captureWarnings(False)
        for lg, (handlers, propagate) in zip(self.loggers, self.saved):
            lg.handlers = handlers
            lg.propagate = propagate
        return False
