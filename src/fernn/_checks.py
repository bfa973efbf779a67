"""Validation at the public boundary: one place for the checks every public entry point
makes, so that a user's mistake gets a short message naming the argument, the value and
the fix instead of a traceback from deep inside torch.

- :func:`positive_int`, :func:`odd_kernel_size`, :func:`integer`, :func:`unit_interval`:
  constructor and call arguments;
- :func:`check_tensor`: a tensor of the documented rank, no empty dimension;
- :func:`check_input`: the same, plus channels, device and dtype against a module's
  parameters (under autocast its dtype is accepted too: bf16-mixed training feeds a
  prediction, computed in bfloat16, back into a float32 module).
"""

from __future__ import annotations

import functools
import numbers

import torch
from torch import Tensor, nn

__all__ = ["positive_int", "odd_kernel_size", "integer", "unit_interval", "check_tensor",
           "check_input", "check_like"]

_CAST = {torch.float32: "float", torch.float64: "double", torch.float16: "half",
         torch.bfloat16: "bfloat16"}


def positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int, or ``TypeError`` (not an integer) / ``ValueError`` (< minimum).

    Python or NumPy integers only: ``2.5``, ``2.0``, ``"2"`` and ``True`` are refused, so
    that a wrong type in a configuration is never rounded silently.
    """
    what = {0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"an integer >= {minimum}")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def odd_kernel_size(value, name: str = "kernel_size") -> int:
    """A positive odd integer (a centred convolution kernel)."""
    value = positive_int(value, name)
    if value % 2 == 0:
        raise ValueError(f"{name} must be a positive odd integer (a centred kernel), got {value}; "
                         f"use {value - 1} or {value + 1}")
    return value


def integer(value, name: str) -> int:
    """``value`` as an int (any sign), or ``TypeError``; see :func:`positive_int`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def unit_interval(value, name: str, *, closed_right: bool = True) -> float:
    """``value`` as a float in [0, 1] (``[0, 1)`` with ``closed_right=False``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1{']' if closed_right else ')'}, "
                        f"got {value!r} ({type(value).__name__})")
    value = float(value)
    ok = 0.0 <= value <= 1.0 if closed_right else 0.0 <= value < 1.0
    if not ok:  # also NaN
        raise ValueError(f"{name} must lie in [0, 1{']' if closed_right else ')'}, got {value!r}")
    return value


@functools.lru_cache(maxsize=256)
def _dims(layout: str) -> tuple[str, ...]:
    """The dimension names of a layout: ``"(B, T, C=1, H, W)"`` → ``("B", "T", "C", "H",
    "W")``."""
    return tuple(d.strip().split("=")[0] for d in layout.strip("()").split(","))


def check_tensor(x, name: str, layout: str, who: str) -> None:
    """``x`` is a tensor of ``len(layout)`` dimensions, none of them empty.

    ``layout`` names the dimensions, e.g. ``"(B, T, C, H, W)"``; ``who`` the caller for
    the message (``"FlowRNN"``).
    """
    dims = _dims(layout)
    if not isinstance(x, Tensor):
        raise TypeError(f"{who} expects {name} as a torch.Tensor {layout}; got "
                        f"{type(x).__name__}. Convert it with torch.as_tensor({name}).")
    if x.dim() != len(dims):
        raise ValueError(f"{who} expects {name} of shape {layout}; got {tuple(x.shape)}")
    if 0 not in x.shape:
        return
    for dim, size in zip(dims, x.shape):
        if size == 0:
            raise ValueError(f"{who} got an empty {name}: {dim}=0 in shape {tuple(x.shape)} "
                             f"{layout}; every dimension must be at least 1")


def _reference(module: nn.Module) -> Tensor | None:
    """The module's first floating parameter (or buffer): its dtype and device."""
    for tensors in (module.parameters(), module.buffers()):
        for t in tensors:
            if t.is_floating_point():
                return t
    return None


def check_like(x: Tensor, name: str, ref: Tensor, who: str, *, ref_name: str = "module") -> None:
    """``x`` is on ``ref``'s device (else ``ValueError``) and in its dtype, or under
    autocast in autocast's dtype (what the module's own outputs are then); else
    ``TypeError`` naming both dtypes and the casts that fix it."""
    if x.device != ref.device:
        raise ValueError(
            f"{who}: {name} is on {x.device} but the {ref_name}'s parameters are on "
            f"{ref.device}; move one: {name}.to('{ref.device}') or {ref_name}.to('{x.device}')"
        )
    if x.dtype == ref.dtype:
        return
    if torch.is_autocast_enabled(x.device.type) and x.dtype == torch.get_autocast_dtype(
            x.device.type):
        return  # autocast's own dtype (e.g. a prediction fed back as the next input)
    fix = f"{name}.{_CAST[ref.dtype]}()" if ref.dtype in _CAST else f"{name}.to({ref.dtype})"
    if x.is_floating_point() and x.dtype in _CAST:
        fix += f" or {ref_name}.{_CAST[x.dtype]}()"
    raise TypeError(
        f"{who}: {name} has dtype {x.dtype} but the {ref_name}'s parameters are {ref.dtype}; "
        f"convert one: {fix}"
    )


def check_input(x, module: nn.Module, layout: str, *, name: str = "x",
                channels: int | None = None, who: str | None = None) -> None:
    """Validate the input of a public ``forward``: see :func:`check_tensor` and
    :func:`check_like`; ``channels``: the size the ``C`` dimension of ``layout`` must have."""
    who = who or type(module).__name__
    check_tensor(x, name, layout, who)
    if channels is not None:
        c = _dims(layout).index("C")
        if x.shape[c] != channels:
            raise ValueError(
                f"{who} was built for C={channels} input channels; got {name} of shape "
                f"{tuple(x.shape)} {layout} with C={x.shape[c]}"
            )
    ref = _reference(module)
    if ref is not None:
        check_like(x, name, ref, who)
