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

World models (FLOWM.md §3) have their own relations, checked on the memory map by
:func:`world_model_equivariance_error` / :func:`assert_world_model_equivariant`:

- ``"flow"`` (fully observed, N = w): frames ``f'_t = S_{tν̂} f_t``, same actions ⇒
  ``s'_t(ν) = S_{tν̂} s_t(ν − ν̂)`` (the FERNN law, on the context);
- ``"camera"`` (fully observed): the camera path shifted, ``c'_t = c_t + δ_t`` (views
  ``S_{−δ_t} f_t``, actions ``a_t + δ_t − δ_{t−1}``) ⇒ ``s'_t = S_{−δ_t} s_t`` and the
  predictions move alike, through the rollout (δ constant there);
- ``"tracking"`` (any world): every digit given an extra velocity ν̂ and the camera moving
  with it, ``a'_t = a_t + ν̂``: identical views ⇒ ``s'_t(ν) = s_t(ν − ν̂)`` (a relabelling of V);
- ``"egocentric"``: the allocentric implementation (world-fixed map, moving windows) gives
  the same predictions and, moved back by ``o_t = c_t − c_0``, the same map.

A world model for these checks is a module with ``flow``, ``world_size``, ``view_size``,
a settable ``frame`` (``"egocentric"``/``"allocentric"``, for the last relation) and
``memory(views, actions, pred_len, frame="egocentric", decode=False)`` returning a dict
with ``"states"`` ``(B, T + pred_len, V, C, N, N)`` and ``"predictions"``, as
:class:`fernn.models.WorldModel` does. A model with V = {0} has no partner slices: its
maps are then compared V-pooled (max), ``compare="pooled"``.

For a single C_N layer (no time, no V), :func:`rotation_layer_error` measures
``‖L(g·x) − g·L(x)‖ / ‖g·L(x)‖`` in a central disc, on inputs such as
:func:`smooth_windowed_images` (the protocol of docs/equivariance.md).
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

__all__ = ["EquivarianceReport", "flow_equivariance_error", "assert_flow_equivariant",
           "smooth_windowed_images", "rotation_layer_error",
           "WORLD_RELATIONS", "world_model_equivariance_error", "assert_world_model_equivariant"]

WORLD_RELATIONS = ("flow", "camera", "tracking", "egocentric")

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
        relation: for world models, which relation of FLOWM.md §3 (empty otherwise).
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
    relation: str = ""

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
            f"{self.relation + ' ' if self.relation else ''}"
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


# -- world models (FLOWM.md §3) -----------------------------------------------------------
def _world_memory(model, views: Tensor, actions: Tensor, pred_len: int) -> dict:
    with torch.no_grad():
        out = model.memory(views, actions, pred_len, frame="egocentric", decode=False)
    return {"states": out["states"], "predictions": out["predictions"]}


def _compare(pairs, dtype, relation, velocity, per_velocity=None, unmatched=()):
    """A report from (actual, expected) tensor pairs, all ``(B, T, ...)``, one scale."""
    scale = max(float(e.abs().max()) if e.numel() else 0.0 for _, e in pairs)
    denom = scale if scale > 0 else 1.0
    steps = max(a.shape[1] for a, _ in pairs)
    per_step = torch.zeros(steps, dtype=torch.float64)
    worst, sq, norm, nonfinite = 0.0, 0.0, 0.0, 0
    for actual, expected in pairs:
        if not expected.numel():
            continue
        nonfinite += int((~torch.isfinite(actual)).sum()) + int((~torch.isfinite(expected)).sum())
        diff = (actual - expected).double()
        err = diff.abs().flatten(2).amax(dim=(0, 2)) / denom  # (T,)
        per_step[: len(err)] = torch.maximum(per_step[: len(err)], err.cpu())
        worst = max(worst, float(err.max()))
        sq += float(diff.pow(2).sum())
        norm += float(expected.double().pow(2).sum())
    rel = (sq ** 0.5) / (norm ** 0.5) if norm > 0 else sq ** 0.5
    if nonfinite:  # NaN never compares greater: say so instead of reporting 0
        worst = rel = math.nan
    return EquivarianceReport(velocity=velocity, max_error=worst, rel_l2=rel, nonfinite=nonfinite,
                              per_velocity=per_velocity or {}, per_step=tuple(per_step.tolist()),
                              unmatched=tuple(unmatched), scale=scale, dtype=dtype,
                              relation=relation)


def _lifted_pairs(flow: Flow, actual: Tensor, base: Tensor, nu, move, compare: str):
    """(actual, expected) for ``s'_t(ν) = move(s_t(ν − ν̂))``; ``compare="pooled"``: the
    maps max-pooled over V instead (``pooled' = move(pooled)``)."""
    if compare == "pooled":
        return [(actual.amax(dim=2), move(base.amax(dim=2)))], {}, ()
    partner = flow.partner_indices(nu).to(actual.device)
    valid = partner >= 0
    if not bool(valid.any()):
        raise ValueError(f"no velocity ν of {flow!r} has its partner ν − {nu} in V: compare "
                         "the V-pooled maps instead (compare='pooled')")
    expected = move(base[:, :, partner[valid]])
    got = actual[:, :, valid]
    kept = [v for v, ok in zip(flow.elements, valid.tolist()) if ok]
    scale = float(expected.abs().max()) or 1.0
    per_v = (got - expected).abs().amax(dim=(0, 1, 3, 4, 5)) / scale
    unmatched = [v for v, ok in zip(flow.elements, valid.tolist()) if not ok]
    return [(got, expected)], dict(zip(kept, per_v.tolist())), unmatched


def world_model_equivariance_error(
    model: nn.Module,
    relation: str,
    views: Tensor,
    actions: Tensor,
    *,
    pred_len: int = 0,
    velocity=None,
    delta: Tensor | None = None,
    compare: str | None = None,
    reference: nn.Module | None = None,
    dtype: torch.dtype = torch.float64,
    generator: torch.Generator | None = None,
) -> EquivarianceReport:
    """Measure one relation of FLOWM.md §3 on a world model's memory (see the module
    docstring for the relations and what a world model must provide).

    Args:
        model: the world model; copied, cast to ``dtype`` and put in eval mode.
        relation: one of :data:`WORLD_RELATIONS`.
        views ``(B, T, C, w, w)``, actions ``(B, T + pred_len, 2)``: the base input.
        pred_len: predicted frames; ``"camera"`` and ``"egocentric"`` check the rollout
            too, ``"flow"`` and ``"tracking"`` hold on the context only (the V-max readout
            mixes in the slices at the edge of V) and use the first T frames' states.
        velocity: ν̂ (``"flow"``, ``"tracking"``).
        delta: ``(B, T + pred_len, 2)`` camera-path shift (``"camera"``); default random
            in ``[−N, N]``, constant from frame T − 1 on.
        compare: ``"lifted"`` (default where V has partners) or ``"pooled"``.
        reference: ``"egocentric"``: the other implementation (default: a copy of the
            model with ``frame="allocentric"``).

    Returns an :class:`EquivarianceReport` (``relation`` set; errors relative to the
    largest expected value).
    """
    if relation not in WORLD_RELATIONS:
        raise ValueError(f"relation must be one of {WORLD_RELATIONS}, got {relation!r}")
    run = _prepare(model, dtype)
    flow = run.flow
    views = views.to(dtype)
    actions = torch.as_tensor(actions).long()
    B, T = views.shape[:2]
    N, w = run.world_size, run.view_size
    if relation in ("flow", "camera") and N != w:
        raise ValueError(f"the {relation!r} relation holds in a fully observed world (N = w); "
                         f"this model has world_size={N}, view_size={w}")
    if relation in ("flow", "tracking"):
        if velocity is None:
            raise ValueError(f"the {relation!r} relation needs velocity=ν̂")
        nu = flow._key(velocity)
    else:
        nu = None
    if compare is None:
        compare = "lifted" if (nu is None or bool((flow.partner_indices(nu) >= 0).any())) \
            else "pooled"
    if compare not in ("lifted", "pooled"):
        raise ValueError(f"compare must be 'lifted' or 'pooled', got {compare!r}")
    base = _world_memory(run, views, actions, pred_len)

    if relation == "flow":
        moved = _world_memory(run, flow.move_frames(views, nu), actions, pred_len)
        times = torch.arange(T, device=views.device)
        move = lambda s: flow.move_lifted(s, nu, times) if s.dim() == 6 else \
            flow.move_frames(s, nu)
        pairs, per_v, unmatched = _lifted_pairs(flow, moved["states"][:, :T],
                                                base["states"][:, :T], nu, move, compare)
        return _compare(pairs, dtype, relation, nu, per_v, unmatched)

    if relation == "tracking":
        shifted = actions.clone()
        shifted[:, 1:] += torch.tensor(nu)
        moved = _world_memory(run, views, shifted, pred_len)
        pairs, per_v, unmatched = _lifted_pairs(flow, moved["states"][:, :T],
                                                base["states"][:, :T], nu, lambda s: s, compare)
        return _compare(pairs, dtype, relation, nu, per_v, unmatched)

    if relation == "camera":
        P = actions.shape[1]
        if delta is None:
            delta = torch.randint(-N, N + 1, (B, P, 2), generator=generator)
            delta[:, T:] = delta[:, T - 1 : T]
        delta = torch.as_tensor(delta).long()
        if delta.shape != (B, P, 2):
            raise ValueError(f"delta must be (B, T + pred_len, 2) = {(B, P, 2)}; got "
                             f"{tuple(delta.shape)}")
        shifted = actions.clone()
        shifted[:, 1:] += delta[:, 1:] - delta[:, :-1]
        new_views = _roll_frames(views, -delta[:, :T])
        moved = _world_memory(run, new_views, shifted, pred_len)
        pairs = [(moved["states"], _roll_frames(base["states"], -delta)),
                 (moved["predictions"], _roll_frames(base["predictions"], -delta[:, T:]))]
        return _compare(pairs, dtype, relation, None)

    # egocentric = allocentric
    if reference is None:
        if not getattr(run, "self_motion", True):
            raise ValueError("a model without self-motion equivariance has no allocentric "
                             "form: give reference= explicitly")
        reference = copy.deepcopy(run)
        reference.frame = "allocentric" if run.frame == "egocentric" else "egocentric"
    other = _world_memory(_prepare(reference, dtype), views, actions, pred_len)
    pairs = [(other["states"], base["states"]), (other["predictions"], base["predictions"])]
    return _compare(pairs, dtype, relation, None)


def _roll_frames(x: Tensor, shifts: Tensor) -> Tensor:
    """Move frame t of every sequence by ``shifts[:, t]``: x ``(B, T, ...)``, shifts
    ``(B, T, 2)``."""
    from ._torus import roll2d

    lead = x.dim() - 2
    return roll2d(x, shifts.to(x.device).view(*shifts.shape[:2], *([1] * (lead - 2)), 2))


def assert_world_model_equivariant(
    model: nn.Module,
    views: Tensor,
    actions: Tensor,
    relations: Iterable[str] | None = None,
    velocities: Iterable | None = None,
    *,
    pred_len: int = 0,
    compare: str | None = None,
    dtype: torch.dtype = torch.float64,
    rtol: float | None = None,
) -> list[EquivarianceReport]:
    """Assert world-model relations (default: every one that applies — ``"flow"`` and
    ``"camera"`` only for N = w, ``"egocentric"`` only with self-motion) for every ν̂ of
    ``velocities`` (default: the model's V). ``rtol``: 1e-9 in float64, 1e-5 in float32.
    Raises ``AssertionError`` naming the worst relation; returns the reports."""
    if rtol is None:
        rtol = 1e-9 if dtype == torch.float64 else 1e-5
    full = model.world_size == model.view_size
    if relations is None:
        relations = [r for r in WORLD_RELATIONS
                     if (full or r not in ("flow", "camera"))
                     and (r != "egocentric" or getattr(model, "self_motion", True))]
    velocities = list(model.flow.elements if velocities is None else velocities)
    reports = []
    for relation in relations:
        for nu in (velocities if relation in ("flow", "tracking") else [None]):
            reports.append(world_model_equivariance_error(
                model, relation, views, actions, pred_len=pred_len, velocity=nu,
                compare=compare, dtype=dtype,
                generator=torch.Generator().manual_seed(len(reports))))
    failed = [r for r in reports if not r.passed(rtol)]
    if failed:
        worst = max(failed, key=lambda r: math.inf if not r.finite else r.max_error)
        raise AssertionError(f"world model relation fails within rtol={rtol:g}: {worst}")
    return reports


def smooth_windowed_images(batch: int, channels: int, size: int = 33, smoothing: float = 2.0,
                           generator: torch.Generator | None = None,
                           dtype: torch.dtype = torch.float64) -> Tensor:
    """Random smooth images that fade to zero well inside the frame.

    White noise blurred by a Gaussian of ``smoothing`` pixels (circularly), scaled to unit
    standard deviation, times the window ``cos²(π ρ / 2R)`` for ``ρ < R`` (0 beyond), with
    ``ρ`` the distance from the centre and ``R = (size − 1)/2 − 2``: so rotating an image
    about its centre loses nothing at the border.

    Shapes: returns ``(batch, channels, size, size)``.
    """
    noise = torch.randn(batch, channels, size, size, generator=generator, dtype=torch.float64)
    freq = torch.fft.fftfreq(size, dtype=torch.float64)
    fy, fx = torch.meshgrid(freq, freq, indexing="ij")
    low_pass = torch.exp(-2 * (math.pi * smoothing) ** 2 * (fy**2 + fx**2))  # Gaussian blur
    smooth = torch.fft.ifft2(torch.fft.fft2(noise) * low_pass).real
    smooth = smooth / smooth.std()
    c = (size - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64),
                            torch.arange(size, dtype=torch.float64), indexing="ij")
    rho = torch.sqrt((yy - c) ** 2 + (xx - c) ** 2)
    R = c - 2
    window = torch.where(rho < R, torch.cos(math.pi * rho / (2 * R)) ** 2, torch.zeros_like(rho))
    return (smooth * window).to(dtype)


def _act_c_n(x: Tensor, angle: float, order: int | None) -> Tensor:
    """Rotate ``x (B, C, H, W)`` by ``angle`` degrees; roll each field's N orientations by
    ``angle·N/360`` bins too when ``order`` is given (a lifted feature)."""
    from ._rotation import degrees_to_bins, rotate

    y = rotate(x, angle)
    if order is None:
        return y
    B, C, H, W = y.shape
    bins = degrees_to_bins(angle, order, "the rotation angle")
    return y.view(B, C // order, order, H, W).roll(bins, 2).view(B, C, H, W)


def rotation_layer_error(
    layer: Callable[[Tensor], Tensor],
    x: Tensor,
    angle: float,
    order: int,
    *,
    lifted_input: bool = False,
    radius: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> float:
    """Relative L2 equivariance error of a C_N layer under a rotation by ``angle`` degrees.

    ``‖L(g·x) − g·L(x)‖ / ‖g·L(x)‖`` over the pixels within ``radius`` of the centre
    (default: ``(min(H, W) − 1)/2 − 4``, clear of the border), where ``g`` rotates an
    image with :func:`fernn.rotate` (bilinear unless a quarter turn) and, on a lifted
    feature (``F·N`` channels, field-major), also rolls each field's orientations by
    ``angle·N/360`` bins. ``angle`` must be a multiple of ``360/N``. The input is an image
    ``(B, C, H, W)``, or a lifted feature with ``lifted_input=True``; the output is lifted.
    An ``nn.Module`` is copied and cast to ``dtype`` (the original is untouched).
    """
    run = _prepare(layer, dtype)
    x = x.to(dtype)
    with torch.no_grad():
        y = run(x)
        y_moved = run(_act_c_n(x, angle, order if lifted_input else None))
        expected = _act_c_n(y, angle, order)
    H, W = y.shape[-2:]
    if radius is None:
        radius = (min(H, W) - 1) / 2 - 4
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64),
                            torch.arange(W, dtype=torch.float64), indexing="ij")
    disc = ((yy - (H - 1) / 2) ** 2 + (xx - (W - 1) / 2) ** 2 <= radius**2).to(y.device, dtype)
    diff = (y_moved - expected) * disc
    ref = expected * disc
    norm = float(ref.norm())
    if norm == 0:
        raise ValueError("the expected output is zero in the disc: nothing to compare "
                         "(a dead layer, or a radius too small)")
    return float(diff.norm()) / norm
