"""Light check before a FINN graph is used in a fresh process: a graph built with `--mvau rtl` holds
onebit's op types in FINN's RTL domain, which qonnx's getCustomOp resolves only once hw.rtl.custom_op
(heavy: it imports finn) has registered them. Call `ensure_onebit_ops(model)` after loading one."""
from __future__ import annotations

from typing import Any

ONEBIT_OP_TYPES = ("OnebitMVAU_rtl", "OnebitPool_rtl")


def ensure_onebit_ops(model: Any) -> bool:
    """Register onebit's custom ops when `model` (a ModelWrapper or GraphProto) uses them; True if it does."""
    graph = getattr(model, "graph", model)
    if any(node.op_type in ONEBIT_OP_TYPES for node in graph.node):
        import hw.rtl.custom_op  # noqa: F401  (registers on import)

        return True
    return False
