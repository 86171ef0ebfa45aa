"""Verification level `cppsim`: every `*_hls` node of the final HW graph through finn-plus' own C++ simulation.

Each HLS node (MVAU_hls, Pool_hls, ...) is cut out of the final graph with its weights and thresholds,
given a batch of frames, and run by FINN's own flow: PrepareCppSim (FINN writes the node's C++ around
finn-hlslib), CompileCppSim (FINN's g++ script), SetExecMode("cppsim") and execute_onnx. Its output is
compared with FINN's Python execution of the same node (its generic HW op) on the same inputs: the
node's real inputs for the first N test images (captured from the HW-layer graph) and random frames over
the node's input datatype. A node that does not compile is reported by name with the compiler's first
error.

What it proves: the HLS C++ FINN generated for these nodes, compiled with finn-hlslib, computes what
FINN's Python model computes. What not: HLS synthesis (the RTL Vitis HLS would produce from it, its
timing and resources), stream timing, RTL nodes (finn-plus' cppsim runs RTL nodes in Python; level
rtl_nodes simulates their Verilog).

Needs finn-hlslib and the ap_int headers, found in this order:
  finn-hlslib: $ONEBIT_FINN_HLSLIB, $FINN_DEPS/finn-hlslib, finn-plus' deps folder (`finn deps update`)
  headers:     $XILINX_HLS (a Vitis HLS installation, used as is), else $ONEBIT_AP_INT (the `include`
               folder of github.com/Xilinx/HLS_arbitrary_Precision_Types, or a folder holding ap_int.h)
               plus onebit's shims (hw/check/cppsim_shims/README.md)
otherwise the level is skipped with how to get them.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from hw.check.levels import LevelContext, LevelOutcome, cache_root, mismatch_rows, random_frames, selected_nodes
from hw.check.python_exec import execute_padded
from hw.check.verdict import first_line
from hw.rtl.verilator import simulator_complaint

HLSLIB_ENV, AP_INT_ENV = "ONEBIT_FINN_HLSLIB", "ONEBIT_AP_INT"
SHIMS = Path(__file__).resolve().parent / "cppsim_shims"
SHIM_FILES = ("hls_stream.h", "hls_vector.h", "hls_half.h", "ap_float.h", "ap_axi_sdata.h", "ap_int.h")
STUB_LIBRARIES = {"lnx64/lib/csim": ["hlsmc++-GCC46"],
                  "lnx64/tools/fpo_v7_1": ["gmp", "mpfr", "Ip_floating_point_v7_1_bitacc_cmodel"]}
HOW_TO_GET = (f"git clone https://github.com/Xilinx/finn-hlslib (finn-plus 1.6.1 pins 8d979e2) and export "
              f"{HLSLIB_ENV}=<it>, or run `finn deps update`; the Docker image has it")
HOW_TO_GET_HEADERS = (f"install Vitis HLS and export XILINX_HLS, or git clone "
                      f"https://github.com/Xilinx/HLS_arbitrary_Precision_Types and export {AP_INT_ENV}=<it>/include")
BATCH = 1000  # frames per compiled simulation run


def find_hlslib() -> Path | None:
    candidates = [os.environ.get(HLSLIB_ENV)]
    if os.environ.get("FINN_DEPS"):
        candidates.append(str(Path(os.environ["FINN_DEPS"]) / "finn-hlslib"))
    try:
        from finn.util.settings import get_settings

        candidates.append(str(Path(get_settings().finn_deps) / "finn-hlslib"))
    except Exception:  # settings not initialised (prepare_finn not called yet)
        pass
    for candidate in candidates:
        if candidate and (Path(candidate) / "mvau.hpp").is_file():
            return Path(candidate).resolve()
    return None


def real_vitis_hls() -> Path | None:
    root = os.environ.get("XILINX_HLS")
    if root and (Path(root) / "include" / "hls_stream.h").is_file() and (Path(root) / "include" / "ap_int.h").is_file():
        return Path(root)
    return None


def find_ap_int() -> Path | None:
    value = os.environ.get(AP_INT_ENV)
    if not value:
        return None
    for folder in (Path(value), Path(value) / "include"):
        if (folder / "ap_int.h").is_file():
            return folder.resolve()
    return None


def skip_reason() -> str | None:
    if find_hlslib() is None:
        return f"skipped: finn-hlslib not found ({HOW_TO_GET})"
    if real_vitis_hls() is None and find_ap_int() is None:
        return f"skipped: the ap_int headers not found ({HOW_TO_GET_HEADERS})"
    return None


def shim_hls_root(ap_int: Path, hlslib: Path) -> Path:
    """A folder laid out like $XILINX_HLS for FINN's compile script: ap_int headers, shims, stub libraries."""
    needs_unflatten = "unflatten" not in _read(hlslib / "flatten.hpp")
    shims = list(SHIM_FILES) + (["onebit_unflatten.h"] if needs_unflatten else [])
    digest = hashlib.sha256(str(ap_int).encode())
    for name in shims:
        digest.update(name.encode() + (SHIMS / name).read_bytes())
    root = cache_root() / "cppsim" / f"hls-root-{digest.hexdigest()[:16]}"
    if (root / ".complete").is_file():
        return root
    staging = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    include = staging / "include"
    include.mkdir(parents=True)
    (include / "onebit_ap_types").symlink_to(ap_int)  # behind the ap_int.h shim (it adds `half`)
    for item in ap_int.iterdir():
        if item.name != "ap_int.h":
            (include / item.name).symlink_to(item)
    for name in shims:
        shutil.copy2(SHIMS / name, include / name)
    empty = staging / "empty.c"
    empty.write_text("/* onebit: empty stand-in library for FINN's cppsim link line */\n")
    for folder, libraries in STUB_LIBRARIES.items():
        (staging / folder).mkdir(parents=True)
        for library in libraries:
            subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(staging / folder / f"lib{library}.so"), str(empty)],
                           check=True, capture_output=True)
    (staging / ".complete").write_text("ok\n")
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    return root


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


@contextlib.contextmanager
def cppsim_environment(hlslib: Path):
    """FINN's settings and environment pointed at finn-hlslib and the HLS headers for the duration."""
    from finn.util.settings import get_settings

    settings = get_settings()
    hls_root = real_vitis_hls() or shim_hls_root(find_ap_int(), hlslib)
    deps = cache_root() / "cppsim" / ("deps-" + hashlib.sha256(str(hlslib).encode()).hexdigest()[:12])
    deps.mkdir(parents=True, exist_ok=True)
    link = deps / "finn-hlslib"
    if not link.exists():
        link.symlink_to(hlslib)
    saved_env = {k: os.environ.get(k) for k in ("XILINX_HLS", "FINN_CUSTOM_HLS", "FINN_DEPS")}
    saved_deps = settings._finn_deps
    try:
        os.environ["XILINX_HLS"] = str(hls_root)
        os.environ["FINN_CUSTOM_HLS"] = str(settings.finn_custom_hls)
        settings._finn_deps = str(deps)  # FINN's compile script reads finn_deps/finn-hlslib
        yield hls_root
    finally:
        settings._finn_deps = saved_deps
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def hls_nodes_of(model) -> list:
    return [n for n in model.graph.node if n.domain.endswith(".hls") or n.op_type.endswith("_hls")]


def single_node_model(model, node, batch: int):
    """A model holding only `node` (with its initializers and datatypes), batch `batch` where the op allows.

    Returns (model, batch actually used): ops that carry the batch in numInputVectors[0] or BatchSize take
    `batch` frames per run, others one.
    """
    import copy

    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.util.basic import qonnx_make_model

    new_node = copy.deepcopy(node)
    inst = getCustomOp(new_node)
    used = 1
    attributes = {a.name for a in new_node.attribute} | set(inst.get_nodeattr_types())
    if batch > 1 and "numInputVectors" in attributes:
        vectors = list(inst.get_nodeattr("numInputVectors"))
        inst.set_nodeattr("numInputVectors", [batch, *vectors[1:]])
        used = batch
    elif batch > 1 and "BatchSize" in attributes:
        inst.set_nodeattr("BatchSize", batch)
        used = batch

    def value(name: str):
        shape = list(model.get_tensor_shape(name))
        if model.get_initializer(name) is None and shape:
            shape[0] = used
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    data_inputs = [t for t in new_node.input if model.get_initializer(t) is None]
    graph = helper.make_graph([new_node], f"onebit_cppsim_{node.name}", [value(t) for t in data_inputs],
                              [value(t) for t in new_node.output])
    single = ModelWrapper(qonnx_make_model(graph, producer_name="onebit"))
    for t in list(new_node.input) + list(new_node.output):
        single.set_tensor_datatype(t, model.get_tensor_datatype(t))
        initializer = model.get_initializer(t)
        if initializer is not None:
            single.set_initializer(t, initializer)
    return single, used


def compile_node(single):
    """FINN's PrepareCppSim + CompileCppSim on the one-node model: (model, None or the compiler's first error)."""
    from finn.transformation.fpgadataflow.compile_cppsim import CompileCppSim
    from finn.transformation.fpgadataflow.prepare_cppsim import PrepareCppSim
    from qonnx.custom_op.registry import getCustomOp

    single = single.transform(PrepareCppSim())
    try:
        single = single.transform(CompileCppSim())
    except Exception:  # FINN raises when g++ fails; the script's output below has the reason
        pass
    inst = getCustomOp(single.graph.node[0])
    executable = inst.get_nodeattr("executable_path")
    if executable and Path(executable).is_file():
        return single, None
    script = Path(inst.get_nodeattr("code_gen_dir_cppsim")) / "compile.sh"
    if not script.is_file():
        return single, "FINN wrote no compile script"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=script.parent)
    return single, _first_error(done.stdout + done.stderr)


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "error" in line.lower():
            return line.strip()[:300]
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else "compilation failed without output").strip()[:300]


@contextlib.contextmanager
def checked_executable_runs():
    """FINN runs a compiled cppsim node in the caller's directory and only logs what it prints: for the
    duration, each runs in its own code-gen folder (where FINN wrote its files) and a non-zero exit or any
    complaint it prints (a file it cannot open, an assertion, an error) raises with that line."""
    from finn.custom_op.fpgadataflow.hlsbackend import HLSBackend

    original = HLSBackend.exec_precompiled_singlenode_model

    def run(self) -> None:
        executable = self.get_nodeattr("executable_path")
        folder = self.get_nodeattr("code_gen_dir_cppsim")
        if not executable or not Path(executable).is_file():
            raise RuntimeError(f"{self.onnx_node.name}: no compiled cppsim executable ({executable or 'none'})")
        done = subprocess.run([executable], capture_output=True, text=True, cwd=folder or None)
        complaint = simulator_complaint(done.stderr + "\n" + done.stdout)
        if done.returncode != 0:
            detail = complaint or first_line(done.stderr or done.stdout) or "no output"
            raise RuntimeError(f"cppsim executable exited {done.returncode}: {detail}")
        if complaint is not None:
            raise RuntimeError(f"cppsim executable (run in {folder}): {complaint}")

    HLSBackend.exec_precompiled_singlenode_model = run
    try:
        yield
    finally:
        HLSBackend.exec_precompiled_singlenode_model = original


def run_cppsim(single, used: int, frames: np.ndarray) -> np.ndarray:
    """The compiled node on `frames` (F x normal input shape[1:]), `used` frames per run (last run padded)."""
    from finn.transformation.fpgadataflow.set_exec_mode import SetExecMode

    with checked_executable_runs():
        return execute_padded(single.transform(SetExecMode("cppsim")), frames, used)


def reference_outputs(model, node, frames: np.ndarray) -> np.ndarray:
    """FINN's Python execution of the node's generic HW op (MVAU for MVAU_hls, ...), one frame at a time."""
    from finn.custom_op.fpgadataflow.hlsbackend import HLSBackend
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    generic = next(c for c in type(inst).__mro__[1:] if "execute_node" in c.__dict__ and not issubclass(c, HLSBackend))
    shape, out_shape = tuple(model.get_tensor_shape(node.input[0])), tuple(model.get_tensor_shape(node.output[0]))
    constants = {t: model.get_initializer(t) for t in node.input if model.get_initializer(t) is not None}
    results = []
    for frame in frames:
        context = {**constants, node.input[0]: frame.reshape(shape).astype(np.float32),
                   node.output[0]: np.zeros(out_shape, dtype=np.float32)}
        generic.execute_node(inst, context, model.graph)
        results.append(np.asarray(context[node.output[0]]))
    return np.stack(results).reshape(len(frames), *out_shape[1:])


class CppsimLevel:
    name = "cppsim"
    default = True  # runs where finn-hlslib is found; skipped (cheaply) elsewhere

    def skipped(self) -> str | None:
        return skip_reason()

    def run(self, ctx: LevelContext) -> LevelOutcome:
        from qonnx.custom_op.registry import getCustomOp

        from onebit.progress import bar as progress_bar

        model, nodes = selected_nodes(ctx, hls_nodes_of)
        n_images = len(ctx.images)
        hlslib = find_hlslib()
        if not nodes:
            return LevelOutcome.nothing_to_simulate(f"no *_hls node in the final HW graph ({Path(ctx.final_model).name}); "
                                                    "level rtl_nodes simulates its RTL nodes")
        real = ctx.node_inputs([n.input[0] for n in nodes])
        rows, bad_images, total_bad, failed = [], set(), 0, 0
        with cppsim_environment(hlslib) as hls_root:
            for index, node in enumerate(progress_bar(nodes, desc="cppsim", unit="node", enabled=ctx.progress)):
                inst = getCustomOp(node)
                shape = tuple(model.get_tensor_shape(node.input[0]))
                frames = np.concatenate([
                    real[node.input[0]].reshape(n_images, *shape[1:]),
                    random_frames(inst.get_input_datatype(0), shape[1:], ctx.random_samples, ctx.seed + 104729 * (index + 1)),
                ]).astype(np.float32)
                row: dict[str, Any] = {"node": node.name, "op_type": node.op_type, "images": n_images,
                                       "random_frames": ctx.random_samples}
                started = time.perf_counter()
                single, used = single_node_model(model, node, min(len(frames), ctx.options.get("batch", BATCH)))
                single, error = compile_node(single)
                row["compile_seconds"] = round(time.perf_counter() - started, 1)
                if error:
                    failed += 1
                    total_bad += len(frames)
                    bad_images.update(range(n_images))
                    row.update({"status": f"not compiled: {error}", "mismatching_images": n_images,
                                "mismatching_random": ctx.random_samples})
                    rows.append(row)
                    continue
                started = time.perf_counter()
                try:
                    actual = run_cppsim(single, used, frames)
                except Exception as error:  # the node's executable failed: this node fails, by name
                    failed += 1
                    row.update({"status": f"failed: {first_line(error)}", "mismatching_images": n_images,
                                "mismatching_random": ctx.random_samples})
                    rows.append(row)
                    continue
                row["sim_seconds"] = round(time.perf_counter() - started, 2)
                expected = reference_outputs(model, node, frames)
                wrong = mismatch_rows(expected, actual.reshape(expected.shape))
                wrong_real = [int(i) for i in wrong if i < n_images]
                wrong_random = [int(i) - n_images for i in wrong if i >= n_images]
                row.update({"status": "ok" if not len(wrong) else "MISMATCH", "mismatching_images": len(wrong_real),
                            "mismatching_random": len(wrong_random), "first_mismatching_images": wrong_real[:10],
                            "frames_per_run": used})
                total_bad += len(wrong)
                bad_images.update(wrong_real)
                rows.append(row)
        headers = "Vitis HLS headers" if real_vitis_hls() else f"ap_int headers + onebit shims ({hls_root})"
        return LevelOutcome(
            executed=True, samples=n_images, integer_mismatches=total_bad, first_mismatches=sorted(bad_images)[:20],
            nodes=rows, how=f"FINN cppsim (g++), {len(nodes)} HLS nodes x ({n_images} images + {ctx.random_samples} "
                            f"random frames), {failed} not compiled or not run; finn-hlslib {hlslib}, {headers}")


LEVEL = CppsimLevel()
