"""Compatibility shim between Brevitas 0.13.0 and torch 2.13 (the one documented patch).

torch 2.13 removed named tensors, including `Tensor.rename`. Brevitas 0.13.0 still calls
`tensor.rename(None)` in its quant layers to drop dimension names that onebit never sets. With names
gone from torch, `rename(None)` is the identity, so restoring exactly that behaviour is safe. Any other
use of `rename` raises, so a future caller that relies on named tensors fails loudly instead of silently.
"""
from __future__ import annotations

import torch


def _rename_none_only(self: torch.Tensor, *names, **rename_map) -> torch.Tensor:
    if rename_map or any(name is not None for name in names):
        raise NotImplementedError("named tensors were removed in torch 2.13; only rename(None) is shimmed")
    return self


def install() -> None:
    """Add the shim if this torch lacks `Tensor.rename`; idempotent."""
    if not hasattr(torch.Tensor, "rename"):
        torch.Tensor.rename = _rename_none_only


install()
