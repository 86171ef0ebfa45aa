"""Estimator registry: one module per training method, looked up by name.

A method module defines an `Estimator` subclass and decorates it with `@register_estimator`; the
import lines at the bottom of this file load every method so that `ESTIMATORS` is complete. Method
modules import `register_estimator` / `Estimator` from this package (defined above those lines, so the
import works while the package is still initialising).
"""
from __future__ import annotations

from typing import Any, TypeVar

from onebit.errors import OnebitError

from .base import ROLES, Estimator, binary_weight_layers, bipolar_sign, threshold_offset_of

ESTIMATORS: dict[str, type[Estimator]] = {}

_E = TypeVar("_E", bound=type[Estimator])


def register_estimator(cls: _E) -> _E:
    """Class decorator: make `cls` available as `get_estimator(cls.name)`."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} must set a non-empty `name` to be registered")
    if cls.name in ESTIMATORS and ESTIMATORS[cls.name] is not cls:
        raise TypeError(f"estimator name {cls.name!r} is registered twice")
    ESTIMATORS[cls.name] = cls
    return cls


def get_estimator(name: str, **hparams: Any) -> Estimator:
    """A fresh estimator instance; OnebitError for an unknown name or hyperparameter."""
    try:
        cls = ESTIMATORS[name]
    except KeyError:
        raise OnebitError(
            f"unknown estimator {name!r}; available: {', '.join(sorted(ESTIMATORS))}"
        ) from None
    return cls(**hparams)


def parse_hparams(items: list[str] | None) -> dict[str, str]:
    """`["key=value", ...]` from the command line -> dict (values are coerced by the estimator)."""
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OnebitError(f"--hparam {item!r} is not of the form key=value; e.g. --hparam t_min=0.1")
        result[key.strip()] = value.strip()
    return result


__all__ = [
    "ESTIMATORS",
    "ROLES",
    "Estimator",
    "binary_weight_layers",
    "bipolar_sign",
    "get_estimator",
    "parse_hparams",
    "register_estimator",
    "threshold_offset_of",
]

# Method modules (each registers itself on import). Add new methods here.
from . import ste  # noqa: E402,F401
from . import binaryduo, hyper, irnet, rbonn  # noqa: E402,F401  (issue #3 methods)
