"""The dataflow child of a partitioned FINN model (after ZynqBuild's / VitisBuild's IODMA wrap).

With the bitstream flow, the model FINN hands back after step_synthesize_bitfile is the *parent* graph:
ZynqBuild (finn/transformation/fpgadataflow/make_zynq_proj.py) applies InsertIODMA, InsertDWC,
SpecializeLayers, Floorplan and CreateDataflowPartition, so the parent holds one StreamingDataflowPartition
node per partition: input IODMA, the dataflow layers, output IODMA (VitisBuild does the same with its own
floorplan). Everything onebit reads from the final model (io.json, the accelerator model, the folding, the
report's layer table) describes the dataflow layers, so it reads the child partition whose nodes are the
HW layers; the IODMAs are the DMA engines the driver programs, not part of the computation.
"""
from __future__ import annotations

from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper

from onebit.errors import OnebitError

PARTITION_OP = "StreamingDataflowPartition"
DMA_OPS = ("IODMA_hls", "IODMA")
ONEBIT_METADATA_PREFIX = "onebit_"  # hw/finn/build.py's graph edits record what the host must do


class PartitionError(OnebitError):
    """A partitioned FINN model whose dataflow child cannot be identified."""


def is_partitioned(model: ModelWrapper) -> bool:
    return any(node.op_type == PARTITION_OP for node in model.graph.node)


def _child_path(node) -> Path:
    from qonnx.custom_op.registry import getCustomOp

    path = Path(str(getCustomOp(node).get_nodeattr("model")))
    if not path.is_file():
        raise PartitionError(f"partition {node.name} names the child model {path}, which does not exist; "
                             "rebuild (FINN's scratch folder hw/ of the build folder must be kept)")
    return path


def dataflow_child_path(model: ModelWrapper) -> Path | None:
    """The child model of the partition that holds the dataflow layers; None if `model` is not partitioned.

    The dataflow partition is the one whose nodes are not all IODMAs; onebit builds single-input,
    single-output accelerators, so there must be exactly one.
    """
    found = dataflow_partition(model)
    return None if found is None else found[1]


def dataflow_partition(model: ModelWrapper) -> tuple[str, Path] | None:
    """(partition node name, child model path) of the dataflow partition, or None if not partitioned."""
    if not is_partitioned(model):
        return None
    others = [node.name for node in model.graph.node if node.op_type != PARTITION_OP]
    if others:
        raise PartitionError(f"the partitioned model also holds non-partition nodes {others}; onebit expects "
                             "every node inside a StreamingDataflowPartition (FINN's CreateDataflowPartition)")
    candidates = []
    for node in model.graph.node:
        path = _child_path(node)
        child = ModelWrapper(str(path))
        if not all(n.op_type in DMA_OPS for n in child.graph.node):
            candidates.append((node.name, path))
    if len(candidates) != 1:
        raise PartitionError(f"the partitioned model has {len(candidates)} dataflow partitions "
                             f"({[name for name, _ in candidates]}); onebit drives exactly one between the DMAs")
    return candidates[0]


def dataflow_model(path: str | Path) -> ModelWrapper:
    """The FINN model at `path`, or its dataflow child when it is a partitioned parent."""
    model = ModelWrapper(str(path))
    child = dataflow_child_path(model)
    return model if child is None else ModelWrapper(str(child))


def resolve_final_model(final_model: str | Path, out_dir: str | Path) -> tuple[Path, Path | None]:
    """(model onebit reads, partitioned parent or None) for a build's last saved model.

    A partitioned parent's dataflow child lives in FINN's scratch folder; it is copied next to the step
    models as `finn/dataflow_partition.onnx`, so the build folder names its final HW-layer model itself.
    ZynqBuild prefixes the child's node names with the partition's name ("StreamingDataflowPartition_1_
    MVAU_hls_0"); the copy gets the names back that the estimates, the report and a folding file use
    (`--folding folding.json` on a rebuild must find "MVAU_hls_0"). CreateDataflowPartition does not carry
    the parent's metadata into the child: onebit's own entries (the host-side score affine z = 2p - n, the
    input layout) are copied over, or io.json would describe popcounts as class scores.
    """
    final_model = Path(final_model)
    parent = ModelWrapper(str(final_model))
    found = dataflow_partition(parent)
    if found is None:
        return final_model, None
    partition, child_path = found
    child = ModelWrapper(str(child_path))
    prefix = f"{partition}_"
    for node in child.graph.node:
        if node.name.startswith(prefix):
            node.name = node.name[len(prefix):]
    # FINN's InsertDWC leaves the converters' output tensors annotated FLOAT32 (the hardware uses the node's
    # dataType attribute); each HW op's own datatype inference restores what the stream carries, which the
    # accelerator model reads per layer.
    from qonnx.transformation.infer_datatypes import InferDataTypes

    child = child.transform(InferDataTypes())
    for prop in parent.model.graph.metadata_props:
        if prop.key.startswith(ONEBIT_METADATA_PREFIX) and child.get_metadata_prop(prop.key) is None:
            child.set_metadata_prop(prop.key, prop.value)
    target = Path(out_dir) / "finn" / "dataflow_partition.onnx"
    child.save(str(target))
    return target, final_model
