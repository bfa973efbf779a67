"""Check flow equivariance numerically: move the input by a flow, compare the outputs.

For a module whose output is a lifted hidden sequence ``(B, T, V, C, H, W)`` the law is
(FERNN.md §3)::

    f'_t = ψ_{s+t}(ν̂) f_t   ⇒   h'_t(ν) = ψ_{s+t}(ν̂) h_t(ν − ν̂)   for every ν with ν − ν̂ ∈ V

(``s`` = ``start``, 0 for a sequence that starts at its first frame). Slices whose
partner ν − ν̂ lies outside V have nothing to map from; they are listed in
``EquivarianceReport.unmatched`` and left out of the errors. For a module whose output is
a frame sequence ``(B, T', C, H, W)`` (a pooled readout, a predictor) the law is
``y'_k = ψ_{s+k}(ν̂) y_k``.

A check never passes on non-finite numbers: a NaN or infinite input is refused
(``ValueError``), and a module whose output holds NaN or inf gets a report with
``max_error = nan`` (or inf) and ``nonfinite`` > 0, which :func:`assert_flow_equivariant`
fails, saying so.

Errors are relative: ``max |h' − expected| / max |expected|`` over the compared slices
(one scale for the whole output, so near-zero entries do not inflate them). The report
also gives the L2 form ``‖h' − expected‖ / ‖expected‖`` (``rel_l2``), the figure quoted
for the V-pooled readout in FERNN.md §3.

Example::

    from fernn.testing import assert_flow_equivariant
    assert_flow_equivariant(rnn, flow, torch.rand(2, 6, 1, 16, 16))   # every ν̂ of V
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from ._checks import check_tensor
from ._flows import Flow

__all__ = ["EquivarianceReport", "flow_equivariance_error", "assert_flow_equivariant"]

_OUTPUT_KINDS = ("lifted", "frames")


@dataclass(frozen=True)
class EquivarianceReport:
    """The result of one equivariance check (one input-flow velocity ν̂).

    Attributes:
        velocity: ν̂, the velocity the input was moved by.
        max_error: worst relative error over everything compared.
        rel_l2: ``‖actual − expected‖₂ / ‖expected‖₂`` over everything compared.
        per_velocity: for lifted outputs, ν → worst relative error of slice ν (only the
            slices where the law applies).
        per_step: worst relative error at each output time step.
        unmatched: slices ν whose partner ν − ν̂ lies outside V (not compared).
        scale: ``max |expected|``, the denominator of the relative errors.
        dtype: the dtype the check ran in.
        nonfinite: how many values of the two outputs (of ``x`` and of the moved ``x``)
            are NaN or infinite; then ``max_error`` is NaN or inf and the check fails.
    """

    velocity: object
    max_error: float
    rel_l2: float = 0.0
    per_velocity: dict = field(default_factory=dict)
    per_step: tuple = ()
    unmatched: tuple = ()
    scale: float = 0.0
    dtype: torch.dtype = torch.float64
    nonfinite: int = 0

    @property
    def finite(self) -> bool:
        """The module's outputs held no NaN or inf (and so the errors are numbers)."""
        return self.nonfinite == 0 and math.isfinite(self.max_error)

    def passed(self, rtol: float) -> bool:
        """``max_error <= rtol`` with finite outputs (NaN never passes)."""
        return self.finite and self.max_error <= rtol

    def __str__(self) -> str:
        if self.nonfinite:
            return (f"ν̂={self.velocity}: the module's output holds {self.nonfinite} NaN/inf "
                    f"value(s) ({self.dtype}); no error can be measured. Check its weights "
                    "and its input.")
        finite = {v: e for v, e in self.per_velocity.items() if math.isfinite(e)}
        worst = max(finite, key=finite.get) if finite else None
        text = (
            f"ν̂={self.velocity}: max relative error {self.max_error:.3e}, "
            f"relative L2 {self.rel_l2:.3e} ({self.dtype})"
        )
        if worst is not None:
            text += f", worst slice ν={worst}"
        if self.unmatched:
            text += f", {len(self.unmatched)} slice(s) at the edge of V not compared"
        return text


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _prepare(module: Callable, dtype: torch.dtype) -> Callable:
    """A copy of ``module`` in ``dtype`` and eval mode (dropout off); callables as they are."""
    if isinstance(module, nn.Module):
        return copy.deepcopy(module).to(dtype).eval()
    return module


def flow_equivariance_error(
    module: Callable,
    flow: Flow,
    x: Tensor,
    nu,
    *,
    output: str = "lifted",
    readout: Callable[[Tensor], Tensor] | None = None,
    start: int = 0,
    dtype: torch.dtype = torch.float64,
    forward_kwargs: dict | None = None,
) -> EquivarianceReport:
    """Measure how far ``module`` is from flow equivariance under the input flow ``nu``.

    Args:
        module: maps ``(B, T, C, H, W)`` to a lifted ``(B, T, V, C, H, W)`` output or to
            frames ``(B, T', C, H, W)``; a tuple output is read at its first element. An
            ``nn.Module`` is copied, cast to ``dtype`` and put in eval mode; the original
            is untouched.
        flow: the flow that moves the input and the output (its V is the output's V).
        x: input sequence ``(B, T, C, H, W)``.
        nu: the input velocity ν̂ (an element of the flow's group; it need not lie in V).
        output: ``"lifted"`` or ``"frames"`` (see the module docstring).
        readout: applied to the module's (first) output before comparing, e.g.
            ``fernn.pool_velocities`` to check a V-pooled readout as ``"frames"``.
        start: time index of the first output step (e.g. the number of observed frames
            for a predictor's first predicted frame).
        dtype: the dtype of the computation (float64 by default).
        forward_kwargs: extra keyword arguments for every call of the module (e.g.
            ``{"pred_len": 5}`` for a predictor).

    Returns:
        An :class:`EquivarianceReport`.
    """
    if output not in _OUTPUT_KINDS:
        raise ValueError(f"output must be one of {_OUTPUT_KINDS}, got {output!r}")
    check_tensor(x, "x", "(B, T, C, H, W)", "flow_equivariance_error")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype (e.g. torch.float64), got {dtype!r}")
    if x.is_floating_point() or x.is_complex():
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(
                f"x holds {bad} NaN/inf value(s); an equivariance check needs a finite input "
                "(a NaN compares as no error). Use e.g. torch.nan_to_num(x) or a fresh torch.rand."
            )
    run = _prepare(module, dtype)
    x = x.to(dtype)
    read = readout if readout is not None else (lambda out: out)
    kwargs = forward_kwargs or {}
    with torch.no_grad():
        y = read(_first(run(x, **kwargs)))
        y_moved = read(_first(run(flow.move_frames(x, nu), **kwargs)))
    if y.shape != y_moved.shape:
        raise ValueError(f"output shapes differ: {tuple(y.shape)} vs {tuple(y_moved.shape)}")
    nonfinite = int((~torch.isfinite(y)).sum()) + int((~torch.isfinite(y_moved)).sum())

    unmatched: tuple = ()
    per_velocity: dict = {}
    if output == "lifted":
        if y.dim() != 6 or y.shape[2] != len(flow):
            raise ValueError(
                f"a lifted output must be (B, T, V={len(flow)}, C, H, W); got {tuple(y.shape)}"
            )
        partner = flow.partner_indices(nu).to(y.device)  # (V,)
        valid = partner >= 0
        if not bool(valid.any()):
            raise ValueError(
            f"no velocity ν of {flow!r} has its partner ν − {nu} in V; to test a G-RNN "
            "(V = {0}), compare its state as frames: output='frames', "
            "readout=lambda h: h[:, :, 0]"
        )
        times = torch.arange(start, start + y.shape[1], device=y.device)
        expected = flow.move_lifted(y[:, :, partner[valid]], nu, times)  # (B, T, V', C, H, W)
        actual = y_moved[:, :, valid]
        diff = actual - expected
        err = diff.abs()
        scale = float(expected.abs().max())
        denom = scale if scale > 0 else 1.0
        kept = [v for v, ok in zip(flow.elements, valid.tolist()) if ok]
        per_v = err.amax(dim=(0, 1, 3, 4, 5)) / denom  # (V',)
        per_velocity = {v: float(e) for v, e in zip(kept, per_v.tolist())}
        unmatched = tuple(v for v, ok in zip(flow.elements, valid.tolist()) if not ok)
        per_step = err.amax(dim=(0, 2, 3, 4, 5)) / denom  # (T,)
    else:
        if y.dim() != 5:
            raise ValueError(f"a frames output must be (B, T, C, H, W); got {tuple(y.shape)}")
        expected = flow.move_frames(y, nu, start=start)
        diff = y_moved - expected
        err = diff.abs()
        scale = float(expected.abs().max())
        denom = scale if scale > 0 else 1.0
        per_step = err.amax(dim=(0, 2, 3, 4)) / denom  # (T,)
    return EquivarianceReport(
        velocity=flow._key(nu),
        max_error=float(err.max()) / denom,
        rel_l2=float(diff.norm() / expected.norm()) if float(expected.norm()) > 0 else float(diff.norm()),
        per_velocity=per_velocity,
        per_step=tuple(per_step.tolist()),
        unmatched=unmatched,
        scale=scale,
        dtype=dtype,
        nonfinite=nonfinite,
    )


def assert_flow_equivariant(
    module: Callable,
    flow: Flow,
    x: Tensor,
    velocities: Iterable | None = None,
    *,
    output: str = "lifted",
    readout: Callable[[Tensor], Tensor] | None = None,
    start: int = 0,
    dtype: torch.dtype = torch.float64,
    forward_kwargs: dict | None = None,
    rtol: float | None = None,
) -> list[EquivarianceReport]:
    """Assert the law for every input velocity (default: every ν̂ of the flow's V).

    ``rtol`` defaults to 1e-9 in float64 and 1e-5 in float32 (integer flows on a torus
    are exact; use a measured, larger tolerance for interpolated actions). Raises
    ``AssertionError`` naming the worst velocity; returns the reports otherwise.
    """
    if rtol is None:
        rtol = 1e-9 if dtype == torch.float64 else 1e-5
    if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real):
        raise TypeError(f"rtol must be a finite number >= 0, got {rtol!r}")
    if not 0 <= rtol < math.inf:
        raise ValueError(f"rtol must be a finite number >= 0, got {rtol!r}")
    velocities = list(flow.elements if velocities is None else velocities)
    if not velocities:
        raise ValueError("velocities is empty: give at least one input velocity ν̂, or leave it "
                         "None to check every ν̂ of the flow's V")
    reports = [
        flow_equivariance_error(
            module, flow, x, nu, output=output, readout=readout, start=start, dtype=dtype,
            forward_kwargs=forward_kwargs,
        )
        for nu in velocities
    ]
    failed = [r for r in reports if not r.passed(rtol)]
    if failed:
        # A non-finite report first: it is the one that says what is wrong.
        worst = max(failed, key=lambda r: (not r.finite,
                                           r.max_error if r.finite else math.inf))
        raise AssertionError(f"not flow equivariant within rtol={rtol:g}: {worst}")
    return reports
