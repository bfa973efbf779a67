"""The paper's vanilla recurrence over a whole sequence as one autograd node (fast path).

For translation flows on the torus, one layer's frames are::

    h_t(ν) = σ( u_t(ν) + W ⋆ S_ν h_{t-1}(ν) )            (FERNN.md §2, u_t = U ⋆ f_t)

Run step by step under autograd, every frame records a gather, a convolution, an add and
an activation, and the frames are stacked at the end. :class:`VanillaRecurrence` runs the
same arithmetic with a hand-written backward pass through time instead:

- each ``h_t`` is written straight into the output sequence (no stack copy), the add and
  the activation in place;
- a zero initial state skips the first frame's convolution (``W ⋆ 0 = 0``);
- the gradient with respect to the previous state uses the same shape of work as the
  forward pass. The adjoint of a circular correlation with ``W`` is the circular
  correlation with the flipped, transposed kernel ``W̃``, and shifts commute with it, so
  ``∂L/∂h_{t-1}(ν) = W̃ ⋆ S_{-ν} g_t(ν)``: one padded gather (:func:`roll2d`'s fast
  path) and one ``padding=0`` convolution — which runs faster than the convolution's own
  input-gradient kernel on CPU;
- the gradient of the input term sums over V once per frame (a broadcast first layer);
- on CPU the batch runs in chunks of at most :data:`CPU_CHUNK_BYTES` of state, each chunk
  through all its frames (batch items never interact), so that no temporary is large
  enough for the C library to map fresh pages for it.

It gives the same outputs as the step-by-step path and the same gradients up to float
summation order (tested). ``FlowRNNCell.fused_sequence`` turns it on or off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._torus import flat_index, gather_flat

__all__ = ["VanillaRecurrence", "RECURRENCE_NONLINEARITIES", "batch_chunks", "CPU_CHUNK_BYTES"]

_aten = torch.ops.aten
# σ applied in place, and its derivative written in terms of σ's output y, into ``out``.
_ACTIVATIONS = {
    "relu": (torch.relu_, lambda g, y, out: _aten.threshold_backward.grad_input(
        g, y, 0, grad_input=out)),
    "tanh": (torch.tanh_, lambda g, y, out: _aten.tanh_backward.grad_input(g, y, grad_input=out)),
    "sigmoid": (torch.sigmoid_, lambda g, y, out: _aten.sigmoid_backward.grad_input(
        g, y, grad_input=out)),
    "identity": (lambda y: y, lambda g, y, out: out.copy_(g)),
}
RECURRENCE_NONLINEARITIES = tuple(_ACTIVATIONS)


def _correlate(hp: Tensor, weight: Tensor) -> Tensor:
    """``padding=0`` correlation of padded slices ``(B, V, C, H+2p, W+2p)`` → ``(B, V, C', H, W)``."""
    B, V, C, Hp, Wp = hp.shape
    k = weight.shape[-1]
    out = F.conv2d(hp.view(B * V, C, Hp, Wp), weight)
    return out.view(B, V, -1, Hp - k + 1, Wp - k + 1)


# On CPU the batch is run in chunks whose states take at most this many bytes. glibc
# serves every allocation above 32 MiB with a fresh mmap, whose pages fault in on first
# touch: a fresh 40 MB convolution output costs about as much again as the convolution.
# Chunks this size are recycled from the heap instead, stay nearer the caches, and make
# every temporary of the backward pass one chunk's, not one batch's. A FlowRNN step at
# B=16 ran 1.6x faster in 4-16 MiB chunks than whole (docs/benchmarks.md). CUDA's caching
# allocator recycles memory itself: there the batch runs whole.
CPU_CHUNK_BYTES = 8 * 2**20


def batch_chunks(batch: int, item_bytes: int, device: torch.device) -> list[slice]:
    """Slices of the batch axis, each holding at most :data:`CPU_CHUNK_BYTES` of state on
    CPU (at least one item), in chunks of equal size; the whole batch elsewhere."""
    if device.type != "cpu" or batch * item_bytes <= CPU_CHUNK_BYTES:
        return [slice(0, batch)]
    pieces = -(-batch // max(1, CPU_CHUNK_BYTES // item_bytes))
    rows = -(-batch // pieces)
    return [slice(start, min(start + rows, batch)) for start in range(0, batch, rows)]


class _FrameIndex:
    """The padded gather index of the transport into frame t: one index for every frame
    (the flow's shifts ``(1, V, 1, 2)``), or, with per-frame ``offsets`` ``(B, T, 2)``, the
    index of ``S_{ν + d_{b,t}}`` for the rows of a batch chunk, built when asked for.
    ``adjoint``: the inverse shift (the backward pass)."""

    def __init__(self, shifts: Tensor, offsets: Tensor | None, H: int, W: int, p: int,
                 adjoint: bool = False):
        self.sign = -1 if adjoint else 1
        self.shifts, self.offsets, self.H, self.W, self.p = shifts, offsets, H, W, p
        self.fixed = (flat_index(self.sign * shifts, H, W, True, p) if offsets is None
                      else None)

    def __call__(self, rows: slice, t: int) -> Tensor:
        if self.fixed is not None:
            return self.fixed
        total = self.shifts + self.offsets[rows, t][:, None, None, :]  # (n, V, 1, 2)
        return flat_index(self.sign * total, self.H, self.W, True, self.p)


class VanillaRecurrence(torch.autograd.Function):
    """``out[:, t] = σ(u[:, t] + W ⋆ roll(out[:, t-1]))`` for all t, with ``out[:, -1] = h0``.

    Args (to :meth:`apply`, positional):
        u: input terms ``(B, T, 1 or V, C, H, W)`` (1: shared by every velocity).
        h0: initial state ``(B, V, C, H, W)``, or None for zeros.
        weight: W ``(C, C, k, k)``, k odd.
        shifts: ``(1, V, 1, 2)`` integer shift of each velocity per frame.
        nonlinearity: a key of :data:`RECURRENCE_NONLINEARITIES`.
        keep: return every state (else only the last: its backward then needs no zero
            gradient for the others).
        offsets: optional ``(B, T, 2)`` integer displacement added to every velocity's
            shift at frame t of sequence b: the transport is then ``S_{ν + d_{b,t}}``
            (an observer's own motion, ``d = −a``: the world model). Still one gather per
            frame over (sample, velocity); its index is built per frame.

    Returns the states ``(B, T, V, C, H, W)``, or the last ``(B, V, C, H, W)``. Circular
    padding only. Only the states are kept for the backward pass: the shifted, padded
    states the convolution read are gathered again there (one cheap gather per frame
    instead of a second copy of every state). Batch items never interact, so both passes
    run chunk by chunk (:func:`batch_chunks`), each chunk through all its frames, with
    every temporary in a chunk-sized buffer reused across frames.
    """

    @staticmethod
    def forward(ctx, u: Tensor, h0: Tensor | None, weight: Tensor, shifts: Tensor,  # type: ignore[override]
                nonlinearity: str, keep: bool = True, offsets: Tensor | None = None) -> Tensor:
        act, _ = _ACTIVATIONS[nonlinearity]
        B, T, _, C, H, W = u.shape
        V = shifts.shape[1]
        p = weight.shape[-1] // 2
        size = (H + 2 * p, W + 2 * p)
        index = _FrameIndex(shifts, offsets, H, W, p)
        # The states: one tensor when all are returned, else one per frame, so that the
        # returned last state holds no others (a checkpointed segment then frees them).
        out = u.new_empty(B, T, V, C, H, W) if keep else None
        frames = out.unbind(1) if keep else [u.new_empty(B, V, C, H, W) for _ in range(T)]
        chunks = batch_chunks(B, V * C * H * W * u.element_size(), u.device)
        hp = u.new_empty(chunks[0].stop, V, C, *size)  # S_ν h_{t-1}(ν), padded for W
        for rows in chunks:
            n = rows.stop - rows.start
            h = None if h0 is None else h0[rows]
            for t in range(T):
                new = frames[t][rows]
                if h is None:
                    new.copy_(u[rows, t])  # W ⋆ 0 = 0
                else:
                    gather_flat(h, index(rows, t), size, True, out=hp[:n])
                    torch.add(_correlate(hp[:n], weight), u[rows, t], out=new)
                h = act(new)
        ctx.nonlinearity = nonlinearity
        ctx.lifted = u.shape[2] != 1
        ctx.zero_start = h0 is None
        ctx.keep = keep
        ctx.frames = T
        ctx.offsets = offsets is not None
        ctx.save_for_backward(weight, shifts, *([] if offsets is None else [offsets]),
                              *([] if h0 is None else [h0]), *([out] if keep else frames))
        return out if keep else frames[-1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        weight, shifts, *saved = ctx.saved_tensors
        offsets = saved.pop(0) if ctx.offsets else None
        h0 = None if ctx.zero_start else saved.pop(0)
        frames = saved[0].unbind(1) if ctx.keep else saved
        _, dact = _ACTIVATIONS[ctx.nonlinearity]
        need_u, need_h0, need_w = ctx.needs_input_grad[:3]
        T = ctx.frames
        B, V, C, H, W = frames[0].shape
        p = weight.shape[-1] // 2
        size = (H + 2 * p, W + 2 * p)
        first = 1 if ctx.zero_start else 0  # the first frame with a convolution
        forward_index = _FrameIndex(shifts, offsets, H, W, p)  # S_ν, padded: W's input
        adjoint_index = _FrameIndex(shifts, offsets, H, W, p, adjoint=True)  # S_{-ν}, padded
        flipped = weight.flip(-2, -1).transpose(0, 1).contiguous()  # W̃: the adjoint's kernel
        like = frames[0]
        grad_u = like.new_empty(B, T, V if ctx.lifted else 1, C, H, W) if need_u else None
        grad_w = torch.zeros_like(weight) if need_w else None
        chunks = batch_chunks(B, V * C * H * W * like.element_size(), like.device)
        # In chunks, ∂L/∂h0 is put together chunk by chunk; whole, it is one chunk's result.
        grad_h0 = like.new_empty(B, V, C, H, W) if need_h0 and len(chunks) > 1 else None
        padded = like.new_empty(chunks[0].stop, V, C, *size)  # chunk buffers reused by
        gz_buf = like.new_empty(chunks[0].stop, V, C, H, W)  # every frame

        def outside(rows: slice, t: int) -> Tensor | None:
            """∂L/∂h_t from outside (only the last state's, when only it was returned)."""
            if ctx.keep:
                return grad_out[rows, t]
            return grad_out[rows] if t == T - 1 else None

        for rows in chunks:
            n = rows.stop - rows.start
            gz, pad = gz_buf[:n], padded[:n]
            g = outside(rows, T - 1)
            for t in range(T - 1, -1, -1):
                dact(g, frames[t][rows], gz)  # ∂L/∂(pre-activation) of frame t
                if grad_u is not None:
                    if ctx.lifted:
                        grad_u[rows, t] = gz
                    else:
                        torch.sum(gz, dim=1, keepdim=True, out=grad_u[rows, t])
                if t < first:
                    break  # frame 0 from a zero state: no convolution to differentiate
                if grad_w is not None:
                    prev = frames[t - 1][rows] if t > 0 else h0[rows]
                    gather_flat(prev, forward_index(rows, t), size, True, out=pad)
                    grad_w += _aten.convolution_backward(
                        gz.view(n * V, C, H, W), pad.view(n * V, C, *size), weight, None,
                        [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [False, True, False])[1]
                if t == 0 and not need_h0:
                    break
                # ∂L/∂h_{t-1}(ν) = W̃ ⋆ S_{-ν} gz(ν): the forward's gather and convolution.
                back = _correlate(gather_flat(gz, adjoint_index(rows, t), size, True, out=pad),
                                  flipped)
                if t == 0:
                    if grad_h0 is None:
                        grad_h0 = back
                    else:
                        grad_h0[rows] = back
                    break
                more = outside(rows, t - 1)
                g = back if more is None else back.add_(more)
        return grad_u, grad_h0, grad_w, None, None, None, None
