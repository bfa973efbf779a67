"""Type checks of config dataclasses, from their annotations: a value of the wrong type
(``epochs = "abc"``, ``epochs = 1.5``, ``flip = 1``) is a ``ValueError`` that names the key,
the value and the type it needs — before any code uses it."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

__all__ = ["check_field_types"]

_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
          list: "a list", dict: "a table"}


def _ok(value, kind) -> bool:
    if kind is Any:
        return True
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_ok(value, k) for k in typing.get_args(kind))
    return isinstance(value, origin or kind)


def _describe(kind) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        parts = [_describe(k) for k in typing.get_args(kind) if k is not type(None)]
        none = type(None) in typing.get_args(kind)
        return " or ".join(parts) + (" (or none)" if none else "")
    return _NAMES.get(typing.get_origin(kind) or kind, getattr(kind, "__name__", str(kind)))


def check_field_types(obj, where: str = "") -> None:
    """Raise ``ValueError`` for the first field of dataclass ``obj`` whose value does not
    have its annotated type (ints are accepted for floats; floats must be finite)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        kind = hints.get(f.name, Any)
        value = getattr(obj, f.name)
        if not _ok(value, kind):
            raise ValueError(f"{where}{f.name} must be {_describe(kind)}, got {value!r}")
