"""Flows: finite velocity sets of a one-parameter group action, owning their action.

A *flow* ψ_t(ν) = exp(tν) moves an image continuously in time; ``ν`` is its velocity.
A :class:`Flow` object is an immutable, hashable, validated finite set V of velocities
together with the action of each. It is used everywhere the action is needed:

- the recurrent cells move each hidden slice by its own velocity (:meth:`Flow.move_hidden`);
- the data generators move digits along trajectories (:meth:`Flow.trajectory`);
- the equivariance checker moves input sequences (:meth:`Flow.move_frames`), moves whole
  hidden states (:meth:`Flow.move_lifted`) and relabels the V axis
  (:meth:`Flow.partner_indices`).

Shape vocabulary: ``B`` batch, ``T`` time, ``V`` velocities, ``C`` channels, ``H, W`` space.
"""

from __future__ import annotations

import abc
import numbers
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import integer, positive_int
from ._pooling import pool_velocities
from ._rotation import ROTATION_METHODS, bins_to_degrees, degrees_to_bins, rotate
from ._torus import Conv2d, circular_pad, roll2d

__all__ = ["Flow", "TranslationFlow2D", "RotationFlow2D"]

_PADDING_MODES = ("circular", "zeros")

MAX_TRANSLATION_SPEED = 2**31 - 1
"""The largest ``|v_y|``, ``|v_x|`` of a translation velocity (pixels per frame): with it,
``t·v`` stays exact in int64 for any sequence shorter than 2³² frames. Larger values are
refused rather than wrapped (on a torus of side n, v and v mod n act alike)."""

MAX_GRID_VELOCITIES = 2**20
"""The most velocities ``TranslationFlow2D(max_speed=r)`` builds, ``(2r+1)² ≤ 2²⁰``
(r ≤ 511): every velocity is a slice of the hidden state, so a larger grid could not run."""


def _check_padding_mode(padding_mode: str) -> bool:
    """Return ``circular`` as a bool, or raise for an unknown mode."""
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
    return padding_mode == "circular"


class Flow(abc.ABC):
    """A finite set V of velocities of a flow, with the action of each on images.

    Subclasses define :attr:`elements` (hashable velocity values, in the order of the V
    axis), :attr:`velocities` (the same as a tensor) and the action methods below.
    Velocities combine additively: ``ψ_t(ν)ψ_t(ν̂) = ψ_t(ν + ν̂)``.
    """

    elements: tuple

    # -- the set -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.elements)

    def __iter__(self) -> Iterator:
        return iter(self.elements)

    def __contains__(self, velocity) -> bool:
        return self._key(velocity) in self._positions

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._identity() == self._identity()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._identity()))

    def _identity(self) -> tuple:
        return self.elements

    @property
    def _positions(self) -> dict:
        return {v: i for i, v in enumerate(self.elements)}

    @abc.abstractmethod
    def _key(self, velocity) -> object:
        """Normalise one velocity (tuple, list, tensor) to its hashable element."""

    @abc.abstractmethod
    def _subtract(self, a, b) -> object:
        """The element ``a - b``."""

    @property
    @abc.abstractmethod
    def velocities(self) -> Tensor:
        """The velocity set as a tensor, one row per element of the V axis."""

    def index(self, velocity) -> int:
        """Position of ``velocity`` on the V axis; ``ValueError`` if it is not in V."""
        key = self._key(velocity)
        try:
            return self._positions[key]
        except KeyError:
            raise ValueError(f"velocity {key} is not in {self!r}") from None

    def partner_indices(self, velocity) -> Tensor:
        """For each ν in V, the index of ν − ν̂ in V, or -1 where it lies outside V.

        This is the relabelling of the V axis in the equivariance law
        ``h'_t(ν) = ψ_t(ν̂) h_t(ν − ν̂)``.
        """
        nu_hat = self._key(velocity)
        positions = self._positions
        return torch.tensor(
            [positions.get(self._subtract(nu, nu_hat), -1) for nu in self.elements],
            dtype=torch.long,
        )

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` velocities drawn uniformly from V (rows of :attr:`velocities`)."""
        n = positive_int(n, "n (the number of velocities to sample)", minimum=0)
        idx = torch.randint(len(self), (n,), generator=generator)
        return self.velocities[idx]

    # -- what the layers need from a flow -----------------------------------------------
    fibre: int = 1
    """Channels per field of a lifted feature (N orientations for rotations, 1 otherwise)."""

    def make_conv(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool,
                  padding_mode: str, input_on_group: bool) -> nn.Module:
        """A convolution that commutes with this flow's action on one velocity slice.

        ``in_channels``/``out_channels`` count fields; ``input_on_group``: the input already
        carries the fibre (hidden states, deeper layers) rather than plain image channels.
        The default is an ordinary convolution: it commutes with translations.
        """
        return Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                      padding_mode=padding_mode, bias=bias)

    def pool_fibre(self, x: Tensor, mode: str = "max") -> Tensor:
        """Pool each field over its fibre: ``(..., F·fibre, H, W) → (..., F, H, W)``."""
        return x

    def random_pose(self, x0: Tensor, u: Tensor) -> Tensor:
        """Put each image ``(B, C, H, W)`` in a random starting pose from uniforms ``u (B,)``
        (data generation). Identity by default: translations are placed by the generator."""
        return x0

    # -- the action ------------------------------------------------------------------
    @abc.abstractmethod
    def trajectory(
        self, x0: Tensor, velocity, steps: int, start: int = 0, padding_mode: str = "circular"
    ) -> Tensor:
        """Move images along their flows: ``out[b, t] = ψ_{start+t}(ν_b) x0[b]``.

        Shapes: x0 ``(B, C, H, W)``; velocity one element or ``(B, ...)``;
        returns ``(B, steps, C, H, W)``. ``padding_mode="zeros"``: content that leaves the
        frame is lost instead of wrapping (a bounded canvas).
        """

    @abc.abstractmethod
    def move_frames(self, x: Tensor, velocity, start: int = 0) -> Tensor:
        """Move a sequence by a flow: frame t is acted on by ``ψ_{start+t}(ν̂)``.

        Shapes: x ``(B, T, C, H, W)``; velocity one element or ``(B, ...)``; returns x's shape.
        """

    @abc.abstractmethod
    def move_hidden(self, h: Tensor, padding_mode: str = "circular", pad: int = 0,
                    offset: Tensor | None = None) -> Tensor:
        """One step of every velocity slice along its own flow: ``out[:, i] = ψ_1(ν_i) h[:, i]``,
        padded by ``pad`` pixels per side the ``padding_mode`` way (the input of a
        ``padding=0`` convolution; translations do both in one gather).

        ``offset`` ``(B, 2)`` (translations only): also move sample b by ``d_b``, in the
        same gather: ``out[b, i] = S_{ν_i + d_b} h[b, i]`` (an observer's own motion,
        ``d = −a``).

        Shapes: h ``(B, V, C, H, W)``; returns ``(B, V, C, H + 2·pad, W + 2·pad)``.
        Differentiable, batched over V (and over the batch when there is an offset).
        """

    @abc.abstractmethod
    def move_lifted(self, h: Tensor, velocity, time: Tensor | int) -> Tensor:
        """Act on every velocity slice with the *same* element ``ψ_time(ν̂)``.

        Shapes: h ``(B, T, V, C, H, W)`` with ``time`` a ``(T,)`` tensor, or
        ``(B, V, C, H, W)`` with an integer ``time``. (The V axis is not relabelled: see
        :meth:`partner_indices`.)
        """


def _as_int_pair(v, what: str) -> tuple[int, int]:
    if isinstance(v, Tensor):
        v = v.tolist()
    try:
        vy, vx = v
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair (v_y, v_x), got {v!r}") from None
    out = []
    for c in (vy, vx):
        integral = (isinstance(c, numbers.Real) and not isinstance(c, bool)
                    and float(c).is_integer())
        if not integral:
            raise ValueError(
                f"{what} must be integer pixels per frame (exact shifts on the pixel grid); "
                f"got {v!r}. Round it, or rescale time so the velocity is an integer."
            )
        c = int(c)
        if abs(c) > MAX_TRANSLATION_SPEED:
            raise ValueError(
                f"{what} must have |v_y|, |v_x| <= 2**31 - 1 pixels per frame; got {v!r}. On a "
                "torus of side n a velocity acts like itself mod n: give that."
            )
        out.append(c)
    return out[0], out[1]


class TranslationFlow2D(Flow):
    """Translations of the 2-D pixel grid at constant integer velocity.

    ``ψ_t(ν)`` shifts an image by ``t·ν`` pixels; velocities are rows ``(v_y, v_x)``
    (pixels per frame along the H and W axes), content moving like ``torch.roll``.
    On the torus integer shifts are exact permutations, so flow equivariance holds to the
    last bit.

    Args:
        max_speed: the grid ``{-r..r}²`` (``(2r+1)²`` velocities, ``v_y`` major, ``v_x``
            minor). ``max_speed=0`` is V = {(0, 0)}: a G-RNN.
        velocities: any explicit set of distinct integer pairs, in V-axis order.

    Example::

        >>> TranslationFlow2D(max_speed=1)
        TranslationFlow2D(max_speed=1)  # 9 velocities
        >>> TranslationFlow2D(velocities=[(0, 0), (1, -2)]).velocities
        tensor([[ 0,  0],
                [ 1, -2]])
    """

    def __init__(
        self, max_speed: int | None = None, *, velocities: Sequence[Sequence[int]] | None = None
    ):
        if (max_speed is None) == (velocities is None):
            raise ValueError(
                "TranslationFlow2D needs exactly one of max_speed (the grid {-r..r}^2) "
                "or velocities (an explicit list of (v_y, v_x) pairs)"
            )
        if max_speed is not None:
            integral = (isinstance(max_speed, numbers.Real) and not isinstance(max_speed, bool)
                        and float(max_speed).is_integer())
            if not integral or max_speed < 0:
                raise ValueError(f"max_speed must be a non-negative integer, got {max_speed!r}")
            r = int(max_speed)
            if (2 * r + 1) ** 2 > MAX_GRID_VELOCITIES:
                raise ValueError(
                    f"max_speed={r} would make (2r+1)^2 = {(2 * r + 1) ** 2} velocities, one "
                    f"hidden slice each; at most {MAX_GRID_VELOCITIES} (max_speed <= 511) are built. "
                    "Give the velocities you need as an explicit list instead."
                )
            elements = tuple((vy, vx) for vy in range(-r, r + 1) for vx in range(-r, r + 1))
        else:
            if isinstance(velocities, Tensor):
                velocities = velocities.tolist()
            elements = tuple(_as_int_pair(v, "a velocity") for v in velocities)
            if not elements:
                raise ValueError("velocities must hold at least one (v_y, v_x) pair")
            seen: set = set()
            for v in elements:
                if v in seen:
                    raise ValueError(f"velocities must be distinct; {v} appears twice")
                seen.add(v)
        object.__setattr__(self, "elements", elements)
        object.__setattr__(self, "max_speed", _grid_radius(elements))

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        if self.max_speed is not None:
            return f"TranslationFlow2D(max_speed={self.max_speed})"
        return f"TranslationFlow2D(velocities={list(self.elements)})"

    def __reduce__(self):
        return (_rebuild_translation_flow, (self.elements,))

    @property
    def velocities(self) -> Tensor:
        """Integer tensor ``(V, 2)``; row ``i`` is ``(v_y, v_x)`` of V-axis slice ``i``."""
        return torch.tensor(self.elements, dtype=torch.long).view(len(self), 2)

    @property
    def radius(self) -> int:
        """The largest speed per axis in V (``r`` of the grid ``{-r..r}²``)."""
        return max(max(abs(vy), abs(vx)) for vy, vx in self.elements)

    def _key(self, velocity) -> tuple[int, int]:
        return _as_int_pair(velocity, "a velocity")

    def _subtract(self, a, b):
        return (a[0] - b[0], a[1] - b[1])

    # -- action ----------------------------------------------------------------------
    def _velocity_rows(self, velocity, batch: int) -> Tensor:
        """One velocity or a ``(B, 2)`` batch of them, as a ``(B, 2)`` long tensor."""
        v = torch.as_tensor(velocity)
        if v.dtype.is_floating_point:
            if not torch.equal(v, v.round()):
                raise ValueError(
                    f"translation velocities must be integer pixels per frame; got {v.tolist()}"
                )
        v = v.long()
        if v.shape == (2,):
            return v.expand(batch, 2)
        if v.shape == (batch, 2):
            return v
        raise ValueError(
            f"expected one velocity (2,) or one per sequence ({batch}, 2); got {tuple(v.shape)}"
        )

    def trajectory(
        self, x0: Tensor, velocity, steps: int, start: int = 0, padding_mode: str = "circular"
    ) -> Tensor:
        circular = _check_padding_mode(padding_mode)
        _check_images(x0, 4, "(B, C, H, W)", "trajectory x0")
        steps, start = _check_times(steps, start)
        B = x0.shape[0]
        v = self._velocity_rows(velocity, B).to(x0.device)  # (B, 2)
        t = torch.arange(start, start + steps, device=x0.device)  # (T,)
        shifts = (t[None, :, None] * v[:, None, :])[:, :, None]  # (B, T, 1, 2)
        frames = x0[:, None].expand(B, steps, *x0.shape[1:])  # (B, T, C, H, W), a view
        return roll2d(frames, shifts, circular=circular)

    def move_frames(self, x: Tensor, velocity, start: int = 0) -> Tensor:
        _check_images(x, 5, "(B, T, C, H, W)", "move_frames x")
        start = integer(start, "start")
        B, T = x.shape[:2]
        v = self._velocity_rows(velocity, B).to(x.device)  # (B, 2)
        t = torch.arange(start, start + T, device=x.device)  # (T,)
        shifts = (t[None, :, None] * v[:, None, :])[:, :, None]  # (B, T, 1, 2)
        return roll2d(x, shifts)

    def hidden_shifts(self, device=None) -> Tensor:
        """The shift of each velocity slice per frame, shaped for hidden states
        ``(B, V, C, H, W)``: ``(1, V, 1, 2)`` integers."""
        return self.velocities.to(device)[None, :, None]

    def move_hidden(self, h: Tensor, padding_mode: str = "circular", pad: int = 0,
                    offset: Tensor | None = None) -> Tensor:
        circular = _check_padding_mode(padding_mode)
        _check_lifted(h, len(self))
        shifts = self.hidden_shifts(h.device)  # (1, V, 1, 2)
        if offset is not None:
            offset = torch.as_tensor(offset, device=h.device)
            if offset.shape != (h.shape[0], 2) or offset.dtype.is_floating_point:
                raise ValueError(f"move_hidden offset must be integer (B={h.shape[0]}, 2); got "
                                 f"{tuple(offset.shape)} {offset.dtype}")
            shifts = shifts + offset.long()[:, None, None, :]  # (B, V, 1, 2): one gather
        return roll2d(h, shifts, circular=circular, pad=pad)

    def move_lifted(self, h: Tensor, velocity, time: Tensor | int) -> Tensor:
        v = torch.tensor(self._key(velocity), device=h.device)  # (2,)
        times = _lifted_times(h, time)  # (1, T, 1) or (1, 1)
        return roll2d(h, (times[..., None] * v)[..., None, :])  # shifts (1, T, 1, 1, 2) / (1, 1, 1, 2)


def _grid_radius(elements: tuple) -> int | None:
    """``r`` if ``elements`` is the grid {-r..r}² in max_speed order, else None: O(|V|)."""
    r = max(max(abs(vy), abs(vx)) for vy, vx in elements)
    n = 2 * r + 1
    if len(elements) != n * n:  # only then is the grid built to compare (|V| elements)
        return None
    grid = tuple((vy, vx) for vy in range(-r, r + 1) for vx in range(-r, r + 1))
    return r if elements == grid else None


class RotationFlow2D(Flow):
    """Rotations about the frame centre at constant angular velocity, on C_N-lifted features.

    ``ψ_t(ω)`` rotates an image by ``t·ω`` degrees (counter-clockwise as displayed). On a
    lifted feature — ``fields × N`` orientation channels, field-major — it also rolls each
    field's orientation axis by ``t·ω·N/360`` bins, so every ω must be a multiple of
    ``360/N`` (others raise: the orientation axis could not follow them). Quarter turns
    are exact permutations; other angles are interpolated (``interpolation``), so the law
    holds approximately there: measured in docs/equivariance.md.

    Args:
        angular_velocities: degrees per frame, distinct, in V-axis order.
        order: N of the cyclic group C_N (N = 36 gives 10° bins, the paper's setting).
        interpolation: how every action of this flow rotates by angles that are not
            quarter turns — ``"bilinear"`` (default) or ``"fourier"`` (three Fourier
            shears: repeated turns of a hidden state do not blur; see :func:`fernn.rotate`).
            It is part of the flow's identity. (Data sets are usually made with a
            bilinear flow: Fourier shears ring on sharp digits.)

    Example::

        >>> RotationFlow2D(angular_velocities=[-20, -10, 0, 10, 20], order=36)
        RotationFlow2D(angular_velocities=[-20, -10, 0, 10, 20], order=36)
    """

    def __init__(self, angular_velocities: Sequence[float], order: int = 36,
                 interpolation: str = "bilinear"):
        integral = (isinstance(order, numbers.Real) and not isinstance(order, bool)
                    and float(order).is_integer())
        if not integral or order < 1:
            raise ValueError(f"order N must be a positive integer, got {order!r}")
        if interpolation not in ROTATION_METHODS:
            raise ValueError(f"interpolation must be one of {ROTATION_METHODS}, got "
                             f"{interpolation!r}")
        order = int(order)
        if isinstance(angular_velocities, Tensor):
            angular_velocities = angular_velocities.tolist()
        angular_velocities = list(angular_velocities)
        if not angular_velocities:
            raise ValueError("angular_velocities must hold at least one angle (degrees per frame)")
        bins = [degrees_to_bins(w, order) for w in angular_velocities]
        seen: dict = {}
        for w, b in zip(angular_velocities, bins):
            if b % order in seen:  # modulo 360°: -10° and 350° are one rotation per frame
                raise ValueError(
                    f"angular velocities must be distinct modulo 360°; {seen[b % order]}° and "
                    f"{w}° coincide"
                )
            seen[b % order] = w
        elements = tuple(bins_to_degrees(b, order) for b in bins)
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "bins", tuple(bins))
        object.__setattr__(self, "elements", elements)
        object.__setattr__(self, "fibre", order)
        # bins mod N → element: ν − ν̂ is looked up modulo a full turn.
        object.__setattr__(self, "_by_residue", {b % order: w for b, w in zip(bins, elements)})
        object.__setattr__(self, "interpolation", interpolation)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        angles = [int(w) if float(w).is_integer() else w for w in self.elements]
        extra = ("" if self.interpolation == "bilinear"
                 else f", interpolation={self.interpolation!r}")
        return f"RotationFlow2D(angular_velocities={angles}, order={self.order}{extra})"

    def __reduce__(self):
        return (RotationFlow2D, (list(self.elements), self.order, self.interpolation))

    def _identity(self) -> tuple:
        return (self.elements, self.order, self.interpolation)

    @property
    def velocities(self) -> Tensor:
        """Angular velocities ``(V,)`` in degrees per frame (float64)."""
        return torch.tensor(self.elements, dtype=torch.float64)

    def _key(self, velocity) -> float:
        if isinstance(velocity, Tensor):
            velocity = velocity.reshape(-1)
            if velocity.numel() != 1:
                raise ValueError(f"an angular velocity is one number, got {velocity.tolist()}")
            velocity = velocity.item()
        return self._canonical(degrees_to_bins(velocity, self.order))

    def _canonical(self, bins: int) -> float:
        """The element of V congruent to ``bins`` modulo N if there is one, else the angle."""
        return self._by_residue.get(bins % self.order, bins_to_degrees(bins, self.order))

    def _subtract(self, a, b):
        return self._canonical(degrees_to_bins(a, self.order) - degrees_to_bins(b, self.order))

    def _angles(self, velocity, batch: int, device) -> Tensor:
        """One angular velocity or one per item, validated, as ``(B,)`` float64 degrees."""
        w = torch.as_tensor(velocity, dtype=torch.float64).reshape(-1)
        if w.numel() == 1:
            w = w.expand(batch)
        if w.shape != (batch,):
            raise ValueError(
                f"expected one angular velocity or one per item ({batch},); got {tuple(w.shape)}"
            )
        for value in set(w.tolist()):
            degrees_to_bins(value, self.order)
        return w.to(device)

    def _roll_orientations(self, h: Tensor, bins: Tensor) -> Tensor:
        """Roll each field's orientation axis: ``h (*L, F·N, H, W)``, ``bins`` broadcastable to L."""
        *lead, C, H, W = h.shape
        N = self.order
        if C % N:
            raise ValueError(
                f"a C_{N}-lifted feature has fields × {N} channels; got {C} channels in "
                f"{tuple(h.shape)}"
            )
        bins = torch.as_tensor(bins, device=h.device).long().expand(lead)
        n = torch.arange(N, device=h.device)
        index = (n - bins[..., None]).remainder(N)  # out[n] = in[n − bins]
        fields = h.reshape(*lead, C // N, N, H, W)
        index = index[..., None, :, None, None].expand(fields.shape)
        return fields.gather(len(lead) + 1, index).reshape(h.shape)

    def trajectory(self, x0: Tensor, velocity, steps: int, start: int = 0,
                   padding_mode: str = "circular") -> Tensor:
        _check_padding_mode(padding_mode)
        _check_images(x0, 4, "(B, C, H, W)", "trajectory x0")
        steps, start = _check_times(steps, start)
        B = x0.shape[0]
        w = self._angles(velocity, B, x0.device)
        t = torch.arange(start, start + steps, device=x0.device, dtype=torch.float64)
        frames = x0[:, None].expand(B, steps, *x0.shape[1:])
        return rotate(frames, w[:, None] * t[None, :], self.interpolation)

    def move_frames(self, x: Tensor, velocity, start: int = 0) -> Tensor:
        _check_images(x, 5, "(B, T, C, H, W)", "move_frames x")
        start = integer(start, "start")
        B, T = x.shape[:2]
        w = self._angles(velocity, B, x.device)
        t = torch.arange(start, start + T, device=x.device, dtype=torch.float64)
        return rotate(x, w[:, None] * t[None, :], self.interpolation)

    def move_hidden(self, h: Tensor, padding_mode: str = "circular", pad: int = 0,
                    offset: Tensor | None = None) -> Tensor:
        if offset is not None:
            raise ValueError("a per-sample offset (self-motion) is defined for translation "
                             "flows; RotationFlow2D.move_hidden takes offset=None")
        circular = _check_padding_mode(padding_mode)
        _check_lifted(h, len(self))
        angles = self.velocities.to(h.device)[None, :]  # (1, V)
        bins = torch.tensor(self.bins, device=h.device)[None, :]
        out = self._roll_orientations(rotate(h, angles.expand(h.shape[:2]), self.interpolation),
                                      bins)
        if pad:
            B, V, C, H, W = out.shape
            flat = out.reshape(B * V, C, H, W)
            flat = circular_pad(flat, pad) if circular else F.pad(flat, (pad,) * 4)
            out = flat.view(B, V, C, H + 2 * pad, W + 2 * pad)
        return out

    def move_lifted(self, h: Tensor, velocity, time: Tensor | int) -> Tensor:
        w = self._key(velocity)
        times = _lifted_times(h, time).expand(h.shape[:-3])  # (B, T, V) or (B, V)
        bins = times * degrees_to_bins(w, self.order)
        return self._roll_orientations(rotate(h, times.double() * w, self.interpolation), bins)

    def make_conv(self, in_channels, out_channels, kernel_size, bias, padding_mode,
                  input_on_group):
        from ._group_conv import GroupConv2d, LiftingConv2d

        if input_on_group:
            return GroupConv2d(in_channels, out_channels, kernel_size, self.order, bias, padding_mode)
        return LiftingConv2d(in_channels, out_channels, kernel_size, self.order, bias, padding_mode)

    def pool_fibre(self, x: Tensor, mode: str = "max") -> Tensor:
        *lead, C, H, W = x.shape
        fields = x.reshape(*lead, C // self.order, self.order, H, W)
        return pool_velocities(fields, mode, dim=-3)  # the orientation axis

    def random_pose(self, x0: Tensor, u: Tensor) -> Tensor:
        return rotate(x0, u.to(torch.float64) * 360.0, self.interpolation)


def _rebuild_translation_flow(elements):
    return TranslationFlow2D(velocities=elements)


def _lifted_times(h: Tensor, time: Tensor | int) -> Tensor:
    """The time of every slice of a lifted tensor for :meth:`Flow.move_lifted`: ``(1, T, 1)``
    for ``(B, T, V, C, H, W)`` with one time per frame, ``(1, 1)`` for ``(B, V, C, H, W)``."""
    if h.dim() == 6:
        time = torch.as_tensor(time, device=h.device).long()
        if time.shape != (h.shape[1],):
            raise ValueError(
                f"move_lifted on (B, T, V, C, H, W) needs one time per frame ({h.shape[1]},); "
                f"got {tuple(time.shape)}"
            )
        return time.view(1, -1, 1)
    if h.dim() == 5:
        return torch.full((1, 1), int(time), dtype=torch.long, device=h.device)
    raise ValueError(
        f"move_lifted needs (B, T, V, C, H, W) or (B, V, C, H, W); got {tuple(h.shape)}"
    )


def _check_times(steps, start) -> tuple[int, int]:
    return positive_int(steps, "steps", minimum=0), integer(start, "start")


def _check_images(x: Tensor, ndim: int, layout: str, what: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != ndim:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{what} must have shape {layout}; got {shape}")


def _check_lifted(h: Tensor, num_velocities: int) -> None:
    if h.dim() != 5 or h.shape[1] != num_velocities:
        raise ValueError(
            f"expected a lifted hidden state (B, V={num_velocities}, C, H, W); "
            f"got {tuple(h.shape)}"
        )
