"""Rotations of images and kernels, exact where the pixel grid allows.

``rotate(x, angles)`` rotates every image of ``x`` about its centre by its own angle
(degrees, counter-clockwise as displayed: rows run down, columns right). An angle is split
into a remainder ``r`` in (-45°, 45°] and ``q`` quarter turns, ``θ = r + 90°·q``:

- the remainder is applied by interpolation, ``method=``:

  - ``"bilinear"`` (default): ``grid_sample``, zeros outside. Each call low-passes the
    image a little, so repeated turns blur (ten 30° turns of a smooth field differ from
    one 300° turn by 0.21 rel. L2).
  - ``"fourier"``: three shears, ``R(θ) = S_x(−tan θ/2) S_y(sin θ) S_x(−tan θ/2)``, each
    shifting every row (column) by a fraction of a pixel as a phase ramp in the Fourier
    domain (``rfft``/``irfft`` along that axis, periodic). Each shear is unitary up to
    the Nyquist bin, so nothing is blurred away: ten 30° turns differ from one 300° turn
    by 5e-4 on the same field (on MNIST digits 0.10, against bilinear's 0.37: a sharp
    image's sheared spectrum aliases). Content sheared past an edge wraps around
    (periodic), and sharp edges ring; 3–4× the time of ``"bilinear"`` on CPU
    (benchmarks/rotation_equivariance.py).

  an image whose remainder is 0 is passed through untouched either way;
- the quarter turns are applied last, as an exact permutation of pixels (square images).

So rotations by multiples of 90° are exact to the last bit, and composing with a quarter
turn is exact for any angle: ``rotate(x, θ + 90°) == rotate(rotate(x, θ), 90°)``. Other
angles are interpolated: their equivariance error is measured, not assumed (see
docs/equivariance.md).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["rotate", "split_quarter_turns", "ROTATION_METHODS"]

ROTATION_METHODS = ("bilinear", "fourier")
"""The interpolations of :func:`rotate` for angles that are not quarter turns."""


def split_quarter_turns(angles: Tensor) -> tuple[Tensor, Tensor]:
    """``(remainder in (-45, 45], quarter turns mod 4)`` with ``angle = remainder + 90·q``."""
    q = torch.ceil((angles - 45.0) / 90.0)  # the r = angle − 90q that lies in (-45, 45]
    remainder = angles - 90.0 * q
    return remainder, q.long().remainder(4)


def _quarter_turn_index(H: int, W: int, device) -> Tensor:
    """(4, H·W): flat source index of each output pixel after q counter-clockwise quarter turns."""
    if H != W:
        raise ValueError(f"quarter turns need square images, got {H}×{W}")
    i = torch.arange(H, device=device)[:, None].expand(H, W)
    j = torch.arange(W, device=device)[None, :].expand(H, W)
    # Counter-clockwise as displayed: out[i, j] = in[j, W-1-i] for one quarter turn.
    sources = [(i, j), (j, W - 1 - i), (H - 1 - i, W - 1 - j), (H - 1 - j, i)]
    return torch.stack([(si * W + sj).reshape(-1) for si, sj in sources])


def _interpolate(x: Tensor, remainder: Tensor) -> Tensor:
    """Bilinear rotation of (N, C, H, W) by per-item angles (degrees) about the centre."""
    N, C, H, W = x.shape
    theta = torch.deg2rad(remainder.to(torch.float64))
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    # Output (x right, y down, normalised) → input: the inverse of a counter-clockwise turn.
    # Aspect-correct for non-square images.
    a = torch.stack([torch.stack([cos, -sin * (H - 1) / max(W - 1, 1), zero], -1),
                     torch.stack([sin * (W - 1) / max(H - 1, 1), cos, zero], -1)], -2)
    grid = F.affine_grid(a.to(x.dtype), [N, C, H, W], align_corners=True)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    keep = (remainder == 0).view(N, 1, 1, 1)
    return torch.where(keep, x, out)


def _fourier_shift(x: Tensor, shift: Tensor, dim: int) -> Tensor:
    """Move the content of ``x`` by ``shift`` pixels along ``dim`` (periodic, sub-pixel):
    a phase ramp on the ``rfft`` along ``dim``. ``shift`` broadcasts to ``x`` (size 1 at
    ``dim``)."""
    n = x.shape[dim]
    k = torch.fft.rfftfreq(n, dtype=torch.float64, device=x.device) * n
    view = [1] * x.dim()
    view[dim] = -1
    phase = torch.polar(torch.ones((), dtype=torch.float64, device=x.device),
                        -2 * math.pi * k.view(view) * shift / n)
    spectrum = torch.fft.rfft(x, dim=dim)
    return torch.fft.irfft(spectrum * phase.to(spectrum.dtype), n=n, dim=dim)


def _shear(x: Tensor, remainder: Tensor) -> Tensor:
    """Rotation of (N, C, H, W) by per-item angles (degrees) as three Fourier shears."""
    N, C, H, W = x.shape
    theta = torch.deg2rad(remainder.to(torch.float64))
    a = -torch.tan(theta / 2).view(N, 1, 1, 1)
    b = torch.sin(theta).view(N, 1, 1, 1)
    y = ((H - 1) / 2 - torch.arange(H, dtype=torch.float64, device=x.device)).view(1, 1, H, 1)
    c = (torch.arange(W, dtype=torch.float64, device=x.device) - (W - 1) / 2).view(1, 1, 1, W)
    # x right, y up. S_x(a): out(x, y) = in(x − a·y, y), each row moved right by a·y;
    # S_y(b): out(x, y) = in(x, y − b·x), each column moved up by b·x (rows: −b·x).
    out = _fourier_shift(x, a * y, -1)
    out = _fourier_shift(out, -b * c, -2)
    out = _fourier_shift(out, a * y, -1)
    keep = (remainder == 0).view(N, 1, 1, 1)
    return torch.where(keep, x, out.to(x.dtype))


def rotate(x: Tensor, angles: Tensor | float, method: str = "bilinear") -> Tensor:
    """Rotate images ``x`` ``(*L, C, H, W)`` by ``angles`` (degrees; a scalar or a tensor
    broadcastable to ``L``) counter-clockwise about their centres, the part that is not a
    quarter turn by ``method`` (``"bilinear"`` or ``"fourier"``; see the module doc).
    Differentiable."""
    if method not in ROTATION_METHODS:
        raise ValueError(f"method must be one of {ROTATION_METHODS}, got {method!r}")
    *lead, C, H, W = x.shape
    angles = torch.as_tensor(angles, dtype=torch.float64, device=x.device)
    angles = angles.expand(lead) if lead else angles.reshape(())
    flat = x.reshape(-1, C, H, W)
    a = angles.reshape(-1)
    remainder, q = split_quarter_turns(a)
    if bool((remainder != 0).any()):
        flat = (_interpolate if method == "bilinear" else _shear)(flat, remainder)
    if bool((q != 0).any()):
        index = _quarter_turn_index(H, W, x.device)[q]  # (N, H·W)
        flat = flat.reshape(-1, C, H * W).gather(-1, index[:, None, :].expand(-1, C, -1))
    return flat.reshape(x.shape)


def bins_to_degrees(bins: int, order: int) -> float:
    """The angle of ``bins`` steps of C_N, canonical so equal angles compare equal."""
    return round(bins * 360.0 / order, 9)


ANGLE_TOLERANCE = 1e-9
"""How far an angle may lie from a multiple of 360/N and still count as one: 1e-9 of the
angle (1e-9° for angles below 1°) — room for the rounding of a computed ``k·360/N`` and of
:func:`bins_to_degrees`' nine decimals, none for a typo such as ``10.0000001``."""


def _fmt(angle: float) -> str:
    return str(int(angle)) if float(angle).is_integer() else repr(angle)


def degrees_to_bins(angle: float, order: int, what: str = "an angular velocity") -> int:
    """Whole bins of C_N in ``angle``; ``ValueError`` unless it is finite, less than a full
    turn (``|angle| < 360°``) and a multiple of 360/N within :data:`ANGLE_TOLERANCE`."""
    if isinstance(angle, bool) or not isinstance(angle, numbers.Real):
        raise TypeError(f"{what} must be a number of degrees per frame, got {angle!r}")
    angle = float(angle)
    if not math.isfinite(angle):
        raise ValueError(f"{what} must be a finite number of degrees per frame, got {angle!r}")
    if abs(angle) >= 360.0:
        hint = f": {_fmt(angle % 360.0)}°" if abs(angle) < 1e9 else ""
        raise ValueError(
            f"{what} of {angle!r}° is a full turn or more per frame; rotations are taken modulo "
            f"360°, so give it as an angle with |ω| < 360° (ω mod 360{hint})"
        )
    bins = angle * order / 360.0
    nearest = round(bins)
    if abs(angle - nearest * 360.0 / order) > ANGLE_TOLERANCE * max(1.0, abs(angle)):
        low = math.floor(bins)
        raise ValueError(
            f"{what} of {angle}° is not a multiple of 360/N = {360 / order:g}° (N = {order}): "
            f"the orientation axis could not follow it. The nearest multiples are "
            f"{_fmt(bins_to_degrees(low, order))}° and {_fmt(bins_to_degrees(low + 1, order))}°; "
            "use one of them, or another order N."
        )
    return int(nearest)
