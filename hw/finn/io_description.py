"""Write `driver/io.json`, the I/O description the board driver and the accelerator model read.

Called by the build (hw/finn/build.py) at the end with the final FINN model: the dataflow partition's child
model after specialization and folding. Shapes follow FINN's `get_driver_shapes` (folded shapes from the
first/last dataflow node, packed shapes from FINN's own packing), so the bytes match FINN's drivers.
Schema: hw/driver/io_spec.py.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from hw.driver.input_packing import PACKING_KEY
from hw.driver.io_spec import FORMAT, VERSION, IOSpec
from hw.driver.packing import datatype_range, packed_bytes
from onebit.atomic import write_text_atomic
from onebit.errors import OnebitError

NCHW_TO_NHWC = (0, 2, 3, 1)
# The processing system's clock into the fabric (FCLK0 / pl_clk0) in finn-plus 1.6.1's Zynq shell: fixed at
# 100 MHz (finn/transformation/fpgadataflow/templates.py: PCW_FPGA0_PERIPHERAL_FREQMHZ {100},
# PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {100}); a clocking wizard makes the accelerator clock from it. The
# driver sets fclk0 to this, never to the accelerator clock (finn-plus-driver pins fclk0_mhz = 100.0 too).
PS_FCLK_MHZ = 100.0
SCORE_AFFINE_KEY = "onebit_score_affine"  # metadata hw/finn/build.py's step_onebit_split_score_affine writes


def _hw_node(model: ModelWrapper, node) -> Any:
    try:
        inst = getCustomOp(node)
    except Exception as error:  # qonnx raises bare Exceptions for unknown domains/op types
        raise OnebitError(f"node {node.name} ({node.op_type}) is not a FINN HW layer ({error}); "
                          "pass the dataflow partition's child model after specialization") from None
    if not hasattr(inst, "get_folded_input_shape"):
        raise OnebitError(f"node {node.name} ({node.op_type}) is not a FINN HW layer; pass the dataflow "
                          "partition's child model after specialization")
    return inst


def stream_shapes(model: ModelWrapper) -> dict[str, Any]:
    """Datatypes and normal/folded/packed shapes (batch 1) of the accelerator's input and output streams."""
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise OnebitError(f"the accelerator model has {len(model.graph.input)} inputs and "
                          f"{len(model.graph.output)} outputs; onebit drives single-input single-output builds")
    in_name, out_name = model.graph.input[0].name, model.graph.output[0].name
    first = model.find_consumer(in_name)
    last = model.find_producer(out_name)
    if first is None or last is None:
        raise OnebitError("the accelerator model has no nodes between its input and output")
    first_inst, last_inst = _hw_node(model, first), _hw_node(model, last)
    idt, odt = model.get_tensor_datatype(in_name).name, model.get_tensor_datatype(out_name).name
    ishape_normal = [int(v) for v in model.get_tensor_shape(in_name)]
    oshape_normal = [int(v) for v in model.get_tensor_shape(out_name)]
    ishape_folded = [int(v) for v in first_inst.get_folded_input_shape()]
    oshape_folded = [int(v) for v in last_inst.get_folded_output_shape()]
    return {
        "idt": idt, "odt": odt,
        "ishape_normal": ishape_normal, "ishape_folded": ishape_folded,
        "ishape_packed": ishape_folded[:-1] + [packed_bytes(ishape_folded[-1], idt)],
        "oshape_normal": oshape_normal, "oshape_folded": oshape_folded,
        "oshape_packed": oshape_folded[:-1] + [packed_bytes(oshape_folded[-1], odt)],
        "input_layout": list(model.get_tensor_layout(in_name) or []),
        "last_op": last.op_type,
    }


def describe(model: ModelWrapper, *, image_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
             batch_size: int = 1000, fclk_mhz: float = PS_FCLK_MHZ, accel_clk_mhz: float | None = None,
             platform: str = "zynq-iodma",
             bitfile: str | None = None, hw_model: str | None = None, score_scale: int = 1,
             score_offset: int = 0) -> dict[str, Any]:
    """The io.json content for a final FINN child model (see hw/driver/io_spec.py for the schema)."""
    s = stream_shapes(model)
    affine_text = model.get_metadata_prop(SCORE_AFFINE_KEY)
    if affine_text and (score_scale, score_offset) == (1, 0):
        # The build moved z = 2p - n off the accelerator: the stream carries the popcount p.
        affine = json.loads(affine_text)
        if affine.get("form") != "popcount" or "n" not in affine:
            raise OnebitError(f"unknown score affine {affine_text} in the model metadata; rebuild")
        score_scale, score_offset = 2, -int(affine["n"])
    packing_text = model.get_metadata_prop(PACKING_KEY)
    packing = json.loads(packing_text) if packing_text else None
    lo, hi = datatype_range(s["idt"])
    if packing is not None:
        if s["idt"] != "BINARY" or int(np.prod(s["ishape_normal"][1:])) != int(packing["bits"]):
            raise OnebitError(f"the accelerator input is {s['idt']} {s['ishape_normal']}, not the {packing['bits']} "
                              "BINARY bits its input packing records; rebuild")
    elif lo > 0 or hi < 255:
        raise OnebitError(f"the accelerator input datatype is {s['idt']}, not one that holds raw uint8 pixels; "
                          "export the model with raw-pixel UINT8 input (design.md section 1)")
    normal = s["ishape_normal"]
    transpose = None
    # FINN's HW layers take 4D tensors channels-last; a partitioned child (ZynqBuild's CreateDataflowPartition)
    # loses the layout annotation the un-partitioned graph carries, so an unannotated 4D input is NHWC too
    if len(normal) == 4 and s["input_layout"] in (["N", "H", "W", "C"], []):
        # FINN streams channels-last; the dataset gives NCHW, so the driver transposes (what FINN leaves
        # to the user as the Transpose outside the dataflow partition).
        transpose = list(NCHW_TO_NHWC)
        derived = (normal[3], normal[1], normal[2])
    else:
        derived = tuple(normal[1:])
    image_shape = tuple(image_shape) if image_shape is not None else derived
    if int(np.prod(image_shape)) != (int(packing["pixels"]) if packing else int(np.prod(normal[1:]))):
        raise OnebitError(f"image shape {list(image_shape)} does not fill the accelerator input {normal}")
    classes = int(num_classes or int(np.prod(s["oshape_normal"][1:])))
    # An XNOR score layer without the affine in hardware streams the popcount p; z = 2p - N follows.
    values = "class_scores" if (score_scale, score_offset) == (1, 0) else "popcount"
    return {
        "format": FORMAT, "version": VERSION,
        "platform": platform, "batch_size": int(batch_size), "fclk_mhz": float(fclk_mhz),
        "accel_clk_mhz": None if accel_clk_mhz is None else float(accel_clk_mhz),
        "bitfile": bitfile, "hw_model": hw_model,
        "dma": {"input": "idma0", "output": "odma0"},
        "input": {"pixels": "uint8", "image_shape": list(image_shape), "transpose": transpose,
                  "finn_datatype": s["idt"], "shape_normal": normal, "shape_folded": s["ishape_folded"],
                  "shape_packed": s["ishape_packed"],
                  **({PACKING_KEY: packing} if packing else {})},
        "output": {"finn_datatype": s["odt"], "shape_normal": s["oshape_normal"],
                   "shape_folded": s["oshape_folded"], "shape_packed": s["oshape_packed"],
                   "num_classes": classes, "values": values,
                   "score_scale": int(score_scale), "score_offset": int(score_offset)},
        "io_shape_dict": {
            "idt": [f"DataType['{s['idt']}']"], "odt": [f"DataType['{s['odt']}']"],
            "ishape_normal": [normal], "oshape_normal": [s["oshape_normal"]],
            "ishape_folded": [s["ishape_folded"]], "oshape_folded": [s["oshape_folded"]],
            "ishape_packed": [s["ishape_packed"]], "oshape_packed": [s["oshape_packed"]],
            "idma_names": ["idma0"], "odma_names": ["odma0"], "num_inputs": 1, "num_outputs": 1,
            "number_of_external_weights": 0,
        },
    }


def write_io_description(model: ModelWrapper, out_dir: Path, **options: Any) -> Path:
    """Write `out_dir/io.json` atomically for the final FINN child model; returns its path.

    `options` are those of `describe` (image_shape, num_classes, batch_size, fclk_mhz (the PS clock),
    accel_clk_mhz (the build's accelerator clock), bitfile, hw_model relative to the build folder,
    score_scale/score_offset when the stream carries the popcount), and `partitioned_parent`: the parent
    model after ZynqBuild's IODMA wrap, whose FINN driver shapes (finn.util.basic.get_driver_shapes) the
    description must equal.
    """
    parent = options.pop("partitioned_parent", None)
    if options.get("image_shape") is None and len(model.get_tensor_shape(model.graph.input[0].name)) != 4:
        # An MLP's accelerator takes the flattened vector; the image shape users pass is the exported
        # network's (N, C, H, W) input, which the build folder's QONNX model records.
        qonnx_path = Path(out_dir).parent / "model_qonnx.onnx"
        if qonnx_path.is_file():
            import onnx

            dims = onnx.load(str(qonnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
            options["image_shape"] = tuple(int(d.dim_value) for d in dims[1:])
    content = describe(model, **options)
    IOSpec(content, "generated io.json")  # the driver's own check, so a build never ships one it refuses
    if parent is not None:
        check_against_driver_shapes(content, parent)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "io.json"
    return write_text_atomic(target, json.dumps(content, indent=2))


def check_against_driver_shapes(content: dict[str, Any], parent: str | Path | ModelWrapper) -> None:
    """io.json's DMA shapes must be those FINN's own driver generation derives from the partitioned parent."""
    from finn.util.basic import get_driver_shapes

    model = parent if isinstance(parent, ModelWrapper) else ModelWrapper(str(parent))
    finn = get_driver_shapes(model)
    ours = content["io_shape_dict"]
    for key in ("ishape_normal", "ishape_folded", "ishape_packed", "oshape_normal", "oshape_folded", "oshape_packed"):
        if [list(map(int, s)) for s in finn[key]] != [list(map(int, s)) for s in ours[key]]:
            raise OnebitError(f"io.json {key} {ours[key]} differs from FINN's driver shapes {finn[key]} of the "
                              f"partitioned model; the DMA would move the wrong bytes (report this as a onebit bug)")
    for key in ("idt", "odt"):
        if [str(v) for v in finn[key]] != [str(v) for v in ours[key]]:
            raise OnebitError(f"io.json {key} {ours[key]} differs from FINN's driver datatypes {finn[key]}")
