"""Pooling over one axis (max, mean or sum): over V for readouts, over a fibre for
invariant readouts. No dependencies inside fernn, so flows and layers can both use it."""

from __future__ import annotations

from torch import Tensor

__all__ = ["POOL_MODES", "pool_velocities"]

POOL_MODES = ("max", "mean", "sum")


def pool_velocities(h: Tensor, mode: str = "max", dim: int = -4) -> Tensor:
    """Pool a lifted state over its V axis (``dim``, default the V of ``(..., V, C, H, W)``).

    The pooled readout is invariant to relabelling V, so it inherits the law of the
    lifted state up to the velocities at the edge of V (see FERNN.md §3).
    """
    if mode == "max":
        return h.amax(dim)
    if mode == "mean":
        return h.mean(dim)
    if mode == "sum":
        return h.sum(dim)
    raise ValueError(f"pool mode must be one of {POOL_MODES}, got {mode!r}")
