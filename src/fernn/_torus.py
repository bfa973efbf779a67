"""Integer translations of images: the one primitive behind every translation in fernn.

``roll2d(x, shifts)`` moves the content of every image in ``x`` by its own integer
displacement, like ``torch.roll`` but batched: each leading index may carry a different
shift, and no Python loop runs over them. Convention (the same as ``torch.roll``)::

    out[..., i, j] = x[..., i - s_y, j - s_x]        # content moves by +s

On the torus (``circular=True``) indices wrap; otherwise pixels whose source lies
outside the image are zero ("boundary truncation").

Two exact strategies are used, chosen by the size of the index they need:

- *flat gather*: one ``(H*W)`` index per distinct shift, broadcast over the other axes.
  Fastest when few distinct shifts cover many images (hidden states: one shift per
  velocity, shared by batch and channels).
- *row/column indexing*: separate row and column indices per image. Its index is
  ``H + W`` per image instead of ``H * W``, so it wins when every image has its own shift
  (data generation: one shift per sequence, digit and frame).

The backward pass of a shift is the shift by ``-s`` (its adjoint), so gradients cost one
more gather rather than a scatter-add.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["roll2d"]


def _source_coords(shifts: Tensor, size: int, axis: int, circular: bool) -> Tensor:
    """Source coordinate of every output coordinate: (*S, size), ``-1`` when outside."""
    coords = torch.arange(size, device=shifts.device)
    src = coords - shifts[..., axis, None]  # (*S, size)
    if circular:
        return src.remainder(size)
    return torch.where((src >= 0) & (src < size), src, torch.full_like(src, -1))


def _roll_flat(x: Tensor, shifts: Tensor, circular: bool) -> Tensor:
    *lead, H, W = x.shape
    rows = _source_coords(shifts, H, 0, circular)  # (*S, H)
    cols = _source_coords(shifts, W, 1, circular)  # (*S, W)
    flat = rows[..., :, None] * W + cols[..., None, :]  # (*S, H, W)
    src = x.reshape(*lead, H * W)
    if not circular:
        # Out-of-image pixels read an appended zero.
        outside = (rows[..., :, None] < 0) | (cols[..., None, :] < 0)
        flat = torch.where(outside, torch.full_like(flat, H * W), flat)
        src = torch.nn.functional.pad(src, (0, 1))
    index = flat.reshape(*shifts.shape[:-1], H * W).expand(*lead, H * W)
    return src.gather(-1, index).view(*lead, H, W)


def _roll_rowcol(x: Tensor, shifts: Tensor, circular: bool) -> Tensor:
    *lead, H, W = x.shape
    rows = _source_coords(shifts, H, 0, circular)  # (*S, H)
    cols = _source_coords(shifts, W, 1, circular)  # (*S, W)
    if not circular:
        # Out-of-image pixels read an appended zero row / column.
        x = torch.nn.functional.pad(x, (0, 1, 0, 1))
        rows = torch.where(rows < 0, torch.full_like(rows, H), rows)
        cols = torch.where(cols < 0, torch.full_like(cols, W), cols)
    n = len(lead)
    # One broadcast index per leading axis: no copy of an expanded input is made.
    lead_index = [
        torch.arange(size, device=x.device).view(*([1] * d), size, *([1] * (n - d - 1)), 1, 1)
        for d, size in enumerate(lead)
    ]
    return x[(*lead_index, rows[..., :, None], cols[..., None, :])]


def _roll(x: Tensor, shifts: Tensor, circular: bool) -> Tensor:
    distinct = shifts[..., 0].numel()
    images = x[..., 0, 0].numel()
    if distinct * 4 <= images:
        return _roll_flat(x, shifts, circular)
    return _roll_rowcol(x, shifts, circular)


class _Roll2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, shifts: Tensor, circular: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(shifts)
        ctx.circular = circular
        return _roll(x, shifts, circular)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (shifts,) = ctx.saved_tensors
        # The adjoint of a (partial) permutation is its inverse: the opposite shift.
        return _Roll2d.apply(grad, -shifts, ctx.circular), None, None


def roll2d(x: Tensor, shifts: Tensor, circular: bool = True) -> Tensor:
    """Shift every image of ``x`` by its own integer displacement.

    Args:
        x: tensor ``(*L, H, W)``; may be an expanded (stride-0) view.
        shifts: integer tensor ``(*S, 2)`` of ``(s_y, s_x)`` rows, with ``len(S) == len(L)``
            and ``S`` broadcastable to ``L``.
        circular: wrap around the torus (``True``) or fill with zeros (``False``).

    Returns:
        ``(*L, H, W)`` tensor with ``out[..., i, j] = x[..., i - s_y, j - s_x]``.
    """
    if shifts.dtype.is_floating_point or shifts.dtype == torch.bool:
        raise TypeError(f"roll2d needs integer shifts, got dtype {shifts.dtype}")
    if x.dim() < 2:
        raise ValueError(f"roll2d needs images (*L, H, W), got shape {tuple(x.shape)}")
    lead = x.shape[:-2]
    if shifts.dim() != len(lead) + 1 or shifts.shape[-1] != 2:
        raise ValueError(
            f"roll2d needs shifts of shape (*S, 2) with {len(lead)} leading axes for images "
            f"{tuple(x.shape)}; got {tuple(shifts.shape)}"
        )
    try:
        fits = torch.broadcast_shapes(shifts.shape[:-1], lead) == lead
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"shifts {tuple(shifts.shape)} do not broadcast to the leading axes of images "
            f"{tuple(x.shape)}"
        )
    shifts = shifts.to(device=x.device, dtype=torch.long)
    return _Roll2d.apply(x, shifts, circular)
