"""Convolutions equivariant to the cyclic rotation group C_N (regular representation).

Features carry ``N`` orientation channels per field, laid out field-major: channel
``f·N + n`` is field ``f`` at orientation ``n`` (angle ``n·360/N``). Rotating the input by
``j`` bins rotates every output map by ``j·360/N`` and rolls each field's orientations by
``j``::

    lifting:  out[f, n]  = W_f rotated by n  ⋆ x                       (image → fields)
    group:    out[g, n]  = Σ_{f, m}  (W_{g, f, (m − n) mod N} rotated by n) ⋆ in[f, m]

Rotated kernels are built as exact quarter turns of interpolated base rotations
(``rotate``), so the relations ``R_{n+N/4} W = rot90(R_n W)`` hold to the last bit: for
N divisible by 4, both layers are exactly equivariant to quarter turns (on square frames,
circular or zero padding); other angles are approximate. Biases are one per field,
shared by its orientations, so they are invariant.

Shapes: lifting ``(B, C_in, H, W) → (B, F·N, H, W)``; group ``(B, F_in·N, H, W) →
(B, F_out·N, H, W)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_input, odd_kernel_size, positive_int
from ._rotation import rotate
from ._torus import circular_pad

__all__ = ["LiftingConv2d", "GroupConv2d"]


def _rotate_blocks(blocks: Tensor) -> Tensor:
    """Rotate block ``n`` of ``blocks`` ``(N, ..., k, k)`` by ``n`` bins of C_N (one call)."""
    order = blocks.shape[0]
    angles = torch.arange(order, dtype=torch.float64, device=blocks.device) * (360.0 / order)
    flat = blocks.reshape(order, -1, *blocks.shape[-2:])  # (N, P, k, k)
    return rotate(flat, angles).reshape(blocks.shape)


class _CNConv(nn.Module):
    def __init__(self, order: int, kernel_size: int, padding_mode: str, bias: bool,
                 out_fields: int):
        super().__init__()
        order = positive_int(order, "order N")
        kernel_size = odd_kernel_size(kernel_size)
        out_fields = positive_int(out_fields, "out_fields")
        if padding_mode not in ("circular", "zeros"):
            raise ValueError(f"padding_mode must be 'circular' or 'zeros', got {padding_mode!r}")
        self.order = order
        self.kernel_size = kernel_size
        self.padding_mode = padding_mode
        self.out_fields = out_fields
        self.bias = nn.Parameter(torch.zeros(out_fields)) if bias else None

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
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)


class LiftingConv2d(_CNConv):
    """Image channels → ``out_fields`` fields of ``order`` orientations (see module doc)."""

    def __init__(self, in_channels: int, out_fields: int, kernel_size: int = 3, order: int = 4,
                 bias: bool = False, padding_mode: str = "circular"):
        super().__init__(order, kernel_size, padding_mode, bias, out_fields)
        self.in_channels = positive_int(in_channels, "in_channels")
        self._in_channels = self.in_channels
        self.weight = nn.Parameter(torch.empty(out_fields, in_channels, kernel_size, kernel_size))
        self._init(self.weight, in_channels * kernel_size**2)

    def expanded_weight(self) -> Tensor:
        """``(F·N, C_in, k, k)``: row ``f·N + n`` is ``W_f`` rotated by ``n`` bins."""
        copies = self.weight.unsqueeze(0).expand(self.order, *self.weight.shape)  # (N, F, C, k, k)
        family = _rotate_blocks(copies)
        return family.transpose(0, 1).reshape(-1, self.in_channels, *self.weight.shape[-2:])

    def extra_repr(self) -> str:
        return (f"{self.in_channels} → {self.out_fields} fields × C_{self.order}, "
                f"k={self.kernel_size}, padding_mode={self.padding_mode!r}")


class GroupConv2d(_CNConv):
    """``in_fields`` → ``out_fields`` fields, each of ``order`` orientations (see module doc)."""

    def __init__(self, in_fields: int, out_fields: int, kernel_size: int = 3, order: int = 4,
                 bias: bool = False, padding_mode: str = "circular"):
        super().__init__(order, kernel_size, padding_mode, bias, out_fields)
        self.in_fields = positive_int(in_fields, "in_fields")
        self._in_channels = self.in_fields * self.order
        self.weight = nn.Parameter(
            torch.empty(out_fields, in_fields, order, kernel_size, kernel_size)
        )
        self._init(self.weight, in_fields * order * kernel_size**2)

    def expanded_weight(self) -> Tensor:
        """``(F_out·N, F_in·N, k, k)``: block ``(g·N + n, f·N + m)`` is
        ``W_{g, f, (m − n) mod N}`` rotated by ``n`` bins."""
        N, k = self.order, self.kernel_size
        n = torch.arange(N, device=self.weight.device)
        rel = (n[None, :] - n[:, None]).remainder(N)  # rel[n, m] = (m − n) mod N
        shifted = self.weight[:, :, rel]  # (G, F, N_n, N_m, k, k)
        blocks = _rotate_blocks(shifted.permute(2, 0, 1, 3, 4, 5))  # (N_n, G, F, N_m, k, k)
        return blocks.permute(1, 0, 2, 3, 4, 5).reshape(self.out_fields * N, self.in_fields * N, k, k)

    def extra_repr(self) -> str:
        return (f"{self.in_fields} → {self.out_fields} fields × C_{self.order}, "
                f"k={self.kernel_size}, padding_mode={self.padding_mode!r}")
