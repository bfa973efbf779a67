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
- *window gather*: the image is tiled (torus) or surrounded by zeros, and each output is
  one ``H×W`` window of that, picked by one index per image instead of one per pixel.
  It wins when every image has its own shift (data generation: one shift per sequence,
  digit and frame), where a flat index would be larger than the data.

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


def _roll_windows(x: Tensor, shifts: Tensor, circular: bool) -> Tensor:
    *lead, H, W = x.shape
    n = len(lead)
    # Axes that are expanded (stride 0) or of size 1 need no index: read their first entry.
    indexed = [d for d in range(n) if lead[d] > 1 and x.stride(d) != 0]
    src = x
    for d in reversed(range(n)):
        if d not in indexed:
            src = src.select(d, 0)
    sy, sx = shifts[..., 0], shifts[..., 1]  # (*S)
    if circular:
        # Tile the torus: every shifted image is an H×W window of the tiling.
        tiled = src.repeat(*([1] * (src.dim() - 2)), 2, 2)[..., : 2 * H - 1, : 2 * W - 1]
        oy, ox = (-sy).remainder(H), (-sx).remainder(W)
    else:
        # Surround with zeros: windows beyond the image read zeros.
        tiled = torch.nn.functional.pad(src, (W, W, H, H))
        oy, ox = (H - sy).clamp(0, 2 * H), (W - sx).clamp(0, 2 * W)
    windows = tiled.unfold(-2, H, 1).unfold(-2, W, 1)  # (*K, Y, X, H, W), a view
    lead_index = [
        torch.arange(lead[d], device=x.device).view(*([1] * d), lead[d], *([1] * (n - d - 1)))
        for d in indexed
    ]
    out = windows[(*lead_index, oy, ox)]
    if out.shape != x.shape:  # every axis the shifts broadcast over was unindexed
        out = out.expand(x.shape).contiguous()
    return out


def _roll(x: Tensor, shifts: Tensor, circular: bool) -> Tensor:
    distinct = shifts[..., 0].numel()
    images = x[..., 0, 0].numel()
    if distinct * 4 <= images:
        return _roll_flat(x, shifts, circular)
    return _roll_windows(x, shifts, circular)


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
