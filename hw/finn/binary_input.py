"""The binary-input networks' first threshold (`--input-bits 1`): laid out so FINN can unfold it, or moved to
the host (`--input-packing host`).

After streamlining, a binary-input MLP starts with MultiThreshold(pixels, one threshold per image channel)
-> Flatten -> XnorPopcountMatMul. FINN builds the threshold as a Thresholding layer whose channels are the
image channels (1 for a grey image), so its PE is at most 1 and it takes one cycle per pixel: 784 cycles
per 28x28 image where the input DMA needs 98. Two layouts fix that (the step `step_onebit_binary_input`,
between streamlining and the HW-layer conversion):

* input packing "none": the flatten moves to the host (the accelerator reads the NCHW-flatten vector, as
  step_onebit_uint8_input does for UINT8 MLPs) and the threshold is replicated over the C*H*W vector
  channels, as the imported bnn_pynq TFC has it: Thresholding can then take up to C*H*W pixels per cycle.
* input packing "host": the threshold leaves the accelerator. The graph input becomes the BINARY vector
  the first XnorPopcountMatMul reads, padded with zero bits to a whole number of AXI port words (weights
  +1 there, so xnor(0, 1) = 0 adds nothing to the popcount); the host thresholds and packs the pixels
  (hw/driver/input_packing.py) from the metadata recorded here. Why padding: finn-plus' InsertIODMA makes
  the DMA's memory-side width gcd(bits per image, port bits): 784 bits on a 64-bit port would give a
  16-bit DMA, 49 beats per image; 832 bits give 13 full-width beats.

Written by hand because FINN has no transformation that moves an input threshold to the host.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np

from hw.driver.input_packing import PACKING_KEY
from onebit.errors import OnebitError

PACKINGS = ("auto", "host", "none")
STEP_NAME = "step_onebit_binary_input"


def _rewire(model, old: str, new: str) -> None:
    for consumer in model.find_consumers(old) or []:
        for index, name in enumerate(consumer.input):
            if name == old:
                consumer.input[index] = new


def _binary_input_threshold(model):
    """(MultiThreshold node, its thresholds) when the graph starts with a one-step 0/1 pixel threshold, else None."""
    from qonnx.custom_op.registry import getCustomOp

    node = model.find_consumer(model.graph.input[0].name)
    if node is None or node.op_type != "MultiThreshold":
        return None
    inst = getCustomOp(node)
    thresholds = model.get_initializer(node.input[1])
    if thresholds is None or thresholds.ndim != 2 or thresholds.shape[1] != 1:
        return None
    if (inst.get_nodeattr("out_dtype") not in ("BINARY", b"BINARY") or float(inst.get_nodeattr("out_scale")) != 1.0
            or float(inst.get_nodeattr("out_bias")) != 0.0):
        return None
    return node, thresholds


def resolve_packing(model, packing: str) -> str:
    """"host" or "none" for this model: "auto" packs where the first layer of an MLP reads thresholded pixels."""
    if packing not in PACKINGS:
        raise OnebitError(f"--input-packing must be one of {', '.join(PACKINGS)}, got '{packing}'")
    found = _binary_input_threshold(model)
    mlp = found is not None and _flatten_after(model, found[0]) is not None
    if packing == "host" and not mlp:
        raise OnebitError("--input-packing host needs a binary-input MLP (trained with --input-bits 1; TFC, SFC or "
                          "LFC): this model's first layer does not read thresholded pixels through a flatten; "
                          "use --input-packing none")
    if packing == "auto":
        return "host" if mlp else "none"
    return packing


def _flatten_after(model, node):
    following = model.find_consumer(node.output[0])
    if following is None or following.op_type not in ("Flatten", "Reshape"):
        return None
    shape = model.get_tensor_shape(following.output[0])
    return following if shape is not None and len(shape) == 2 else None


def lay_out_binary_input(model, packing: str, port_bits: int):
    """The step's graph edit (see the module docstring); a no-op for networks without a binary pixel threshold."""
    from qonnx.core.data_layout import NC
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    packing = resolve_packing(model, packing)
    found = _binary_input_threshold(model)
    if found is None:
        return model
    node, thresholds = found
    graph_input = model.graph.input[0].name
    in_shape = model.get_tensor_shape(graph_input)
    channels = int(in_shape[1])
    flatten = _flatten_after(model, node)
    if flatten is None:  # a CNN: thresholds per image channel, so Thresholding's PE can reach C
        if thresholds.shape[0] == 1 and channels > 1:
            model.set_initializer(node.input[1], np.repeat(thresholds, channels, axis=0))
        return model
    features = int(model.get_tensor_shape(flatten.output[0])[1])
    per_channel = thresholds if thresholds.shape[0] == channels else np.repeat(thresholds, channels, axis=0)
    # bit = pixel >= t on integer pixels is pixel >= ceil(t)
    channel_thresholds = [int(math.ceil(float(t))) for t in per_channel[:, 0]]
    # The flatten (NCHW order) moves to the host: the graph input becomes the (1, C*H*W) vector.
    _rewire(model, flatten.output[0], node.output[0])
    model.graph.node.remove(flatten)
    node.input[0] = graph_input
    dims = model.graph.input[0].type.tensor_type.shape.dim
    del dims[:]
    dims.add().dim_value = 1
    dims.add().dim_value = features
    model.set_metadata_prop("onebit_input_layout", json.dumps({"host_reshape": "NCHW flatten",
                                                               "accelerator_input_shape": [1, features]}))
    model.set_tensor_layout(graph_input, NC)
    for value in [v for v in model.graph.value_info if v.name == node.output[0]]:
        model.graph.value_info.remove(value)
    if packing == "none":
        model.set_initializer(node.input[1], np.repeat(per_channel, features // channels, axis=0).astype(np.float32))
        getCustomOp(node).set_nodeattr("data_layout", "NC")
        model.set_tensor_layout(node.output[0], NC)
        model = model.transform(InferShapes())
        return model.transform(InferDataTypes())

    matmul = model.find_consumer(node.output[0])
    if matmul is None or matmul.op_type != "XnorPopcountMatMul" or len(model.find_consumers(node.output[0])) != 1:
        raise OnebitError("--input-packing host: the thresholded pixels do not feed one XNOR-popcount layer "
                          f"(found {matmul.op_type if matmul is not None else 'nothing'}); use --input-packing none")
    bits = -(-features // int(port_bits)) * int(port_bits)
    weights = model.get_initializer(matmul.input[1])
    if bits > features:  # +1 weights on the zero padding bits: xnor(0, 1) = 0, the popcount is unchanged
        weights = np.concatenate([weights, np.ones((bits - features, weights.shape[1]), weights.dtype)])
        model.set_initializer(matmul.input[1], weights)
    _rewire(model, node.output[0], graph_input)
    model.graph.node.remove(node)
    dims[1].dim_value = bits
    model.set_tensor_datatype(graph_input, DataType["BINARY"])
    model.set_metadata_prop("onebit_input_layout", json.dumps({"host_reshape": "NCHW flatten",
                                                               "accelerator_input_shape": [1, bits]}))
    model.set_metadata_prop(PACKING_KEY, json.dumps({
        "thresholds": channel_thresholds, "pixels": features, "bits": bits, "port_bits": int(port_bits),
        "rule": "bit = pixel >= thresholds[channel], NCHW flatten, zero bits to a whole number of port words"}))
    model = model.transform(InferShapes())
    return model.transform(InferDataTypes())


def input_packing_of(model) -> dict | None:
    """The host packing recorded in a build's model (None: the accelerator reads pixels)."""
    text = model.get_metadata_prop(PACKING_KEY)
    return json.loads(text) if text else None


def make_binary_input_step(packing: str, port_bits: int) -> Callable:
    def step_onebit_binary_input(model, cfg):
        return lay_out_binary_input(model, packing, port_bits)

    return step_onebit_binary_input
