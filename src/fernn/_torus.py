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

With ``pad=p`` the shift and a convolution's padding are one gather: the output is the
shifted image already padded by ``p`` on each side (wrapped on the torus, zeros
otherwise), ready for a convolution with ``padding=0``. This saves the separate padding
copy — and above all its backward, which autograd runs as many slice copies and fills.
The backward folds the padded gradient back onto the torus (or drops the zero border),
then shifts it by ``-s``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["roll2d", "circular_pad", "Conv2d"]


def _source_coords(shifts: Tensor, size: int, axis: int, circular: bool,
                          pad: int) -> Tensor:
    """Source coordinate of every coordinate of the padded output, ``-1`` when outside."""
    coords = torch.arange(-pad, size + pad, device=shifts.device)
    src = coords - shifts[..., axis, None]  # (*S, size + 2·pad)
    if circular:
        return src.remainder(size)
    # Zeros: a pixel is zero if the shift brings it from outside, or it is padding.
    inside = (src >= 0) & (src < size) & (coords >= 0) & (coords < size)
    return torch.where(inside, src, torch.full_like(src, -1))


def flat_index(shifts: Tensor, H: int, W: int, circular: bool, pad: int = 0) -> Tensor:
    """The flat gather's source index ``(*S, (H + 2p)·(W + 2p))`` into images flattened to
    ``H·W``; ``H·W`` (one past the end: an appended zero) where the source is outside."""
    rows = _source_coords(shifts, H, 0, circular, pad)  # (*S, H + 2p)
    cols = _source_coords(shifts, W, 1, circular, pad)  # (*S, W + 2p)
    flat = rows[..., :, None] * W + cols[..., None, :]  # (*S, H + 2p, W + 2p)
    if not circular:
        outside = (rows[..., :, None] < 0) | (cols[..., None, :] < 0)
        flat = torch.where(outside, torch.full_like(flat, H * W), flat)
    return flat.flatten(-2)


def gather_flat(x: Tensor, index: Tensor, size: tuple[int, int], circular: bool,
                out: Tensor | None = None) -> Tensor:
    """``x`` ``(*L, H, W)`` gathered by a :func:`flat_index` into ``(*L, *size)``, written
    into ``out`` when given (a buffer reused across frames saves fresh memory)."""
    *lead, H, W = x.shape
    src = x.reshape(*lead, H * W)
    if not circular:  # out-of-image pixels read an appended zero
        src = torch.nn.functional.pad(src, (0, 1))
    index = index.expand(*lead, index.shape[-1])
    if out is None:
        return src.gather(-1, index).view(*lead, *size)
    torch.gather(src, -1, index, out=out.view(*lead, index.shape[-1]))
    return out


def _roll_flat(x: Tensor, shifts: Tensor, circular: bool, pad: int = 0) -> Tensor:
    H, W = x.shape[-2:]
    return gather_flat(x, flat_index(shifts, H, W, circular, pad), (H + 2 * pad, W + 2 * pad),
                       circular)


def _fold(grad: Tensor, pad: int, circular: bool) -> Tensor:
    """Adjoint of padding by ``pad``: the border adds onto the opposite side of the torus
    (circular), or is dropped (zeros). ``(*L, H + 2p, W + 2p) -> (*L, H, W)``."""
    H, W = grad.shape[-2] - 2 * pad, grad.shape[-1] - 2 * pad
    rows = grad[..., pad : pad + H, :].clone()
    if circular:
        rows[..., :pad, :] += grad[..., pad + H :, :]
        rows[..., H - pad :, :] += grad[..., :pad, :]
    out = rows[..., pad : pad + W].clone()
    if circular:
        out[..., :pad] += rows[..., pad + W :]
        out[..., W - pad :] += rows[..., :pad]
    return out


class _CircularPad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, pad: int) -> Tensor:  # type: ignore[override]
        ctx.pad = pad
        return torch.nn.functional.pad(x, (pad,) * 4, mode="circular")

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return _fold(grad, ctx.pad, True), None


def circular_pad(x: Tensor, pad: int) -> Tensor:
    """Pad images ``(*L, H, W)`` by ``pad`` on every side, wrapped on the torus: the same
    as ``F.pad(x, (pad,) * 4, mode="circular")``, whose backward autograd runs as dozens of
    slice copies and fills; here it is one fold (:func:`_fold`)."""
    if not 0 <= pad <= min(x.shape[-2:]):
        raise ValueError(f"circular_pad needs 0 <= pad <= min(H, W); got pad={pad} for "
                         f"images {tuple(x.shape)}")
    return _CircularPad.apply(x, int(pad))


class Conv2d(torch.nn.Conv2d):
    """``nn.Conv2d`` whose circular padding is :func:`circular_pad` (a fast backward).
    Same parameters, state dict and results; other padding modes are unchanged."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ph, pw = self.padding if isinstance(self.padding, tuple) else (None, None)
        if self.padding_mode == "circular" and ph == pw and input.dim() == 4:
            return torch.nn.functional.conv2d(circular_pad(input, ph), weight, bias, self.stride,
                                              0, self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)


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
    def forward(ctx, x: Tensor, shifts: Tensor, circular: bool, pad: int = 0) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(shifts)
        ctx.circular = circular
        ctx.pad = pad
        if pad:
            return _roll_flat(x, shifts, circular, pad)
        return _roll(x, shifts, circular)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (shifts,) = ctx.saved_tensors
        if ctx.pad:
            grad = _fold(grad, ctx.pad, ctx.circular)
        # The adjoint of a (partial) permutation is its inverse: the opposite shift.
        return _Roll2d.apply(grad, -shifts, ctx.circular), None, None, None


def roll2d(x: Tensor, shifts: Tensor, circular: bool = True, pad: int = 0) -> Tensor:
    """Shift every image of ``x`` by its own integer displacement.

    Args:
        x: tensor ``(*L, H, W)``; may be an expanded (stride-0) view.
        shifts: integer tensor ``(*S, 2)`` of ``(s_y, s_x)`` rows, with ``len(S) == len(L)``
            and ``S`` broadcastable to ``L``.
        circular: wrap around the torus (``True``) or fill with zeros (``False``).
        pad: also pad the result by ``pad`` pixels on every side, the same way (wrapped on
            the torus, zeros otherwise): the input of a ``padding=0`` convolution.

    Returns:
        ``(*L, H + 2·pad, W + 2·pad)`` tensor with ``out[..., i, j] = x[..., i - pad - s_y,
        j - pad - s_x]`` (indices wrapped, or zero outside the image).
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
    H, W = x.shape[-2:]
    if not 0 <= pad <= min(H, W):
        raise ValueError(f"roll2d pad must lie in [0, min(H, W)] = [0, {min(H, W)}], got {pad}")
    shifts = shifts.to(device=x.device, dtype=torch.long)
    return _Roll2d.apply(x, shifts, circular, int(pad))
