"""FINN's dataflow partition as the chain the whole-accelerator simulation (stitch.py) builds: the compute
nodes in stream order, the FIFO depths FINN (or onebit's sizing) stitched between them, the input-vector
depth rule in front of an MVAU, and the build's copies of onebit's modules for the chain.
"""
from __future__ import annotations

from pathlib import Path

from hw.rtl.registry import ensure_onebit_ops
from hw.rtl.verilator import SV_DIR
from onebit.errors import OnebitError

# FINN's stitching nodes (InsertFIFO / InsertDWC in step_set_fifo_depths): the whole-accelerator top level
# has its own FIFO and width converter stages in their places, at the depths these FIFOs carry.
STITCH_OPS = ("StreamingFIFO", "StreamingDataWidthConverter")


def _chain(model) -> tuple[list, list[list[int]] | None]:
    """The partition's compute nodes in stream order, and the depths of FINN's stitched FIFOs in each gap
    (before the first node, between two nodes, after the last; None when FINN inserted none). A graph
    that is not one chain is refused."""
    from qonnx.custom_op.registry import getCustomOp

    nodes = list(model.graph.node)
    if not nodes:
        raise OnebitError("the dataflow partition has no node")
    for prev, node in zip(nodes, nodes[1:]):
        if len(prev.output) != 1 or node.input[0] != prev.output[0]:
            raise OnebitError(f"{node.name}: the whole-accelerator simulation chains nodes in order, but "
                              f"{node.name} does not read {prev.name}'s output (branching graphs are not supported)")
    compute, gaps = [], [[]]
    for node in nodes:
        if node.op_type.startswith(STITCH_OPS[0]):
            gaps[-1].append(int(getCustomOp(node).get_nodeattr("depth")))
        elif not node.op_type.startswith(STITCH_OPS[1]):
            compute.append(node)
            gaps.append([])
    if not compute:
        raise OnebitError("the dataflow partition has no compute node (only FIFOs / width converters)")
    return compute, (gaps if any(gaps) else None)


def stitched_depths(model) -> tuple[dict[str, int] | None, str]:
    """The FIFO depths the design is stitched with, by this module's FIFO stage names, and where they
    come from: FINN's StreamingFIFO nodes (after step_set_fifo_depths), else the depths onebit's FIFO
    sizing wrote into the nodes' inFIFODepths/outFIFODepths (hw/finn/fifo_depths.py records them in the
    model's metadata); (None, "") when neither (the design is sized here)."""
    import json

    ensure_onebit_ops(model)
    _, gaps = _chain(model)
    if gaps is not None:
        from hw.rtl.stitch import plan_accelerator

        rule = plan_accelerator(model, attribute_depths=False)
        names: list[list[str]] = [[]]
        for stage in rule.stages:
            if stage.kind == "fifo":
                names[-1].append(stage.name)
            elif stage.kind != "dwc":
                names.append([])
        if [len(g) for g in gaps] != [len(n) for n in names]:
            raise OnebitError(f"FINN's stitched FIFOs ({[len(g) for g in gaps]} per gap between nodes) are not laid "
                              f"out as the whole-accelerator simulation places them ({[len(n) for n in names]})")
        return {name: depth for gap, group in zip(gaps, names) for name, depth in zip(group, gap)}, \
            "FINN's StreamingFIFO nodes"
    recorded = model.get_metadata_prop(FIFO_DEPTHS_KEY) if hasattr(model, "get_metadata_prop") else None
    if recorded:
        data = json.loads(recorded)
        if data.get("source") == "onebit":
            return {k: int(v) for k, v in data["depths"].items()}, "onebit's FIFO sizing (node attributes)"
    return None, ""


FIFO_DEPTHS_KEY = "onebit_fifo_depths"   # model metadata written by hw/finn/fifo_depths.py


def vector_beats(consumer, elems: int) -> int:
    """Beats of `elems` elements in one input vector of an MVAU consumer (0 for other nodes).

    An MVAU reads its whole input vector during its first output fold and then computes NF - 1 more
    folds without reading; the producer keeps producing meanwhile, so the FIFO between them must hold
    one vector or the producer stalls and the chain runs slower than its bottleneck (FINN's own MVAU
    behaves the same; FINN's step_set_fifo_depths sizes these FIFOs by simulation on a Vivado host).
    """
    attrs = consumer.get_nodeattr_types()
    if "MW" not in attrs or "SIMD" not in attrs:
        return 0
    return -(-int(consumer.get_nodeattr("MW")) // int(elems))


def _add_build_copies(model, node, inst, library: dict[str, tuple[Path, str]], notes: list[str]) -> None:
    """Add one onebit node's modules as the build folder holds them (custom_op.build_modules) to `library`;
    one module with two different copies in the build is refused."""
    from hw.rtl.custom_op import build_modules

    try:
        modules = build_modules(model, inst)
    except FileNotFoundError as error:
        notes.append(f"{node.name}: {error}; simulated with the repository's hw/rtl/sv")
        modules = [SV_DIR / name for name in inst.SOURCES]
    for path in modules:
        seen = library.setdefault(path.name, (path, node.name))
        if seen[0].read_bytes() != path.read_bytes():
            raise OnebitError(f"{node.name}: the build's {path} differs from {seen[1]}'s copy {seen[0]}; one module "
                              "cannot have two versions in one design: rerun `onebit build`")
