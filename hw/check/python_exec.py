"""qonnx/FINN Python execution as every verification level uses it: without costs that are not the graph's,
in padded batches, in chunks with a progress bar, or spread over processes.

One place for these, because the score levels (verify.py), the node levels' references and input capture
(levels.py, rtl_nodes.py, cppsim.py) and the accelerator model's FINN comparison all run FINN's Python
execution and must all get the same (identical-result) speedups.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np


@contextlib.contextmanager
def fast_python_execution() -> Iterator[None]:
    """qonnx/FINN Python execution without two costs that are not the graph's: BLAS threads and a slow check.

    * BLAS single-threaded: per-node matmuls are small, and OpenMP threads stall on a shared machine
      (measured: CNV's XnorPopcountMatMul 0.2 s -> 5 ms per call at load 9 on 2 cores). Processes
      parallelise instead (parallel_map).
    * qonnx's sanitize_quant_values computes the rounding error of every integer-annotated tensor with
      Python's builtin max over all its elements (about 1 s per CNV image), also when the values are
      already integers of the datatype and nothing is rounded. Those tensors are skipped here; any
      other goes through qonnx's own function unchanged, so results are identical.
    """
    import qonnx.core.onnx_exec as qonnx_exec

    original = qonnx_exec.sanitize_quant_values

    def sanitize_changed_only(model, node_tensors, execution_context, check_values=False):
        pending = []
        for name in node_tensors:
            dtype = model.get_tensor_datatype(name)
            if dtype.is_integer() and name in execution_context:
                allowed = dtype.allowed(execution_context[name])
                if bool(allowed.all() if isinstance(allowed, np.ndarray) else allowed):
                    continue  # already exact: qonnx would round nothing
            pending.append(name)
        return original(model, pending, execution_context, check_values) if pending else execution_context

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # not installed: BLAS keeps its threads
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(1)
    if getattr(original, "_onebit_fast", False):
        yield  # nested: the outer context has patched qonnx and limited the threads
        return
    sanitize_changed_only._onebit_fast = True  # type: ignore[attr-defined]
    qonnx_exec.sanitize_quant_values = sanitize_changed_only
    try:
        with limits:
            yield
    finally:
        qonnx_exec.sanitize_quant_values = original


def execute_padded(model, frames: np.ndarray, batch: int, shaped: Callable[[np.ndarray], np.ndarray] | None = None
                   ) -> np.ndarray:
    """FINN's execute_onnx of `model` (fixed batch `batch`) on all `frames`: the last run zero-padded, cut back.

    `shaped` maps a chunk (batch x frame shape) to the graph input's layout (default: reshape to its shape).
    """
    from finn.core.onnx_exec import execute_onnx

    name_in, name_out = model.graph.input[0].name, model.graph.output[0].name
    in_shape = model.get_tensor_shape(name_in)
    shaped = shaped or (lambda x: x.reshape(in_shape).astype(np.float32))
    outputs = []
    for start in range(0, len(frames), batch):
        chunk = frames[start:start + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
        outputs.append(execute_onnx(model, {name_in: shaped(chunk)})[name_out][:n])
    return np.concatenate(outputs)


def chunked(function: Callable[[np.ndarray], np.ndarray], images: np.ndarray, chunk: int, progress: bool,
            label: str) -> np.ndarray:
    """function over `images` in chunks of `chunk`, with a progress bar."""
    from onebit.progress import bar as progress_bar

    outputs = []
    with progress_bar(total=len(images), desc=f"verify {label}", unit="img", enabled=progress) as bar:
        for start in range(0, len(images), chunk):
            outputs.append(function(images[start:start + chunk]))
            bar.update(len(outputs[-1]))
    return np.concatenate(outputs)


_WORKER_FUNCTION = None


def _worker_call(chunk: np.ndarray) -> np.ndarray:
    return _WORKER_FUNCTION(chunk)


def parallel_map(function: Callable[[np.ndarray], np.ndarray], images: np.ndarray, workers: int, progress: bool,
                 label: str) -> np.ndarray:
    """Per-sample execution spread over forked processes (FINN's Python ops are single-threaded numpy).

    fork, because the workers need this process's prepared FINN settings and the loaded graph.
    """
    import multiprocessing

    from onebit.progress import bar as progress_bar

    global _WORKER_FUNCTION
    _WORKER_FUNCTION = function
    chunks = [images[i:i + 25] for i in range(0, len(images), 25)]
    outputs = []
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool, \
                progress_bar(total=len(images), desc=f"verify {label}", unit="img", enabled=progress) as bar:
            for out in pool.imap(_worker_call, chunks):
                outputs.append(out)
                bar.update(len(out))
    finally:
        _WORKER_FUNCTION = None
    return np.concatenate(outputs)
