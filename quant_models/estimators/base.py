"""The estimator interface: how a training method plugs into onebit's topologies and trainer.

An estimator is the "quantizer factory plus training hooks" of Brevitas' bnn_pynq pattern. The
topology (quant_models/topologies.py) asks it for every binary weight layer and every binary activation,
giving each a *role*; the trainer calls its hooks; the export stage (export/collapse.py) walks the
built `OnebitNet` and asks each layer for its collapsed form, never the estimator itself.

Contract every estimator's layers follow (docs/design.md §1-2):

* A binary weight layer (returned by `linear` / `conv`) is an `nn.Module` whose forward maps a
  (N, in, ...) float tensor to (N, out, ...), and which implements
  `binary_weight_and_scale() -> (sign, scale)`: `sign` has the layer's weight shape with values in
  {-1, +1} (sign(0) = +1, FINN's bipolar convention) and `scale` is a positive tensor of shape (out,),
  such that in eval mode the layer computes `scale[c] * sum(sign[c] * x)` on +-1 inputs.
  The `score` role layer must have one scale for all classes (a scalar repeated), because a per-class
  scale would change the argmax that the accelerator computes on the integer accumulators.
* A binary activation (returned by `activation`) maps its input to {-1, +1} in eval mode as
  `sign(x + theta)`; it may implement `threshold_offset() -> Tensor (channels,)` for a learnable shift
  theta (default: zero, see `threshold_offset_of`).
* Roles: "first" is the weight layer that reads the input quantizer's output (UINT8 pixels or +-1)
  and the activation after it; "hidden" is every other block; "score" is the last weight layer, whose
  integer accumulators are the class scores (it has no activation).
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterable

import torch
from torch import nn

from onebit.errors import OnebitError

ROLES: tuple[str, ...] = ("first", "hidden", "score")

# Plain types only: hparams are recorded in the checkpoint, which must load with weights_only=True.
HParamValue = bool | int | float | str


def check_role(role: str) -> None:
    if role not in ROLES:
        raise OnebitError(f"unknown layer role {role!r}; expected one of {', '.join(ROLES)}")


class Estimator:
    """Base class of every training method; subclasses set `name`, `hparam_defaults` and the factories.

    Subclasses declare their hyperparameters in `hparam_defaults` (name -> default of a plain type) and
    describe them in `hparam_help`; the constructor rejects unknown names and coerces values given as
    strings (from `--hparam key=value`) to the default's type, so the checkpoint records typed values.
    """

    name: ClassVar[str] = ""
    hparam_defaults: ClassVar[dict[str, HParamValue]] = {}
    hparam_help: ClassVar[dict[str, str]] = {}
    # string hyperparameters that take one of a few values: name -> the allowed values
    hparam_choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    # hyperparameters added after checkpoints were written: name -> the value that reproduces how those
    # older checkpoints were trained (load_checkpoint fills it in where the checkpoint lacks the name)
    hparam_legacy: ClassVar[dict[str, HParamValue]] = {}

    def __init__(self, **hparams: Any) -> None:
        unknown = sorted(set(hparams) - set(self.hparam_defaults))
        if unknown:
            known = ", ".join(sorted(self.hparam_defaults)) or "none"
            raise OnebitError(
                f"estimator {self.name!r} has no hyperparameter {', '.join(unknown)}; known: {known}"
            )
        self.hparams: dict[str, HParamValue] = dict(self.hparam_defaults)
        for key, value in hparams.items():
            self.hparams[key] = _coerce(self.name, key, value, self.hparam_defaults[key])
        for key, allowed in self.hparam_choices.items():
            if self.hparams[key] not in allowed:
                raise OnebitError(f"{self.name}: {key}={self.hparams[key]!r}; use one of "
                                  f"{', '.join(map(repr, allowed))}")

    # ---- factories: the layers the topology is built from --------------------------------------
    def linear(self, in_features: int, out_features: int, *, role: str) -> nn.Module:
        """A binary fully connected layer without bias (see the module docstring for its contract)."""
        raise NotImplementedError

    def conv(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: int, *, role: str
    ) -> nn.Module:
        """A binary 2D convolution without bias, stride 1."""
        raise NotImplementedError

    def activation(self, channels: int, *, role: str) -> nn.Module:
        """A binary activation producing +-1 in eval mode (role of the weight layer that feeds it)."""
        raise NotImplementedError

    # ---- model construction --------------------------------------------------------------------
    def on_build(self, arch: dict[str, Any]) -> None:
        """Called by `build_model` before any factory call, with the (already completed) arch dict.

        An estimator whose layers depend on the arch (e.g. a phase recorded by `finalize_arch`, such
        as BinaryDuo's decoupled form) reads it here. Default: nothing.
        """

    def finalize_arch(self, arch: dict[str, Any]) -> dict[str, Any]:
        """The arch dict recorded in the checkpoint for the final trained model.

        `build_model(finalize_arch(arch), same estimator)` must rebuild a model whose state dict is the
        final model's. Default: the arch unchanged.
        """
        return dict(arch)

    # ---- training hooks -------------------------------------------------------------------------
    def on_epoch_start(self, model: nn.Module, epoch: int, total_epochs: int) -> nn.Module:
        """Called before each epoch (0-based). May return a *new* model (the trainer then rebuilds the
        optimizer and scheduler for it); return `model` itself otherwise."""
        return model

    def on_step_start(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Called before each optimizer step (0-based over the whole run), e.g. for per-iteration
        schedules. Default: nothing."""

    def on_step_end(self, model: nn.Module) -> None:
        """Called after each optimizer step, e.g. to clip latent weights. Default: nothing."""

    def extra_loss(self, model: nn.Module) -> torch.Tensor | float:
        """A term added to the task loss (e.g. a reconstruction penalty). Default: 0."""
        return 0.0

    def optimizer_param_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        """Parameter groups for the optimizer (e.g. a different lr for a scale). Default: one group."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]

    # ---- resumable training ---------------------------------------------------------------------
    def training_state(self, model: nn.Module) -> dict[str, Any]:
        """What training carries from step to step outside `model.state_dict()` (e.g. RBONN's previous
        gradient), as plain types and tensors: saved in the trainer's resumable state after each epoch.
        Default: nothing (schedules are recomputed from the epoch and step)."""
        return {}

    def load_training_state(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Restore what `training_state` returned, on the model rebuilt from the saved state."""

    # ---- description ----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What the checkpoint records: `{"name": ..., "hparams": {...}}` (plain types)."""
        return {"name": self.name, "hparams": dict(self.hparams)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"{type(self).__name__}({args})"


def _coerce(estimator: str, key: str, value: Any, default: HParamValue) -> HParamValue:
    """Coerce `value` to the type of `default` (strings come from the command line)."""
    kind = type(default)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, (int, float)) and value in (0, 1):
                return bool(value)
            raise ValueError(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise OnebitError(
            f"estimator {estimator!r}: hyperparameter {key}={value!r} is not a valid {kind.__name__}; "
            f"give e.g. {key}={default!r}"
        ) from None


def binary_weight_layers(model: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    """Every (name, module) in `model` that implements `binary_weight_and_scale`."""
    for name, module in model.named_modules():
        if callable(getattr(module, "binary_weight_and_scale", None)):
            yield name, module


def threshold_offset_of(activation: nn.Module, channels: int) -> torch.Tensor:
    """The activation's per-channel shift theta in sign(x + theta), zeros if it declares none."""
    offset = getattr(activation, "threshold_offset", None)
    if offset is None:
        return torch.zeros(channels)
    theta = offset().detach().reshape(-1)
    if theta.numel() == 1:
        theta = theta.expand(channels)
    if theta.numel() != channels:
        raise OnebitError(
            f"activation {type(activation).__name__} returns {theta.numel()} threshold offsets for "
            f"{channels} channels; its threshold_offset() must return one value per channel"
        )
    return theta.clone()


def bipolar_sign(x: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1 (FINN's bipolar convention), as a float tensor of +-1."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
