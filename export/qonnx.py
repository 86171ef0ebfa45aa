"""Brevitas QONNX export of a collapsed (plain) onebit model, followed by qonnx's cleanup.

What is exported is `score(features(x))`: the integer class scores. The training-only score scale is
left out (docs/design.md §1), so the QONNX model's output is the score layer's accumulator z itself
(all scales of the plain model are 1). The input is a float tensor (1, C, H, W) of raw pixels 0..255.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from qonnx.transformation.base import Transformation
from torch import nn

from onebit.atomic import write_atomic
from onebit.errors import OnebitError
from quant_models import compat  # noqa: F401  (Tensor.rename shim before Brevitas layers run)
from quant_models.topologies import OnebitNet


class ScoresView(nn.Module):
    """The part of an OnebitNet that the accelerator computes: pixels -> integer class scores."""

    def __init__(self, model: OnebitNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.score(self.model.features(x))


@contextlib.contextmanager
def _quiet_torch_onnx_logger():
    """torch's ONNX exporter logs a warning per torchvision op it cannot register (torchvision is not a
    dependency); none of them is ever in a onebit graph."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_qonnx(plain: OnebitNet, meta: dict[str, Any] | None, path: str | Path) -> Path:
    """Write the QONNX model of `plain` to `path` (atomically) and return the path."""
    with warnings.catch_warnings():  # Brevitas warns at import that an optional CUDA kernel is absent
        warnings.simplefilter("ignore")
        from brevitas.export import export_qonnx as brevitas_export_qonnx
    from qonnx.util.cleanup import cleanup

    channels, height, width = plain.arch["in_shape"]
    example = torch.zeros(1, channels, height, width)
    view = ScoresView(plain).eval()

    def export_to(tmp: Path) -> None:
        try:
            # Brevitas/torch.onnx print pages of progress and deprecation notes; keep the console for results.
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_torch_onnx_logger():
                warnings.simplefilter("ignore")
                # TorchScript exporter: the same QONNX ops (MatMul where dynamo writes Gemm, which FINN's tidy-up
                # turns into MatMul anyway) in 0.4 s instead of 2.9 s of CPU for a TFC, without importing dynamo
                brevitas_export_qonnx(view, example, export_path=str(tmp), dynamo=False)
                cleanup(str(tmp), out_file=str(tmp))
        finally:
            # torch's exporter also writes the initializers to `<tmp>.data`; cleanup() inlines them into
            # the model, so the side file is an orphan either way.
            tmp.with_name(tmp.name + ".data").unlink(missing_ok=True)

    try:
        return write_atomic(path, export_to)
    except OnebitError:
        raise
    except Exception as error:
        raise OnebitError(f"Brevitas QONNX export of the collapsed model failed: {type(error).__name__}: "
                          f"{str(error).splitlines()[0][:200] if str(error) else ''}") from None


def run_qonnx(path: str | Path, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Execute the QONNX model on uint8 images (N, C, H, W) with qonnx's executor, batched.

    qonnx's execute_onnx runs the Quant/BipolarQuant custom ops in numpy; the exported graph has a fixed
    batch of 1, so we make the batch dimension symbolic first (the ops are all batch-agnostic).
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(str(path))
    model = _with_batch(model, batch_size)
    name_in, name_out = model.graph.input[0].name, model.graph.output[0].name
    outputs = []
    for start in range(0, len(images), batch_size):
        x = np.asarray(images[start:start + batch_size], dtype=np.float32)
        n = len(x)
        if n != batch_size:
            x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), np.float32)])
        outputs.append(execute_onnx(model, {name_in: x})[name_out][:n])
    return np.concatenate(outputs)


def _with_batch(model, batch: int):
    """A copy of `model` whose input/output and Reshape targets use batch size `batch`."""
    from qonnx.transformation.infer_shapes import InferShapes

    model = model.transform(_SetBatch(batch))
    return model.transform(InferShapes())


class _SetBatch(Transformation):
    """Set the leading dimension of the graph I/O to `batch`, and of Reshape targets that fix it to 1."""

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch = batch

    def apply(self, model):
        for value in list(model.graph.input) + list(model.graph.output):
            value.type.tensor_type.shape.dim[0].dim_value = self.batch
        del model.graph.value_info[:]  # re-inferred by InferShapes with the new batch
        for node in model.graph.node:
            if node.op_type == "Reshape" and node.domain in ("", "ai.onnx"):
                target = model.get_initializer(node.input[1])
                if target is not None and target.size and target[0] == 1:
                    fixed = target.copy()
                    fixed[0] = self.batch
                    model.set_initializer(node.input[1], fixed)
        return model, False
