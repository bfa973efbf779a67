"""Convolutions equivariant to the cyclic rotation group C_N (regular representation).

Features carry ``N`` orientation channels per field, laid out field-major: channel
``f·N + n`` is field ``f`` at orientation ``n`` (angle ``θ_n = n·360/N``). Rotating the
input by ``j`` bins rotates every output map by ``j·360/N`` and rolls each field's
orientations by ``j``::

    lifting:  out[f, n]  = (R_{θ_n} W_f) ⋆ x                              (image → fields)
    group:    out[g, n]  = Σ_{f, m}  (R_{θ_n} W_{g, f, (m − n) mod N}) ⋆ in[f, m]

(the kernel of output orientation ``n`` is the base kernel rotated by ``θ_n`` with its
input-orientation axis rolled by ``n``: the regular representation's group convolution).

How ``R_θ W`` is made — ``basis=``:

- ``"steerable"`` (default): each base kernel is a combination of a fixed, band-limited
  basis sampled on the ``k×k`` grid (:func:`steerable_basis`), radial rings × angular
  harmonics. With pixel offsets ``(x, y)`` from the centre (``x`` right, ``y`` up),
  ``ρ, φ`` their polar form, ring ``r ∈ {0, 1, …, k // 2}`` and frequency ``f``::

      ψ_{r,f,cos}(ρ, φ) = exp(−(ρ − r)² / 2σ²) · cos(f φ),   ψ_{r,f,sin}: sin(f φ)

  (``f = 0``: the cosine only; ``f > 0`` vanishes at the centre pixel). Ring ``r > 0``
  carries ``f = 0 … min(max_frequency, 2r)``, ring 0 only ``f = 0``; each (ring, f) pair
  is scaled to unit mean-square norm. Default ``max_frequency = 2``, ``σ = 0.4`` px:
  6 coefficients per (input, output) pair for 3×3 (the centre, then frequencies 0, 1, 2
  on ring 1) and 11 for 5×5 — as escnn's ``R2Conv`` (0.67× the 9 pixels of 3×3). A
  rotation acts on the coefficients analytically, never on pixels:
  ``R_θ ψ_{r,f,cos} = cos(fθ) ψ_{r,f,cos} + sin(fθ) ψ_{r,f,sin}``,
  ``R_θ ψ_{r,f,sin} = cos(fθ) ψ_{r,f,sin} − sin(fθ) ψ_{r,f,cos}`` (a function turned
  counter-clockwise by θ: ``φ → φ − θ``).
- ``"pixel"``: the weight is the ``k×k`` kernel itself, rotated by resampling
  (``rotate``: bilinear, exact quarter turns). The behaviour before band-limited kernels.

Either way, for ``N`` divisible by 4 the kernels of orientations ``n + N/4`` are exact
quarter turns (``torch.rot90``) of those of ``n`` (with the input-orientation axis rolled
by ``N/4``): both layers are exactly equivariant to quarter turns, to the last bit (on
square frames, circular or zero padding); other angles are approximate, measured in
docs/equivariance.md. Biases are one per field, shared by its orientations, so they are
invariant.

Shapes: lifting ``(B, C_in, H, W) → (B, F·N, H, W)``; group ``(B, F_in·N, H, W) →
(B, F_out·N, H, W)``. Weights: steerable lifting ``(F, C_in, K)``, group
``(F_out, F_in, N, K)`` with ``K`` coefficients; pixel ``(F, C_in, k, k)`` and
``(F_out, F_in, N, k, k)``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_input, odd_kernel_size, positive_int
from ._rotation import rotate
from ._torus import circular_pad

__all__ = ["LiftingConv2d", "GroupConv2d", "steerable_basis", "KERNEL_BASES"]

KERNEL_BASES = ("steerable", "pixel")
"""The kernel bases of :class:`LiftingConv2d` and :class:`GroupConv2d`."""


def _rotate_blocks(blocks: Tensor) -> Tensor:
    """Rotate block ``n`` of ``blocks`` ``(N, ..., k, k)`` by ``n`` bins of C_N (one call)."""
    order = blocks.shape[0]
    angles = torch.arange(order, dtype=torch.float64, device=blocks.device) * (360.0 / order)
    flat = blocks.reshape(order, -1, *blocks.shape[-2:])  # (N, P, k, k)
    return rotate(flat, angles).reshape(blocks.shape)


def _harmonics(kernel_size: int, max_frequency: int) -> list[tuple[int, int, str]]:
    """The basis functions in order: ``(ring, frequency, "cos" | "sin")``."""
    out = [(0, 0, "cos")]
    for r in range(1, kernel_size // 2 + 1):
        for f in range(min(max_frequency, 2 * r) + 1):
            out.append((r, f, "cos"))
            if f > 0:
                out.append((r, f, "sin"))
    return out


def steerable_basis(kernel_size: int = 3, max_frequency: int = 2, sigma: float = 0.4) -> Tensor:
    """The band-limited basis of the ``"steerable"`` kernels (see the module doc), float64.

    Shapes: returns ``(K, k, k)``; row ``i`` is ``(y, x)`` with ``y`` running down, so
    ``basis[j, i_row, i_col]`` samples the harmonic at offset ``(i_col − c, c − i_row)``.
    """
    _check_basis_args(kernel_size, max_frequency, sigma)
    return _basis(kernel_size, max_frequency, float(sigma), "cpu", torch.float64).clone()


def _check_basis_args(kernel_size, max_frequency, sigma) -> None:
    if isinstance(max_frequency, bool) or int(max_frequency) != max_frequency or max_frequency < 0:
        raise ValueError(f"max_frequency must be a non-negative integer, got {max_frequency!r}")
    if not (isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and sigma > 0):
        raise ValueError(
            f"sigma (the rings' radial width in pixels) must be positive, got {sigma!r}")


@functools.lru_cache(maxsize=64)
def _basis(kernel_size: int, max_frequency: int, sigma: float, device: str,
           dtype: torch.dtype) -> Tensor:
    c = kernel_size // 2
    # Built on the CPU whatever the default device (e.g. a "meta" context), then moved.
    grid = torch.arange(kernel_size, dtype=torch.float64, device="cpu")
    ii, jj = torch.meshgrid(grid, grid, indexing="ij")
    x, y = jj - c, c - ii
    rho, phi = torch.sqrt(x * x + y * y), torch.atan2(y, x)
    centre = rho == 0
    funcs = []
    for r, f, kind in _harmonics(kernel_size, max_frequency):
        profile = torch.exp(-((rho - r) ** 2) / (2 * sigma**2))
        angular = torch.cos(f * phi) if kind == "cos" else torch.sin(f * phi)
        g = profile * angular
        if f > 0:
            g = torch.where(centre, torch.zeros_like(g), g)  # φ is undefined at the centre
        funcs.append(g)
    basis = torch.stack(funcs)  # (K, k, k)
    # Unit mean-square norm per (ring, f): cos and sin of one pair share the scale, so the
    # analytic rotation (which mixes them) is unchanged.
    keys = [(r, f) for r, f, _ in _harmonics(kernel_size, max_frequency)]
    for key in set(keys):
        rows = [i for i, k_ in enumerate(keys) if k_ == key]
        norm = torch.sqrt(sum(basis[i].pow(2).sum() for i in rows) / len(rows))
        basis[rows] = basis[rows] / norm
    return basis.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _rotated_basis(kernel_size: int, max_frequency: int, sigma: float, angles: tuple,
                   device: str, dtype: torch.dtype) -> Tensor:
    """``(A, K, k, k)``: the basis turned analytically by each angle (radians)."""
    basis = _basis(kernel_size, max_frequency, sigma, "cpu", torch.float64)
    labels = _harmonics(kernel_size, max_frequency)
    theta = torch.tensor(angles, dtype=torch.float64, device="cpu")
    out = basis.expand(len(angles), *basis.shape).clone()
    for i, (r, f, kind) in enumerate(labels):
        if f == 0:
            continue
        cos, sin = torch.cos(f * theta)[:, None, None], torch.sin(f * theta)[:, None, None]
        if kind == "cos":  # its partner is the next row
            out[:, i] = cos * basis[i] + sin * basis[i + 1]
        else:
            out[:, i] = cos * basis[i] - sin * basis[i - 1]
    return out.to(device=device, dtype=dtype)


def _quarter(order: int) -> int:
    """How many orientations are built analytically: N/4 when quarter turns make the rest."""
    return order // 4 if order % 4 == 0 else order


class _CNConv(nn.Module):
    def __init__(self, order: int, kernel_size: int, padding_mode: str, bias: bool,
                 out_fields: int, basis: str, max_frequency: int, sigma: float):
        super().__init__()
        order = positive_int(order, "order N")
        kernel_size = odd_kernel_size(kernel_size)
        out_fields = positive_int(out_fields, "out_fields")
        if padding_mode not in ("circular", "zeros"):
            raise ValueError(f"padding_mode must be 'circular' or 'zeros', got {padding_mode!r}")
        if basis not in KERNEL_BASES:
            raise ValueError(f"basis must be one of {KERNEL_BASES}, got {basis!r}")
        _check_basis_args(kernel_size, max_frequency, sigma)
        self.order = order
        self.kernel_size = kernel_size
        self.padding_mode = padding_mode
        self.out_fields = out_fields
        self.basis = basis
        self.max_frequency = int(max_frequency)
        self.sigma = float(sigma)
        self.bias = nn.Parameter(torch.zeros(out_fields)) if bias else None

    @property
    def num_coefficients(self) -> int:
        """Coefficients per (input, output) kernel: ``K`` of the steerable basis, or k²."""
        if self.basis == "pixel":
            return self.kernel_size**2
        return len(_harmonics(self.kernel_size, self.max_frequency))

    def _rotated_basis(self, count: int) -> Tensor:
        """``(count, K, k, k)``: the basis turned by ``0 … count − 1`` bins (weight's dtype)."""
        angles = tuple(2 * math.pi * n / self.order for n in range(count))
        w = self.weight
        return _rotated_basis(self.kernel_size, self.max_frequency, self.sigma, angles,
                              str(w.device), w.dtype)

    def expanded_weight(self) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, weight: Tensor | None = None) -> Tensor:
        """``weight``: a precomputed :meth:`expanded_weight` (a recurrent layer builds it
        once per sequence instead of once per step)."""
        check_input(x, self, "(B, C, H, W)", channels=self._in_channels)
        return self._conv(x, self.expanded_weight() if weight is None else weight)

    def _conv(self, x: Tensor, weight: Tensor) -> Tensor:
        p = self.kernel_size // 2
        bias = None if self.bias is None else self.bias.repeat_interleave(self.order)
        if self.padding_mode == "circular":
            return F.conv2d(circular_pad(x, p), weight, bias)
        return F.conv2d(x, weight, bias, padding=p)

    def _init(self, weight: Tensor, fan_in: int) -> None:
        # Basis functions have unit norm, so a kernel's expected norm is that of a pixel
        # kernel initialised with the same fan-in rule.
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def _repr_basis(self) -> str:
        if self.basis == "pixel":
            return "basis='pixel'"
        return (f"basis='steerable' (K={self.num_coefficients}, "
                f"max_frequency={self.max_frequency}, sigma={self.sigma:g})")


class LiftingConv2d(_CNConv):
    """Image channels → ``out_fields`` fields of ``order`` orientations (see module doc).

    Args:
        in_channels, out_fields, kernel_size, order, bias, padding_mode: as named.
        basis: ``"steerable"`` (band-limited harmonics rotated analytically, the default)
            or ``"pixel"`` (the k×k kernel rotated by resampling).
        max_frequency: the steerable basis' angular cut-off (per ring ``r``, frequencies
            up to ``min(max_frequency, 2r)``); 2 gives 6 coefficients for 3×3, 11 for 5×5.
        sigma: the rings' Gaussian radial width, pixels.
    """

    def __init__(self, in_channels: int, out_fields: int, kernel_size: int = 3, order: int = 4,
                 bias: bool = False, padding_mode: str = "circular", *,
                 basis: str = "steerable", max_frequency: int = 2, sigma: float = 0.4):
        super().__init__(order, kernel_size, padding_mode, bias, out_fields, basis,
                         max_frequency, sigma)
        self.in_channels = positive_int(in_channels, "in_channels")
        self._in_channels = self.in_channels
        shape = (kernel_size, kernel_size) if basis == "pixel" else (self.num_coefficients,)
        self.weight = nn.Parameter(torch.empty(out_fields, in_channels, *shape))
        self._init(self.weight, in_channels * self.num_coefficients)

    def expanded_weight(self) -> Tensor:
        """``(F·N, C_in, k, k)``: row ``f·N + n`` is ``W_f`` rotated by ``n`` bins."""
        N, k = self.order, self.kernel_size
        if self.basis == "pixel":
            copies = self.weight.unsqueeze(0).expand(N, *self.weight.shape)  # (N, F, C, k, k)
            family = _rotate_blocks(copies)
            return family.transpose(0, 1).reshape(-1, self.in_channels, k, k)
        Q = _quarter(N)
        first = torch.einsum("fcj,qjxy->fqcxy", self.weight, self._rotated_basis(Q))
        if Q < N:  # orientations n + q·N/4 are exact quarter turns of orientation n
            first = torch.stack([torch.rot90(first, q, (-2, -1)) for q in range(4)], dim=1)
        return first.reshape(self.out_fields * N, self.in_channels, k, k)

    def extra_repr(self) -> str:
        return (f"{self.in_channels} → {self.out_fields} fields × C_{self.order}, "
                f"k={self.kernel_size}, padding_mode={self.padding_mode!r}, {self._repr_basis()}")


class GroupConv2d(_CNConv):
    """``in_fields`` → ``out_fields`` fields, each of ``order`` orientations (see module doc).

    Args: as :class:`LiftingConv2d`, with ``in_fields`` regular fields as the input.
    """

    def __init__(self, in_fields: int, out_fields: int, kernel_size: int = 3, order: int = 4,
                 bias: bool = False, padding_mode: str = "circular", *,
                 basis: str = "steerable", max_frequency: int = 2, sigma: float = 0.4):
        super().__init__(order, kernel_size, padding_mode, bias, out_fields, basis,
                         max_frequency, sigma)
        self.in_fields = positive_int(in_fields, "in_fields")
        self._in_channels = self.in_fields * self.order
        shape = (kernel_size, kernel_size) if basis == "pixel" else (self.num_coefficients,)
        self.weight = nn.Parameter(torch.empty(out_fields, in_fields, order, *shape))
        self._init(self.weight, in_fields * order * self.num_coefficients)

    def expanded_weight(self) -> Tensor:
        """``(F_out·N, F_in·N, k, k)``: block ``(g·N + n, f·N + m)`` is
        ``W_{g, f, (m − n) mod N}`` rotated by ``n`` bins."""
        N, k = self.order, self.kernel_size
        n = torch.arange(N, device=self.weight.device)
        rel = (n[None, :] - n[:, None]).remainder(N)  # rel[n, m] = (m − n) mod N
        G, Fi = self.out_fields, self.in_fields
        if self.basis == "pixel":
            shifted = self.weight[:, :, rel]  # (G, F, N_n, N_m, k, k)
            blocks = _rotate_blocks(shifted.permute(2, 0, 1, 3, 4, 5))  # (N_n, G, F, N_m, k, k)
            return blocks.permute(1, 0, 2, 3, 4, 5).reshape(G * N, Fi * N, k, k)
        Q = _quarter(N)
        shifted = self.weight[:, :, rel[:Q]]  # (G, F, Q, N_m, K)
        first = torch.einsum("gfqmj,qjxy->gqfmxy", shifted, self._rotated_basis(Q))
        if Q < N:
            # K[n + qN/4, m] = rot90^q K[n, m − qN/4]: exact permutations of the first quarter.
            first = torch.stack([torch.rot90(first.roll(q * Q, 3), q, (-2, -1))
                                 for q in range(4)], dim=1)
        return first.reshape(G * N, Fi * N, k, k)

    def extra_repr(self) -> str:
        return (f"{self.in_fields} → {self.out_fields} fields × C_{self.order}, "
                f"k={self.kernel_size}, padding_mode={self.padding_mode!r}, {self._repr_basis()}")
