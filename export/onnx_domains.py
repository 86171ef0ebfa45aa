"""Which ONNX node domains (and opsets) onebit reads, checked before any onnx/qonnx call that may import one.

qonnx resolves a node's domain to a Python module and imports it (qonnx.custom_op.registry:
`importlib.import_module(domain)`), from anywhere on sys.path, which holds the working directory under
`python -m`. A model.onnx with a node in domain `onebit_evil_ops` next to `onebit_evil_ops.py` would run that
file (issue 23 item 2). So every graph onebit loads from a file is first read as plain protobuf (which
imports nothing), and any node, in the main graph, a function or a subgraph, whose domain is not one onebit
supports is refused with one line naming it, before qonnx or onnx's shape inference sees the model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from onebit.errors import OnebitError

# A QONNX model from elsewhere (Brevitas' export_qonnx, the QONNX zoo): standard ONNX and QONNX's own ops
# (Quant, BipolarQuant, Trunc, MultiThreshold), under their current and older domain names.
MODEL_DOMAINS = frozenset({"", "ai.onnx", "qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general"})
# A build folder's graphs (finn/*.onnx): FINN's hardware layers and onebit's own RTL ops as well.
BUILD_DOMAINS = MODEL_DOMAINS | {"finn.custom_op.fpgadataflow", "finn.custom_op.fpgadataflow.hls",
                                 "finn.custom_op.fpgadataflow.rtl", "hw.rtl.custom_op"}


class UnsupportedDomain(OnebitError):
    """A graph node in a domain onebit does not support (its module would be imported and run)."""


def _nodes(graph: Any, where: str) -> Iterator[tuple[Any, str]]:
    from onnx import AttributeProto

    for node in graph.node:
        yield node, where
        for attribute in node.attribute:  # If/Loop/Scan bodies
            if attribute.type == AttributeProto.GRAPH:
                yield from _nodes(attribute.g, f"{where} > {node.name or node.op_type}.{attribute.name}")
            elif attribute.type == AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _nodes(sub, f"{where} > {node.name or node.op_type}.{attribute.name}")


def check_domains(path: str | Path, allowed: frozenset[str] = MODEL_DOMAINS) -> None:
    """Refuse the ONNX file at `path` if a node's domain is not in `allowed` (reads protobuf only)."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)  # parsing imports no domain module
    except Exception as error:  # protobuf's DecodeError and friends: not an ONNX file
        raise UnsupportedDomain(f"{path}: not an ONNX model ({type(error).__name__}); give a QONNX model (.onnx), "
                                "e.g. from brevitas.export.export_qonnx") from None
    newest = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:  # an opset newer than this onnx knows fails deep inside qonnx and FINN
        if opset.domain in ("", "ai.onnx") and not 1 <= opset.version <= newest:
            raise UnsupportedDomain(f"{path}: ONNX opset {opset.version}, but this onebit's onnx knows opsets 1.."
                                    f"{newest}; export the model with opset {min(newest, 13)} (e.g. "
                                    "export_qonnx(..., opset_version=13))")
    places = [(model.graph, "graph")] + [(function, f"function {function.name}") for function in model.functions]
    for graph, where in places:
        for node, inside in _nodes(graph, where):
            if node.domain not in allowed:
                raise UnsupportedDomain(
                    f"{path}: node {node.name or '?'} ({node.op_type}, {inside}) is in domain {node.domain!r}, which "
                    f"onebit does not support (supported: {', '.join(repr(d) for d in sorted(allowed))}); its Python "
                    "module was not imported. Export the model with standard ONNX and QONNX ops")
