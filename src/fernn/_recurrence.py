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
- the gradient of the input term sums over V once per frame (a broadcast first layer).

It gives the same outputs as the step-by-step path and the same gradients up to float
summation order (tested). ``FlowRNNCell.fused_sequence`` turns it on or off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._torus import flat_index, gather_flat

__all__ = ["VanillaRecurrence", "RECURRENCE_NONLINEARITIES"]

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

    Returns the states ``(B, T, V, C, H, W)``, or the last ``(B, V, C, H, W)``. Circular
    padding only. Only the states are kept for the backward pass: the shifted, padded
    states the convolution read are gathered again there (one cheap gather per frame instead of a second copy of every
    state), and every per-frame temporary lives in a buffer reused across frames (fresh
    memory costs page faults that, on CPU, rival a convolution).
    """

    @staticmethod
    def forward(ctx, u: Tensor, h0: Tensor | None, weight: Tensor, shifts: Tensor,  # type: ignore[override]
                nonlinearity: str, keep: bool = True) -> Tensor:
        act, _ = _ACTIVATIONS[nonlinearity]
        B, T, _, C, H, W = u.shape
        V = shifts.shape[1]
        p = weight.shape[-1] // 2
        size = (H + 2 * p, W + 2 * p)
        index = flat_index(shifts, H, W, True, p)
        out = u.new_empty(B, T, V, C, H, W)
        hp = u.new_empty(B, V, C, *size)  # S_ν h_{t-1}(ν), padded for W: reused every frame
        h = h0
        for t in range(T):
            if h is None:
                out[:, t] = u[:, t]  # W ⋆ 0 = 0
            else:
                gather_flat(h, index, size, True, out=hp)
                torch.add(_correlate(hp, weight), u[:, t], out=out[:, t])
            h = act(out[:, t])
        ctx.nonlinearity = nonlinearity
        ctx.lifted = u.shape[2] != 1
        ctx.zero_start = h0 is None
        ctx.keep = keep
        ctx.save_for_backward(out, weight, shifts, *([] if h0 is None else [h0]))
        return out if keep else out[:, -1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        out, weight, shifts, *h0 = ctx.saved_tensors
        _, dact = _ACTIVATIONS[ctx.nonlinearity]
        need_u, need_h0, need_w = ctx.needs_input_grad[:3]
        B, T, V, C, H, W = out.shape
        p = weight.shape[-1] // 2
        size = (H + 2 * p, W + 2 * p)
        first = 1 if ctx.zero_start else 0  # the first frame with a convolution
        forward_index = flat_index(shifts, H, W, True, p)  # S_ν, padded: rebuilds W's input
        adjoint_index = flat_index(-shifts, H, W, True, p)  # S_{-ν}, padded
        flipped = weight.flip(-2, -1).transpose(0, 1).contiguous()  # W̃: the adjoint's kernel
        grad_u = out.new_empty(B, T, V if ctx.lifted else 1, C, H, W) if need_u else None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_h0 = None
        padded = out.new_empty(B, V, C, *size)  # buffers reused by every frame
        gz = out.new_empty(B, V, C, H, W)
        g_buf = out.new_empty(B, V, C, H, W)
        def grad_of(t: int) -> Tensor | None:
            """∂L/∂h_t from outside (only the last state's, when only it was returned)."""
            if ctx.keep:
                return grad_out[:, t]
            return grad_out if t == T - 1 else None

        g = grad_of(T - 1)
        for t in range(T - 1, -1, -1):
            dact(g, out[:, t], gz)  # ∂L/∂(pre-activation) of frame t
            if grad_u is not None:
                if ctx.lifted:
                    grad_u[:, t] = gz
                else:
                    torch.sum(gz, dim=1, keepdim=True, out=grad_u[:, t])
            if t < first:
                break  # frame 0 from a zero state: no convolution to differentiate
            if grad_w is not None:
                prev = out[:, t - 1] if t > 0 else h0[0]
                gather_flat(prev, forward_index, size, True, out=padded)
                grad_w += _aten.convolution_backward(
                    gz.view(B * V, C, H, W), padded.view(B * V, C, *size), weight, None,
                    [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [False, True, False])[1]
            if t == 0 and not need_h0:
                break
            # ∂L/∂h_{t-1}(ν) = W̃ ⋆ S_{-ν} gz(ν): the forward's gather and convolution again.
            back = _correlate(gather_flat(gz, adjoint_index, size, True, out=padded), flipped)
            if t == 0:
                grad_h0 = back
                break
            outside = grad_of(t - 1)
            g = back if outside is None else torch.add(outside, back, out=g_buf)
        return grad_u, grad_h0, grad_w, None, None, None
