"""Bit-exact model of a FINN streaming accelerator, driven by the bytes its DMAs move.

`AcceleratorModel.run(packed_input) -> packed_output` consumes exactly the bytes the driver writes to
the input DMA buffer and returns the bytes the output DMA would write, computing layer by layer what the
HW layers of the final FINN model (dataflow child after specialization and folding) compute:

* MVAU in XNOR mode: the popcount of agreeing bits from an exact int8 GEMM of +-1 values (int32 sums,
  `_int8_gemm`; the offset folded into the integer thresholds), then integer thresholds.
* MVAU with UINT8 (or any integer) input and +-1/integer weights (the first layer): the same exact int8
  GEMM on the pixels shifted into int8 (the shift folded back exactly), else a float32/float64 BLAS
  matmul where the accumulator bound proves it exact.
* Thresholding, ConvolutionInputGenerator (im2col, FINN's (kh, kw, c) order), Pool/StreamingMaxPool
  (max), ElementwiseAdd/Mul/Sub with a constant, and the data-movement layers (Reshape,
  StreamingDataWidthConverter, StreamingFIFO) whose values pass unchanged.
Any other node type is refused with an error naming it: never a silent approximation.

Folding (PE/SIMD) changes when values move, not what they are; it enters here through the folded
(packed) shapes of the input and output streams, which decide the byte layout.

Written by hand rather than by FINN's Python execution because that runs float32 numpy per node on
unpacked tensors (and not at all for specialized layers), about 100x slower; bench/accel_speed.py
measures both. Accumulators are computed exactly; where a value does not fit the datatype FINN gave
the stream (the hardware would wrap it), `range_violations` counts it per layer.

Why one file (about 540 lines): every layer kernel is a method of AcceleratorModel sharing its packing
state and chunked threading; split apart they would pass that state around. `final_model_path` (which
model a build's checks read) and `finn_python_outputs` sit here because every reader of a build calls them
with the model.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from hw.driver.packing import datatype_info, datatype_range, pack, unpack
from hw.finn.io_description import stream_shapes
from onebit.errors import OnebitError

IDENTITY_OPS = ("Reshape", "StreamingDataWidthConverter", "StreamingFIFO")
_CHUNK_BYTES = 64 << 20  # values of the largest intermediate per chunk of images (see run_values)


def _base(op_type: str) -> str:
    op_type = op_type.removeprefix("Onebit")  # onebit's RTL nodes (--mvau rtl) have FINN's semantics
    for suffix in ("_hls", "_rtl"):
        if op_type.endswith(suffix):
            return op_type[: -len(suffix)]
    return op_type


def _bits_to_words(bits: np.ndarray) -> np.ndarray:
    """(..., n) array of 0/1 -> (..., ceil(n/64)) uint64 words (zero padding: it never mismatches)."""
    packed = np.packbits(bits.astype(np.uint8, copy=False), axis=-1, bitorder="little")
    pad = (-packed.shape[-1]) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros(packed.shape[:-1] + (pad,), np.uint8)], axis=-1)
    return np.ascontiguousarray(packed).view(np.uint64)


_THREADS_LOCK = threading.Lock()


@contextlib.contextmanager
def _torch_threads(n: int):
    """torch's intra-op threads set to `n` for a block (the chunk threads of run_values parallelise)."""
    import torch

    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            torch.set_num_threads(before)


def _int8_gemm(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Exact (R, K) int8 @ (K, N) int8 -> (R, N) int32 (torch._int_mm: oneDNN's int8 GEMM, int32 sums).

    Why not numpy: numpy's integer matmul is not BLAS (about 100x slower); float32 BLAS is exact for
    these sums too but measured 2-3x slower than the int8 kernel here (bench/accel_speed.py), and
    packed XNOR-popcount with numpy's bitwise_count another 2x slower than float32 on CNV's shapes.
    """
    import torch

    a = torch.from_numpy(np.ascontiguousarray(rows))
    return torch._int_mm(a, torch.from_numpy(weights)).numpy()


def _container(dtype: str) -> type:
    """Smallest numpy integer type that holds a FINN datatype (binary maps stay 1 byte per value)."""
    lo, hi = datatype_range(dtype)
    for candidate in (np.uint8, np.int8, np.uint16, np.int16, np.int32):
        info = np.iinfo(candidate)
        if info.min <= lo and hi <= info.max:
            return candidate
    return np.int64


def final_model_path(build_dir: str | Path, hw_model: str | None = None) -> Path:
    """The build's final FINN model: io.json's hw_model, else the last step in report.json's steps.run.

    Never chosen by file time (a touched or copied step model would win); every path stays inside the
    build folder (io.json is data a user can edit: `../../..` is refused).
    """
    from onebit.buildfolder import inside

    build_dir = Path(build_dir)
    if hw_model:
        return inside(build_dir, hw_model)
    report = build_dir / "report.json"
    if report.is_file():
        import json

        try:
            data = json.loads(report.read_text())
        except (OSError, ValueError) as error:
            raise OnebitError(f"{report} is unreadable ({error}); rerun `onebit build`") from None
        steps = (data.get("steps") or {}).get("run") or data.get("steps_run") or []
        for step in reversed(steps):
            candidate = inside(build_dir, f"finn/{step}.onnx")
            if candidate.is_file():
                return candidate
        if steps:
            raise OnebitError(f"{build_dir}: report.json lists the steps {steps[-3:]} but none of their "
                              "finn/<step>.onnx models exists; rerun `onebit build`")
    # An unfinished build (no report.json, or one naming no steps): the step models in the build's order.
    from hw.finn.build import FRONTEND_HEAD, FRONTEND_TAIL, TOOL_STEPS

    order = FRONTEND_HEAD + ["step_onebit_auto_fold", "step_target_fps_parallelization", "step_apply_folding_config"] \
        + FRONTEND_TAIL + [name for name, _ in TOOL_STEPS]
    for step in reversed(order):
        candidate = build_dir / "finn" / f"{step}.onnx"
        if candidate.is_file():
            return candidate
    raise OnebitError(f"{build_dir}: no finn/<step>.onnx models (and no hw_model in driver/io.json); "
                      "rebuild with `onebit build`")


@dataclass
class Layer:
    name: str
    op_type: str
    compute: Callable[[np.ndarray], np.ndarray]
    in_shape: tuple[int, ...]           # normal input/output shapes without the batch dimension
    out_shape: tuple[int, ...]
    out_dtype: str
    params: dict[str, Any] = field(default_factory=dict)


class AcceleratorModel:
    """The accelerator of one build, as a function from input DMA bytes to output DMA bytes."""

    def __init__(self, model: ModelWrapper, source: str = "FINN model") -> None:
        self.source = source
        self.shapes = stream_shapes(model)
        self.range_violations: dict[str, int] = {}
        self.layers: list[Layer] = []
        tensor = model.graph.input[0].name
        for node in model.graph.node:
            if list(node.input[:1]) != [tensor]:
                raise OnebitError(f"{source}: node {node.name} does not continue the single stream; "
                                  "onebit models linear dataflow graphs only")
            self.layers.append(self._build(model, node))
            tensor = node.output[0]
        if tensor != model.graph.output[0].name:
            raise OnebitError(f"{source}: the last node does not produce the graph output")

    @classmethod
    def from_file(cls, path: str | Path) -> "AcceleratorModel":
        path = Path(path)
        if not path.is_file():
            raise OnebitError(f"no FINN model at {path}; run the build (onebit build) to create it")
        from hw.rtl.registry import ensure_onebit_ops

        model = ModelWrapper(str(path))
        ensure_onebit_ops(model)
        return cls(model, str(path))

    @classmethod
    def from_build(cls, build_dir: str | Path) -> "AcceleratorModel":
        """The final FINN model named by the build's driver/io.json ("hw_model")."""
        from hw.driver.io_spec import DriverError, IOSpec

        try:
            spec = IOSpec.load(Path(build_dir) / "driver" / "io.json")
        except DriverError as error:
            raise OnebitError(str(error)) from None
        return cls.from_file(final_model_path(build_dir, spec.hw_model))

    # -- layer construction ---------------------------------------------------------------------
    def _build(self, model: ModelWrapper, node) -> Layer:
        op = _base(node.op_type)
        in_shape = tuple(int(v) for v in model.get_tensor_shape(node.input[0])[1:])
        out_shape = tuple(int(v) for v in model.get_tensor_shape(node.output[0])[1:])
        out_dtype = model.get_tensor_datatype(node.output[0]).name
        if op in IDENTITY_OPS:
            return Layer(node.name, node.op_type, lambda x: x, in_shape, out_shape, out_dtype)
        builder = {"MVAU": self._mvau, "Thresholding": self._thresholding,
                   "ConvolutionInputGenerator": self._im2col, "Pool": self._pool,
                   "StreamingMaxPool": self._maxpool, "FMPadding": self._fmpadding, "ElementwiseAdd": self._elementwise,
                   "ElementwiseMul": self._elementwise, "ElementwiseSub": self._elementwise}.get(op)
        if builder is None:
            raise OnebitError(f"{self.source}: node {node.name} has type {node.op_type}, which the accelerator "
                              "model does not know; it models MVAU, Thresholding, ConvolutionInputGenerator, "
                              f"Pool, StreamingMaxPool, FMPadding, Elementwise{{Add,Mul,Sub}} and {', '.join(IDENTITY_OPS)}")
        try:
            inst = getCustomOp(node)
        except Exception as error:  # qonnx raises bare Exceptions for missing attributes
            raise OnebitError(f"{self.source}: node {node.name} ({node.op_type}) cannot be read: {error}") from None
        compute, params = builder(model, node, inst)
        if op == "MVAU":
            # After RemoveCNVtoFCFlatten an MVAU may take an (H, W, C) tensor as its MW-long vector.
            in_shape = tuple(int(v) for v in inst.get_normal_input_shape()[1:])
        return Layer(node.name, node.op_type, compute, in_shape, out_shape, out_dtype, params)

    def _thresholds(self, model: ModelWrapper, node, index: int, channels: int) -> np.ndarray:
        thr = model.get_initializer(node.input[index])
        if thr is None:
            raise OnebitError(f"{self.source}: {node.name} has no threshold initializer")
        thr = np.asarray(thr, dtype=np.float64).reshape(-1, thr.shape[-1])
        # An integer accumulator a satisfies a >= t exactly when a >= ceil(t), which is what the
        # hardware stores; ceil keeps the comparison exact for fractional thresholds.
        thr = np.ceil(thr)
        if thr.shape[0] == 1 and channels > 1:
            thr = np.repeat(thr, channels, axis=0)
        return thr

    @staticmethod
    def _apply_thresholds(acc: np.ndarray, thr: np.ndarray, act_val: int, bipolar: bool) -> np.ndarray:
        if thr.shape[1] == 1:
            count = (acc >= thr[:, 0]).view(np.uint8) if act_val == 0 and not bipolar else (acc >= thr[:, 0]).astype(np.int16)
        else:
            count = (acc[..., None] >= thr).sum(axis=-1, dtype=np.int16)
        if bipolar:
            return (2 * count.astype(np.int16) - 1).astype(np.int8)
        return count if act_val == 0 else count + act_val

    def _mvau(self, model: ModelWrapper, node, inst):
        weights = np.asarray(model.get_initializer(node.input[1]), dtype=np.float64)  # (MW, MH)
        mw, mh = weights.shape
        xnor = bool(inst.get_nodeattr("binaryXnorMode"))
        idt, wdt = inst.get_nodeattr("inputDataType"), inst.get_nodeattr("weightDataType")
        no_act = bool(inst.get_nodeattr("noActivation"))
        odt = inst.get_nodeattr("outputDataType")
        params: dict[str, Any] = {"MW": mw, "MH": mh, "xnor": xnor, "PE": inst.get_nodeattr("PE"),
                                  "SIMD": inst.get_nodeattr("SIMD"), "idt": idt, "wdt": wdt, "odt": odt}
        if not xnor and idt == "BIPOLAR" and wdt == "BIPOLAR":
            xnor = True  # FINN computes bipolar x bipolar as XNOR-popcount on the binary encoding too
        params["xnor"] = xnor
        thr = None if no_act else self._thresholds(model, node, 2, mh)
        act_val = int(inst.get_nodeattr("ActVal"))
        bipolar_out = odt == "BIPOLAR"
        lo, hi = datatype_range(odt)
        name = node.name

        int8_weights = bool(np.all(weights == np.round(weights)) and np.abs(weights).max() <= 127)
        if xnor:
            # matches(x, w) = sum_k [x_k == w_k] over the bit encodings = b @ (2w - 1) + zeros(w), with
            # b = x > 0 as 0/1 and zeros(w) the number of 0 bits of w's column: one exact int8 GEMM.
            bits = weights > 0
            params["weights_int8"] = np.where(bits, 1, -1).astype(np.int8)
            params["offset"] = (~bits).sum(axis=0).astype(np.int32)

            def matvec(x: np.ndarray) -> np.ndarray:
                rows = x.reshape(-1, mw)
                if rows.dtype != np.uint8 or (rows.size and rows.max() > 1):
                    rows = rows > 0
                return _int8_gemm(rows.view(np.int8), params["weights_int8"]).reshape(x.shape[:-1] + (mh,))
        elif int8_weights and datatype_range(idt)[1] - datatype_range(idt)[0] <= 255 \
                and float(np.abs(weights).sum(axis=0).max()) * 256 < 2**31:
            # Integer input (the first layer's UINT8 pixels): shift it into int8, x = (x - s) + s, so
            # acc = (x - s) @ w + s * colsum(w) is one exact int8 GEMM with int32 accumulation.
            shift = int(datatype_range(idt)[0]) + 128
            params["weights_int8"] = weights.astype(np.int8)
            params["offset"] = (shift * weights.sum(axis=0)).astype(np.int32)
            params["shift"] = shift

            def matvec(x: np.ndarray) -> np.ndarray:
                rows = x.reshape(-1, mw)
                if rows.dtype == np.uint8 and shift == 128:
                    shifted = (rows ^ np.uint8(0x80)).view(np.int8)
                else:
                    shifted = (rows.astype(np.int16) - shift).astype(np.int8)
                return _int8_gemm(shifted, params["weights_int8"]).reshape(x.shape[:-1] + (mh,))
        else:
            bound = float(np.abs(weights).sum(axis=0).max()) * max(abs(v) for v in datatype_range(idt))
            # float32 sums of integers are exact below 2**24, float64 below 2**53.
            ftype = np.float32 if bound < 2**24 else np.float64
            if bound >= 2**53:
                raise OnebitError(f"{self.source}: {name} accumulators can reach {bound:.3g}, beyond exact float64")
            params["weights"] = weights.astype(ftype)

            def matvec(x: np.ndarray) -> np.ndarray:
                # Stays float: every value is an exact integer, and thresholds compare exactly in float.
                return (x.reshape(-1, mw).astype(ftype) @ params["weights"]).reshape(x.shape[:-1] + (mh,))

        # The int8 GEMMs return acc - offset (offset: per output channel, see above); thresholds absorb it,
        # acc >= t <=> acc - offset >= t - offset, so the big array is touched once. Integer thresholds
        # (ceil'd) clipped to int32 keep every comparison exact (|acc| < 2**31 by the bound above).
        def int_thresholds() -> np.ndarray:
            shifted = np.ceil(thr) - params.get("offset", np.zeros(mh, np.int32))[:, None]
            return np.clip(shifted, -2**31, 2**31 - 1).astype(np.int32)

        def compute(x: np.ndarray) -> np.ndarray:
            acc = matvec(x)
            if thr is not None:
                if acc.dtype.kind == "f":
                    return self._apply_thresholds(acc, thr.astype(acc.dtype), act_val, bipolar_out)
                if params.get("thr_int") is None:
                    params["thr_int"] = int_thresholds()
                return self._apply_thresholds(acc, params["thr_int"], act_val, bipolar_out)
            if "offset" in params:
                acc = acc + params["offset"]
            acc = acc.astype(np.int64)
            bad = int(np.count_nonzero((acc < lo) | (acc > hi)))
            if bad:
                with _THREADS_LOCK:  # chunks run on several threads
                    self.range_violations[name] = self.range_violations.get(name, 0) + bad
            return acc

        params["thresholds"] = thr
        return compute, params

    def _thresholding(self, model: ModelWrapper, node, inst):
        channels = int(inst.get_nodeattr("NumChannels"))
        thr = self._thresholds(model, node, 1, channels)
        act_val = int(inst.get_nodeattr("ActVal"))
        bipolar = inst.get_nodeattr("outputDataType") == "BIPOLAR"
        return (lambda x: self._apply_thresholds(x, thr, act_val, bipolar)), {"thresholds": thr}

    def _im2col(self, model: ModelWrapper, node, inst):
        if inst.get_nodeattr("depthwise"):
            # A depthwise window generator streams the window in channel-fold-major order; its only
            # modelled consumer (Pool) reads it back in that order, so the values equal those of the
            # (kh, kw, c) order used here, which is also what FINN's Python execution produces.
            consumer = model.find_consumer(node.output[0])
            while consumer is not None and _base(consumer.op_type) in IDENTITY_OPS:  # FINN's stitched FIFOs / DWCs
                consumer = model.find_consumer(consumer.output[0])
            if consumer is None or _base(consumer.op_type) != "Pool":
                raise OnebitError(f"{self.source}: {node.name} is a depthwise ConvolutionInputGenerator not "
                                  "feeding a Pool layer; not modelled")
        kh, kw = inst.get_nodeattr("ConvKernelDim")
        sh, sw = inst.get_nodeattr("Stride")
        dh, dw = inst.get_nodeattr("Dilation")
        oh, ow = inst.get_nodeattr("OFMDim")
        ih, iw = inst.get_nodeattr("IFMDim")
        ch = int(inst.get_nodeattr("IFMChannels"))

        span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1

        def compute(x: np.ndarray) -> np.ndarray:
            x = x.reshape(-1, ih, iw, ch)
            # A strided view of every window, (n, oh, ow, c, kh, kw), copied once in FINN's window element
            # order (kh, kw, c), channels fastest: each copied run is kw*c contiguous values (measured ~8x
            # faster than stacking kh*kw shifted slices).
            windows = np.lib.stride_tricks.sliding_window_view(x, (span_h, span_w), axis=(1, 2))
            windows = windows[:, : sh * (oh - 1) + 1: sh, : sw * (ow - 1) + 1: sw, :, ::dh, ::dw]
            return windows.transpose(0, 1, 2, 4, 5, 3).copy(order="C").reshape(x.shape[0], oh, ow, kh * kw * ch)

        return compute, {}

    def _pool(self, model: ModelWrapper, node, inst):
        if inst.get_nodeattr("Function") != "MaxPool":
            raise OnebitError(f"{self.source}: {node.name} is a {inst.get_nodeattr('Function')} Pool; only "
                              "MaxPool is modelled")
        k = inst.get_nodeattr("KernelSize")
        ch = int(inst.get_nodeattr("Channels"))
        k2 = int(k[0] * k[1])
        return (lambda x: x.reshape(x.shape[:-1] + (k2, ch)).max(axis=-2)), {}

    def _maxpool(self, model: ModelWrapper, node, inst):
        ih, iw = inst.get_nodeattr("ImgDim")
        ph, pw = inst.get_nodeattr("PoolDim")
        ch = int(inst.get_nodeattr("NumChannels"))
        if ih % ph or iw % pw or inst.get_nodeattr("CeilMode"):
            raise OnebitError(f"{self.source}: {node.name} pools {ih}x{iw} by {ph}x{pw} with a remainder; "
                              "not modelled")

        def compute(x: np.ndarray) -> np.ndarray:
            x = x.reshape(-1, ih // ph, ph, iw // pw, pw, ch)
            return x.max(axis=(2, 4))

        return compute, {}

    def _fmpadding(self, model: ModelWrapper, node, inst):
        ih, iw = inst.get_nodeattr("ImgDim")
        top, left, bottom, right = inst.get_nodeattr("Padding")
        ch = int(inst.get_nodeattr("NumChannels"))
        # The hardware inserts all-zero words: 0 for integers, bit 0 (= -1) for BINARY/BIPOLAR streams.
        idt = model.get_tensor_datatype(node.input[0]).name
        fill = -1 if idt == "BIPOLAR" else 0

        def compute(x: np.ndarray) -> np.ndarray:
            x = x.reshape(-1, ih, iw, ch)
            return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)

        return compute, {}

    def _elementwise(self, model: ModelWrapper, node, inst):
        if inst.get_nodeattr("rhs_style") != "const":
            raise OnebitError(f"{self.source}: {node.name} combines two streams; only a constant operand is modelled")
        rhs = np.asarray(model.get_initializer(node.input[1]))
        if not np.all(rhs == np.round(rhs)):
            raise OnebitError(f"{self.source}: {node.name} has a non-integer constant; not modelled")
        rhs = rhs.astype(np.int64)
        op = _base(node.op_type)
        fn = {"ElementwiseAdd": np.add, "ElementwiseMul": np.multiply, "ElementwiseSub": np.subtract}[op]
        return (lambda x: fn(x, rhs)), {"constant": rhs}

    # -- execution ------------------------------------------------------------------------------
    def run_values(self, values: np.ndarray) -> np.ndarray:
        """Integer input tensor (N, *ishape_normal[1:]) -> integer output tensor (N, *oshape_normal[1:]).

        Chunks run on one thread per core, each with single-threaded GEMMs: on a shared machine,
        OpenMP-threaded BLAS/oneDNN calls stall on busy cores (measured 30-40 ms per small GEMM at load 8
        on 2 cores, against 0.3 ms single-threaded). Images go through the whole network in chunks: large enough that the int8 GEMMs run at full
        speed (oneDNN's per-call overhead: fewer than ~25k rows is measurably slower), small enough that
        intermediates (an im2col of CNV is ~0.5 MB per image) do not grow with N.
        """
        x = np.asarray(values)
        self._check_values(x)
        n = x.shape[0]
        per_image = max([int(np.prod(layer.out_shape)) for layer in self.layers] + [1])
        chunk = int(min(8192, max(64, _CHUNK_BYTES // per_image)))
        chunks = [x[s:s + chunk] for s in range(0, n, chunk)] or [x]
        workers = min(len(chunks), os.cpu_count() or 1, 4)
        with _torch_threads(1):
            if workers == 1:
                return np.concatenate([self._run_chunk(c) for c in chunks])
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                return np.concatenate(list(pool.map(self._run_chunk, chunks)))

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        for layer in self.layers:
            x = layer.compute(x.reshape((n,) + layer.in_shape)).reshape((n,) + layer.out_shape)
            x = x.astype(_container(layer.out_dtype), copy=False)
        return x.astype(np.int64)

    def _check_values(self, x: np.ndarray) -> None:
        """The input stream carries integers of the input datatype: refuse anything else, never cast silently."""
        s = self.shapes
        expected = tuple(s["ishape_normal"][1:])
        if x.ndim < 1 or tuple(x.shape[1:]) != expected:
            raise OnebitError(f"accelerator model input must have shape (N, {', '.join(map(str, expected))}), "
                              f"got {x.shape}")
        if x.dtype.kind not in "iub":
            raise OnebitError(f"accelerator model input must be integers ({s['idt']}), got {x.dtype}; pass the raw "
                              "pixels (uint8), not normalised floats")
        lo, hi = datatype_range(s["idt"])
        if x.size and (int(x.min()) < lo or int(x.max()) > hi):
            raise OnebitError(f"accelerator model input values {int(x.min())}..{int(x.max())} are outside "
                              f"{s['idt']} ({lo}..{hi}); pass raw pixels 0..255")

    def run(self, packed: np.ndarray) -> np.ndarray:
        """Input DMA bytes (N, *ishape_packed[1:]) -> output DMA bytes (N, *oshape_packed[1:])."""
        s = self.shapes
        packed = np.asarray(packed)
        expected = tuple(s["ishape_packed"][1:])
        if packed.dtype != np.uint8 or tuple(packed.shape[1:]) != expected:
            raise OnebitError(f"accelerator model input must be uint8 (N, {', '.join(map(str, expected))}), "
                              f"got {packed.dtype} {packed.shape}")
        n = packed.shape[0]
        values = unpack(packed, s["idt"], s["ishape_folded"][-1]).reshape((n,) + tuple(s["ishape_normal"][1:]))
        out = self.run_values(values)
        lo, hi = datatype_range(s["odt"])
        outside = (out < lo) | (out > hi)
        if outside.any():
            # The stream is odt bits wide: the hardware keeps the low bits (two's complement wrap).
            self.range_violations["output"] = self.range_violations.get("output", 0) + int(outside.sum())
            bits = datatype_info(s["odt"])[0]
            out = (out - lo) % (1 << bits) + lo
        folded = out.reshape((n,) + tuple(s["oshape_folded"][1:]))
        return pack(folded, s["odt"])

    def flip_weight_bit(self, layer_index: int, row: int, column: int) -> None:
        """Fault injection for tests: negate one +-1 weight (input `row`, output `column`) of an MVAU."""
        layer = self.layers[layer_index]
        if _base(layer.op_type) != "MVAU":
            raise OnebitError(f"layer {layer_index} ({layer.op_type}) is not an MVAU")
        p = layer.params
        p["thr_int"] = None  # the offset changes: integer thresholds are re-derived on the next run
        if "weights_int8" in p and p["xnor"]:
            # one +-1 entry changes sign: its column's count of 0 bits moves by one
            p["offset"][column] += 1 if p["weights_int8"][row, column] > 0 else -1
            p["weights_int8"][row, column] = -p["weights_int8"][row, column]
        elif "weights_int8" in p:
            p["offset"][column] -= 2 * p["shift"] * int(p["weights_int8"][row, column])
            p["weights_int8"][row, column] = -p["weights_int8"][row, column]
        else:
            p["weights"][row, column] = -p["weights"][row, column]

    def describe(self) -> list[dict[str, Any]]:
        """One line per layer: type, output shape and datatype, MVAU folding."""
        rows = []
        for layer in self.layers:
            row = {"name": layer.name, "op_type": layer.op_type, "out_shape": list(layer.out_shape),
                   "out_dtype": layer.out_dtype}
            row.update({k: v for k, v in layer.params.items() if k in ("MW", "MH", "PE", "SIMD", "xnor", "idt", "wdt")})
            rows.append(row)
        return rows


def finn_python_outputs(build_dir: str | Path, images: np.ndarray, spec, progress: bool = False) -> np.ndarray:
    """Reference: FINN's own Python execution of the build's HW-layer graph (the dataflow child before
    specialization; specialized layers have no Python execution), one image at a time, int64 raw outputs.

    Runs like verification's FINN levels (hw.check.verify): single-threaded BLAS, qonnx's rounding check
    only where a tensor is not already exact, and forked worker processes for 100 images or more.
    """
    import os

    from finn.core.onnx_exec import execute_onnx

    from hw.check.levels import host_input
    from hw.check.python_exec import chunked, fast_python_execution, parallel_map

    model = ModelWrapper(str(Path(build_dir) / "finn" / "step_create_dataflow_partition.onnx"))
    name_in, name_out = model.graph.input[0].name, model.graph.output[0].name

    def run(chunk: np.ndarray) -> np.ndarray:
        outputs = []
        for image in chunk:
            x = host_input(model, image[None]).astype(np.float32)  # bit-packed input: the host's threshold
            x = x.transpose(spec.transpose) if spec.transpose else x
            outputs.append(execute_onnx(model, {name_in: x.reshape(spec.ishape_normal)})[name_out].reshape(-1))
        return np.array(outputs)

    workers = min(os.cpu_count() or 1, 4)
    with fast_python_execution():
        if workers > 1 and len(images) >= 100:
            out = parallel_map(run, images, workers, progress, "FINN python")
        else:
            out = chunked(run, images, 25, progress, "FINN python")
    return out.astype(np.int64)
