"""The front door for a QONNX model from elsewhere (a Brevitas `export_qonnx` file, a QONNX zoo model).

`prepare_import(model.onnx, declaration, out_dir)` turns it into the build folder's `model_qonnx.onnx`, the
same contract as onebit's own export (docs/design.md §1): input = raw uint8 pixels as float (1, C, H, W),
output = the score layer's accumulator. Steps:

1. qonnx's cleanup (the form FINN's builder starts from).
2. The input preprocessing the model was trained with is *declared* (`--input-scale 1/255`,
   `--input-offset`, `--input-shape C,H,W`, `--input-layout NCHW|NHWC`, or the sidecar file
   `model.onnx.onebit.json`), never guessed. Where the graph's input quantizer shows the range it expects,
   a declaration that contradicts it is refused (`check_declaration`).
3. The preprocessing becomes graph nodes in front of the model (Transpose/Reshape, Mul(scale),
   Add(offset)), merged with qonnx's MergeONNXModels exactly as FINN's end-to-end BNN flow merges its
   ToTensor (x/255) pre-processing model; FINN's streamlining then absorbs the Mul/Add into the input
   quantizer's thresholds (AbsorbMulIntoMultiThreshold, AbsorbAddIntoMultiThreshold) or moves it past the
   first MatMul, so the accelerator still reads raw UINT8 pixels.
4. A score tail that cannot change the argmax (positive scalar Mul/Div, scalar Add/Sub, a TensorNorm or
   one-channel BatchNormalization with a positive scale) is cut off the graph and recorded as the float
   form y = scale * x + offset; anything after the score layer that can change the argmax (a negative or
   per-class scale, a per-class offset, any other op) is refused naming the node.

The user's cleaned model is kept as `model_imported.onnx`: the verification reference is that model run on
the declared float input (hw/check/imported.py), and `import.json` records the declaration and the tail.

The declaration, its sidecar `model.onnx.onebit.json` and the options are export/input_declaration.py
(all sidecar keys optional; command-line options override it):
    {"input": {"scale": "1/255", "offset": 0, "shape": [1, 28, 28], "layout": "NCHW"},
     "dataset": "mnist"}
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from export.input_declaration import (  # noqa: F401  (the front door's names, one import for the callers)
    LAYOUTS, SIDECAR_SUFFIX, ImportRefused, InputDeclaration, add_import_arguments, declare_input, is_qonnx_path,
    parse_number, refuse_import_options,
)
from export.onnx_domains import check_domains
from onebit.atomic import write_atomic, write_text_atomic
from onebit.errors import OnebitError

REFERENCE_FILE = "model_imported.onnx"
IMPORT_FILE = "import.json"
LAYOUT_OPS = ("Reshape", "Flatten", "Transpose", "Identity", "Squeeze", "Unsqueeze")
AFFINE_OPS = ("Mul", "Div", "Add", "Sub")
QUANT_OPS = ("Quant", "BipolarQuant")


def _scalar(model, name: str) -> float | None:
    value = model.get_initializer(name)
    if value is None or value.size != 1:
        return None
    return float(np.asarray(value).reshape(-1)[0])


def _constant_and_dynamic(model, node) -> tuple[np.ndarray | None, int]:
    """(constant operand, index of the dynamic operand) of a binary elementwise node."""
    values = [model.get_initializer(name) for name in node.input]
    if len(node.input) != 2 or (values[0] is None) == (values[1] is None):
        return None, -1
    const_index = 0 if values[0] is not None else 1
    return np.asarray(values[const_index], dtype=np.float64), 1 - const_index


def input_quantizer(model, decl: InputDeclaration) -> dict[str, Any] | None:
    """The first quantizer on the input path and the declared range carried to it through scalar affine ops.

    None where the input meets a compute node (MatMul, Conv, ...) before any quantizer: then the graph
    shows no expected range and the declaration is taken as given.
    """
    low, high = decl.float_range()
    tensor = model.graph.input[0].name
    path = []
    for _ in range(64):
        consumers = model.find_consumers(tensor) or []
        if len(consumers) != 1:
            return None
        node = consumers[0]
        if node.op_type in LAYOUT_OPS:
            tensor = node.output[0]
            continue
        if node.op_type in AFFINE_OPS:
            const, dynamic = _constant_and_dynamic(model, node)
            if const is None or const.size != 1:
                return None
            c = float(const.reshape(-1)[0])
            if node.op_type == "Mul":
                ends = (low * c, high * c)
            elif node.op_type == "Add":
                ends = (low + c, high + c)
            elif node.op_type == "Sub":
                ends = (low - c, high - c) if dynamic == 0 else (c - high, c - low)
            else:  # Div
                if dynamic != 0 or c == 0:
                    return None
                ends = (low / c, high / c)
            low, high = min(ends), max(ends)
            path.append(f"{node.op_type} {c:g}")
            tensor = node.output[0]
            continue
        if node.op_type not in QUANT_OPS:
            return None
        scale = _scalar(model, node.input[1])
        if scale is None or scale <= 0:
            return None  # per-channel input scales: no single expected range to compare with
        info: dict[str, Any] = {"node": node.name or node.op_type, "op_type": node.op_type, "scale": scale,
                                "declared_range_at_quantizer": [low, high], "through": path}
        if node.op_type == "BipolarQuant":
            info.update(levels=2, range=[-scale, scale], boundaries=[0.0])
            return info
        zero_point, bits = _scalar(model, node.input[2]), _scalar(model, node.input[3])
        if zero_point is None or bits is None:
            return None
        from qonnx.custom_op.registry import getCustomOp

        inst = getCustomOp(node)
        signed, narrow = bool(inst.get_nodeattr("signed")), bool(inst.get_nodeattr("narrow"))
        bits = int(round(bits))
        q_min = -(2 ** (bits - 1)) + int(narrow) if signed else 0
        q_max = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1 - int(narrow)
        info.update(bits=bits, signed=signed, narrow=narrow, zero_point=zero_point, levels=q_max - q_min + 1,
                    range=[(q_min - zero_point) * scale, (q_max - zero_point) * scale])
        return info
    return None


CANDIDATES = (("1/255", 0.0, "--input-scale 1/255 (a [0, 1] input, torchvision ToTensor)"),
              ("2/255", -1.0, "--input-scale 2/255 --input-offset -1 (a [-1, 1] input)"),
              ("1", 0.0, "--input-scale 1 (raw pixels 0..255)"))


def _contradiction(info: dict[str, Any]) -> str | None:
    """Why the declared range (carried to the quantizer) contradicts the quantizer, or None."""
    low, high = info["declared_range_at_quantizer"]
    q_low, q_high = info["range"]
    if info["op_type"] == "BipolarQuant" or info.get("bits") == 1:
        boundary = 0.0 if info["op_type"] == "BipolarQuant" else (q_low + q_high) / 2
        if not low < boundary < high:
            return f"never crosses the decision point {boundary:g}: every image would look the same to the model"
        where = (boundary - low) / (high - low)
        if not 0.02 < where < 0.98:  # e.g. raw pixels into bnn_pynq's 2x - 1 then sign: pixel >= 0.5 is +1
            return (f"crosses the decision point {boundary:g} at {where:.1%} of its range: all but the darkest or "
                    "brightest few pixel values would look the same to the model")
        return None
    span, q_span = high - low, q_high - q_low
    inside = max(0.0, min(high, q_high) - max(low, q_low))
    if span > 0 and inside / span < 0.5:
        return f"lies mostly outside the range [{q_low:g}, {q_high:g}]"
    if span < q_span / 8:
        return f"spans under 1/8 of the range [{q_low:g}, {q_high:g}]"
    return None


def check_declaration(model, decl: InputDeclaration) -> dict[str, Any] | None:
    """Refuse a declaration that contradicts the input quantizer's range; returns what was compared.

    The rule (loose on purpose: a trained quantizer's range is learned, not exact): refused when under half
    of the declared input range lies inside the quantizer's range (e.g. raw 0..255 into a [0, 1] quantizer),
    when it spans under 1/8 of the quantizer's range (e.g. 1/255 applied twice), or, for a sign quantizer,
    when its decision point falls outside the inner 96% of the declared range (e.g. raw pixels into
    bnn_pynq's 2x - 1 then sign). A declaration inside the rule that still saturates over 5% is warned.
    """
    info = input_quantizer(model, decl)
    if info is None:
        return None
    low, high = info["declared_range_at_quantizer"]
    q_low, q_high = info["range"]
    declared = f"pixels -> {decl.scale_text}*p{decl.offset:+g} = [{decl.float_range()[0]:g}, {decl.float_range()[1]:g}]"
    if info["through"]:
        declared += f" -> [{low:g}, {high:g}] after {', '.join(info['through'])}"
    where = f"input quantizer {info['node']} ({info['op_type']})"
    why = _contradiction(info)
    if why:
        raise ImportRefused(f"{where}: declared input {declared} {why}; {_hint(model, decl, info)}")
    if info["op_type"] == "BipolarQuant" or info.get("bits") == 1:
        info["verdict"] = "declared range crosses the quantizer's decision point near its middle"
        return info
    span = high - low
    inside = max(0.0, min(high, q_high) - max(low, q_low))
    info["verdict"] = f"{inside / span:.0%} of the declared range inside the quantizer's range" if span else "ok"
    if span and inside / span < 0.95:  # accepted, but said: pixels beyond the range all saturate
        info["warning"] = (f"warning: {1 - inside / span:.0%} of the declared input range {declared} lies outside "
                           f"the range [{q_low:g}, {q_high:g}] of the {where} (those pixels saturate); check "
                           "--input-scale/--input-offset")
        info["verdict"] += f" ({info['warning']})"
    return info


def _hint(model, decl: InputDeclaration, info: dict[str, Any]) -> str:
    """The first usual preprocessing that the quantizer accepts, as the options to write."""
    q_low, q_high = info["range"]
    for scale, offset, options in CANDIDATES:
        candidate = InputDeclaration(scale=parse_number(scale, "scale"), offset=offset, shape=decl.shape,
                                     layout=decl.layout, scale_text=scale)
        found = input_quantizer(model, candidate)
        if found is not None and _contradiction(found) is None:
            return f"the quantizer expects about [{q_low:g}, {q_high:g}]" + \
                (f" after {', '.join(info['through'])} in the graph" if info["through"] else "") + \
                f": declare the preprocessing the model was trained with, e.g. {options}"
    return ("declare the preprocessing the model was trained with (--input-scale/--input-offset or the sidecar; "
            "README 'Bring your own model')")


def score_tail(model) -> tuple[list[Any], float, float]:
    """(tail nodes from the output back, scale A, offset B): y = A * x + B with x the score layer's output.

    Refuses, naming the node, any trailing op that could change which class wins.
    """
    nodes: list[Any] = []
    a, b = 1.0, 0.0  # y = a * t + b for the tensor t currently feeding the tail
    tensor = model.graph.output[0].name
    while True:
        node = model.find_producer(tensor)
        if node is None:
            break
        name = f"{node.name or '?'} ({node.op_type})"
        if node.op_type == "Identity" or (node.op_type in ("Reshape", "Flatten")
                                          and model.get_tensor_shape(node.input[0]) == model.get_tensor_shape(node.output[0])):
            nodes.append(node)
            tensor = node.input[0]
            continue
        if node.op_type == "BatchNormalization":
            params = [model.get_initializer(i) for i in node.input[1:5]]
            if any(p is None for p in params):
                raise ImportRefused(f"score tail node {name} has non-constant parameters; export the model in eval mode")
            gamma, beta, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
            eps = next((attr.f for attr in node.attribute if attr.name == "epsilon"), 1e-5)
            k = gamma / np.sqrt(var + eps)
            c = beta - mean * k
            if not (np.all(k == k[0]) and np.all(c == c[0])):
                raise ImportRefused(f"score tail node {name} scales or shifts each class differently, which changes "
                                    "which class wins; onebit cannot move it off the accelerator exactly")
            k0, c0 = float(k[0]), float(c[0])
            if not k0 > 0:
                raise ImportRefused(f"score tail node {name} has scale {k0:g} <= 0, which changes which class wins")
            a, b = a * k0, a * c0 + b
            nodes.append(node)
            tensor = node.input[0]
            continue
        if node.op_type not in AFFINE_OPS:
            break
        const, dynamic = _constant_and_dynamic(model, node)
        if const is None:
            break  # both operands computed: part of the network, not a tail
        if const.size != 1:
            raise ImportRefused(f"score tail node {name} applies a per-class constant of shape {list(const.shape)}, "
                                "which changes which class wins; fold it into training or remove it before export")
        c = float(const.reshape(-1)[0])
        if node.op_type == "Mul" or (node.op_type == "Div" and dynamic == 0):
            k = c if node.op_type == "Mul" else (1.0 / c if c else 0.0)
            if not k > 0:
                raise ImportRefused(f"score tail node {name} multiplies the scores by {k:g}, which reverses or erases "
                                    "which class wins; refusing")
            a = a * k
        elif node.op_type == "Add":
            b = b + a * c
        elif node.op_type == "Sub" and dynamic == 0:
            b = b - a * c
        else:  # c - x or c / x reverse the order
            raise ImportRefused(f"score tail node {name} computes {'c - x' if node.op_type == 'Sub' else 'c / x'}, "
                                "which reverses which class wins; refusing")
        nodes.append(node)
        tensor = node.input[dynamic]
    return nodes, a, b


def _cut_tail(model, nodes: list[Any]):
    if not nodes:
        return model
    new_output = nodes[-1].input[0] if nodes[-1].op_type not in AFFINE_OPS else \
        nodes[-1].input[_constant_and_dynamic(model, nodes[-1])[1]]
    output = model.graph.output[0]
    shape = model.get_tensor_shape(new_output)
    for node in nodes:
        model.graph.node.remove(node)
    # the graph output keeps its name: the producer of the tail's input now writes it
    producer = model.find_producer(new_output)
    if producer is None:
        raise ImportRefused("the model is nothing but a score tail: no layer between its input and output")
    for index, name in enumerate(producer.output):
        if name == new_output:
            producer.output[index] = output.name
    for consumer in model.find_consumers(new_output) or []:
        for index, name in enumerate(consumer.input):
            if name == new_output:
                consumer.input[index] = output.name
    model.set_tensor_shape(output.name, shape)
    return model


# ---------------------------------------------------------------------------------------------------
# what FINN's flow can carry: the ONNX opset, and the values a bipolar (+-1) tensor can take

FINN_OPSET = 11  # the standard-ONNX opset of FINN's flow and of the merged model_qonnx.onnx (qonnx's preferred)
LAYOUT_AND_POOL_OPS = LAYOUT_OPS + ("MaxPool",)  # a +-1 tensor stays +-1 through them


def default_opset(model) -> int:
    """The model's standard-ONNX opset (its `opset_import` entry for the default domain, wherever it is listed)."""
    return next((int(o.version) for o in model.model.opset_import if o.domain in ("", "ai.onnx")), FINN_OPSET)


def to_finn_opset(model):
    """The model's standard nodes rewritten to their exact opset-11 form, or refused naming the node.

    Why: torch 2.13's exporter writes opset 20 and lists the qonnx domain first, so qonnx's MergeONNXModels
    (which reads `opset_import[0]`) gives the merged graph opset 11, where onnxruntime rejects e.g.
    `Reshape(allowzero=1)` and the Python levels cannot run. FINN's flow is opset 11, so the graph is brought
    to it: a Reshape with allowzero=1 and no 0 in its shape means exactly what opset 11's Reshape means;
    anything else a newer opset adds (an attribute or input opset 11 does not know, an op it lacks) is refused.
    """
    from onnx import defs

    source = default_opset(model)
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        name = f"{node.name or '?'} ({node.op_type})"
        if node.op_type == "Reshape":
            allowzero = next((a for a in node.attribute if a.name == "allowzero"), None)
            if allowzero is not None:
                shape = model.get_initializer(node.input[1])
                if allowzero.i and (shape is None or np.any(np.asarray(shape) == 0)):
                    raise ImportRefused(f"node {name} has allowzero=1 with a computed shape or a 0 in it, which ONNX "
                                        f"opset {FINN_OPSET} (FINN's) cannot express exactly; flatten with a constant "
                                        "shape (torch.flatten / x.view(1, -1)) before export")
                node.attribute.remove(allowzero)  # allowzero=1 without a 0 in the shape = opset 11's Reshape
        try:
            schema = defs.get_schema(node.op_type, FINN_OPSET, "")
        except Exception:  # onnx.defs.SchemaError: no such op in opset 11
            raise ImportRefused(f"node {name} is not an ONNX opset {FINN_OPSET} op (the model is opset {source}); "
                                "FINN's flow cannot build it: replace it before export") from None
        unknown = sorted({a.name for a in node.attribute} - set(schema.attributes))
        if unknown or len(node.input) > schema.max_input:
            what = f"attribute {', '.join(unknown)}" if unknown else f"{len(node.input)} inputs"
            raise ImportRefused(f"node {name} uses {what}, which ONNX opset {FINN_OPSET} (FINN's) does not have (the "
                                f"model is opset {source}); export it in a form opset {FINN_OPSET} has")
    for entry in model.model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = FINN_OPSET
    return model


def _is_bipolar(model, tensor: str) -> bool:
    """Whether `tensor` carries only +-scale: a BipolarQuant's output, through layout ops and max-pooling."""
    for _ in range(64):
        producer = model.find_producer(tensor)
        if producer is None:
            return False
        if producer.op_type == "BipolarQuant":
            return True
        if producer.op_type not in LAYOUT_AND_POOL_OPS:
            return False
        tensor = producer.input[0]
    return False


def refuse_bipolar_padding(model) -> None:
    """Refuse, naming the node, a padding of a +-1 feature map with a value it cannot take.

    Why: the hardware carries a bipolar map as one bit per value (+1 / -1); a Conv with pads (or a Pad node
    with constant 0) adds a third value, 0, that FINN's streamlined graph and HW layers then read as -1 or +1,
    so the accelerator disagrees with the model on most images (Xilinx/finn#996). Brevitas' and FINN's CNV
    use padding=0; an explicit pad with +1 or -1 (times the quantizer's scale) is representable and allowed.
    """
    fix = ("use padding=0 (as Brevitas' and FINN's CNV do) or pad explicitly with +1 or -1 (e.g. "
           "torch.nn.functional.pad(x, (1, 1, 1, 1), value=1.0)), which the hardware can carry")
    for node in model.graph.node:
        if not node.input or not _is_bipolar(model, node.input[0]):
            continue
        name = f"{node.name or '?'} ({node.op_type})"
        if node.op_type == "Conv":
            attrs = {a.name: a for a in node.attribute}
            pads = list(attrs["pads"].ints) if "pads" in attrs else []
            auto_pad = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
            if any(pads) or auto_pad not in ("NOTSET", "VALID"):
                raise ImportRefused(f"node {name} pads a bipolar (+-1) feature map with 0 (pads {pads or auto_pad}), a "
                                    f"value the binary hardware cannot carry; {fix}")
        elif node.op_type == "Pad":
            attrs = {a.name: a for a in node.attribute}
            mode = attrs["mode"].s.decode() if "mode" in attrs else "constant"
            if mode != "constant":
                continue  # reflect/edge repeat the map's own +-1 values
            value = model.get_initializer(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            value = float(np.asarray(value).reshape(-1)[0]) if value is not None else \
                (attrs["value"].f if "value" in attrs else 0.0)
            scale = _bipolar_scale(model, node.input[0])
            if scale is None or not np.isclose(abs(value), scale):
                raise ImportRefused(f"node {name} pads a bipolar (+-{scale if scale is not None else 1:g}) feature "
                                    f"map with {value:g}, a value the binary hardware cannot carry; {fix}")


def _bipolar_scale(model, tensor: str) -> float | None:
    for _ in range(64):
        producer = model.find_producer(tensor)
        if producer is None:
            return None
        if producer.op_type == "BipolarQuant":
            return _scalar(model, producer.input[1])
        tensor = producer.input[0]
    return None


# ---------------------------------------------------------------------------------------------------
# the front door

def load_clean(path: str | Path):
    """The QONNX model at `path` after qonnx's cleanup (the form FINN's builder starts from)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    path = Path(path)
    if not path.is_file():
        raise ImportRefused(f"{path}: no such file; give a QONNX model (.onnx), e.g. from brevitas.export.export_qonnx")
    check_domains(path)  # before qonnx, which imports each node's domain as a Python module (issue 23)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            model = cleanup_model(ModelWrapper(str(path)))
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ImportRefused(f"{path}: not a readable QONNX model ({type(error).__name__}: {first[:150]}); export it "
                            "with brevitas.export.export_qonnx or qonnx's tools") from None
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise ImportRefused(f"{path}: {len(model.graph.input)} inputs and {len(model.graph.output)} outputs; "
                            "onebit builds single-input single-output classifiers")
    return model


def image_shape_of(model, decl: InputDeclaration) -> tuple[int, ...]:
    """(C, H, W) of the dataset images the model takes: declared, or read from a 4-D model input."""
    in_shape = [int(v) for v in model.get_tensor_shape(model.graph.input[0].name)]
    if decl.shape is not None:
        if int(np.prod(decl.shape)) != int(np.prod(in_shape[1:])):
            raise ImportRefused(f"--input-shape {','.join(map(str, decl.shape))} has {int(np.prod(decl.shape))} "
                                f"values but the model input {in_shape} takes {int(np.prod(in_shape[1:]))}")
        return tuple(decl.shape)
    if len(in_shape) == 4:
        return tuple(in_shape[1:]) if decl.layout == "NCHW" else (in_shape[3], in_shape[1], in_shape[2])
    raise ImportRefused(f"the model input is {in_shape}, not an image; declare the image shape with "
                        "--input-shape C,H,W (e.g. 1,28,28) or in the sidecar")


def _preprocessing_model(image_shape: tuple[int, ...], model_input: list[int], decl: InputDeclaration):
    """The pre-processing graph: raw pixels (1, C, H, W) -> the model's input, as FINN's ToTensor model."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    nodes, inits = [], []
    tensor = "pixels"
    c, h, w = image_shape
    current = [1, c, h, w]
    if decl.layout == "NHWC" and len(model_input) == 4:
        nodes.append(helper.make_node("Transpose", [tensor], ["pixels_nhwc"], perm=[0, 2, 3, 1]))
        tensor, current = "pixels_nhwc", [1, h, w, c]
    if current != list(model_input):
        inits.append(helper.make_tensor("pre_shape", TensorProto.INT64, [len(model_input)], list(model_input)))
        nodes.append(helper.make_node("Reshape", [tensor, "pre_shape"], ["pixels_shaped"]))
        tensor = "pixels_shaped"
    inits.append(helper.make_tensor("pre_scale", TensorProto.FLOAT, [], [decl.scale]))
    nodes.append(helper.make_node("Mul", [tensor, "pre_scale"], ["pixels_scaled"]))
    tensor = "pixels_scaled"
    if decl.offset != 0.0:
        inits.append(helper.make_tensor("pre_offset", TensorProto.FLOAT, [], [decl.offset]))
        nodes.append(helper.make_node("Add", [tensor, "pre_offset"], ["pixels_shifted"]))
        tensor = "pixels_shifted"
    graph = helper.make_graph(
        nodes, "onebit_preprocessing",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, c, h, w])],
        [helper.make_tensor_value_info(tensor, TensorProto.FLOAT, list(model_input))], initializer=inits)
    return ModelWrapper(qonnx_make_model(graph, producer_name="onebit"))


def _drop_leading_flatten(model):
    """A model that begins by flattening its 4-D input: the flatten joins the pre-processing Reshape.

    Why: onebit's host-side flatten (hw/finn/build.py step_onebit_uint8_input) expects one Reshape right
    at the graph input; a second one behind the pre-processing Mul would be left to FINN as a HW layer.
    """
    in_name = model.graph.input[0].name
    node = model.find_consumer(in_name)
    if node is None or node.op_type not in ("Reshape", "Flatten") or len(model.find_consumers(in_name)) != 1:
        return model
    out_shape = model.get_tensor_shape(node.output[0])
    if out_shape is None or len(out_shape) != 2:
        return model
    for consumer in model.find_consumers(node.output[0]) or []:
        for index, name in enumerate(consumer.input):
            if name == node.output[0]:
                consumer.input[index] = in_name
    model.graph.node.remove(node)
    model.set_tensor_shape(in_name, [1, int(out_shape[1])])
    return model


def prepare_import(model_path: str | Path, decl: InputDeclaration, out_dir: str | Path) -> dict[str, Any]:
    """Write out_dir/model_qonnx.onnx (+ model_imported.onnx, import.json); returns the import record."""
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.merge_onnx_models import MergeONNXModels

    out_dir = Path(out_dir)
    reference = load_clean(model_path)
    model_input = [int(v) for v in reference.get_tensor_shape(reference.graph.input[0].name)]
    if model_input[0] != 1:
        raise ImportRefused(f"{model_path}: batch size {model_input[0]} in the input shape; export with batch 1")
    check = check_declaration(reference, decl)
    tail_nodes, tail_scale, tail_offset = score_tail(reference)
    image_shape = image_shape_of(reference, decl)
    if check and check.get("warning"):
        import sys

        print(check["warning"], file=sys.stderr)
    tail_input = (tail_nodes[-1].input[_constant_and_dynamic(reference, tail_nodes[-1])[1]]
                  if tail_nodes and tail_nodes[-1].op_type in AFFINE_OPS else
                  tail_nodes[-1].input[0] if tail_nodes else reference.graph.output[0].name)

    import copy

    from qonnx.core.modelwrapper import ModelWrapper

    core = ModelWrapper(copy.deepcopy(reference.model))
    core = _cut_tail(core, score_tail(core)[0])
    core = _drop_leading_flatten(core)
    refuse_bipolar_padding(core)  # before any FINN step: a build that cannot be exact is not started
    pre = _preprocessing_model(image_shape, [int(v) for v in core.get_tensor_shape(core.graph.input[0].name)], decl)
    pre = pre.transform(InferShapes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # opset differences between the two graphs are expected
        merged = core.transform(MergeONNXModels(pre))
    merged = to_finn_opset(merged)  # MergeONNXModels' opset choice is not the model's (see to_finn_opset)
    record = {
        "format": "onebit-import", "version": 1,
        "model": str(Path(model_path).resolve()), "reference": REFERENCE_FILE,
        "input": {**{k: v for k, v in asdict(decl).items() if k != "shape"}, "image_shape": list(image_shape),
                  "model_input_shape": model_input, "float_range": list(decl.float_range())},
        "input_quantizer": check,
        "score_tail": {"nodes": [f"{n.name or '?'} ({n.op_type})" for n in reversed(tail_nodes)],
                       "scale": tail_scale, "offset": tail_offset, "input_tensor": tail_input,
                       "form": (f"y = {tail_scale:.6g} * s {tail_offset:+.6g}" if tail_nodes else "none"),
                       "note": "s = the score layer's output; positive scalar affine: the argmax of y is the argmax of s"},
    }
    merged.set_metadata_prop("onebit_import", json.dumps({"input": record["input"], "score_tail": record["score_tail"]}))
    write_atomic(out_dir / REFERENCE_FILE, lambda tmp: reference.save(str(tmp)))
    write_atomic(out_dir / "model_qonnx.onnx", lambda tmp: merged.save(str(tmp)))
    return record


def write_import_record(out_dir: str | Path, record: dict[str, Any]) -> Path:
    return write_text_atomic(Path(out_dir) / IMPORT_FILE, json.dumps(record, indent=2))


def read_import_record(build_dir: str | Path) -> dict[str, Any] | None:
    """The build folder's import.json, or None for a build of a onebit checkpoint."""
    path = Path(build_dir) / IMPORT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise OnebitError(f"{path}: unreadable ({error}); rerun `onebit build model.onnx`") from None


def declared_input(images: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """uint8 images (N, C, H, W) -> the model's declared float input (scale * p + offset, its layout/shape)."""
    spec = record["input"]
    x = images.astype(np.float32) * np.float32(spec["scale"])
    if spec["offset"]:
        x = x + np.float32(spec["offset"])
    shape = spec["model_input_shape"]
    if spec["layout"] == "NHWC" and len(shape) == 4:
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x.reshape(len(x), *shape[1:]))
