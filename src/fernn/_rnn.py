"""FlowRNN: a stack of flow-equivariant recurrent layers, and pooling over velocities."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._cells import FlowRNNCell
from ._checks import _reference, check_input, check_like, positive_int, unit_interval
from ._flows import Flow
from ._pooling import POOL_MODES, pool_velocities

__all__ = ["FlowRNN", "VelocityPool", "pool_velocities", "POOL_MODES"]

def flat_state(state, lstm: bool) -> tuple:
    """A layer's (or stack's) state as a tuple of tensors: ``(h, c)`` for lstm, ``(h,)``
    otherwise — the form ``torch.utils.checkpoint`` passes through."""
    return tuple(state) if lstm else (state,)


def unflat_state(flat, lstm: bool):
    """The inverse of :func:`flat_state`."""
    return tuple(flat) if lstm else flat[0]


def unstack_layers(stacked: Tensor) -> list[Tensor]:
    """``(L, ...)`` → L tensors; a view for one layer, so that its backward copies nothing
    (``unbind``'s backward stacks the gradients into a new tensor)."""
    return [stacked.squeeze(0)] if stacked.shape[0] == 1 else list(stacked.unbind(0))


def stack_layers(layers: list[Tensor]) -> Tensor:
    """The inverse of :func:`unstack_layers`: a view for one layer, a stacked copy for more."""
    return layers[0].unsqueeze(0) if len(layers) == 1 else torch.stack(layers)


class VelocityPool(nn.Module):
    """Module form of :func:`pool_velocities`. Shapes: ``(..., V, C, H, W) -> (..., C, H, W)``."""

    def __init__(self, mode: str = "max"):
        super().__init__()
        if mode not in POOL_MODES:
            raise ValueError(f"pool mode must be one of {POOL_MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, h: Tensor) -> Tensor:
        return pool_velocities(h, self.mode)

    def extra_repr(self) -> str:
        return repr(self.mode)


class FlowRNN(nn.Module):
    """A stack of flow-equivariant recurrent layers (FERNN, Keller 2025).

    Layer 1 reads frames and broadcasts its input term over V; layer l+1 reads layer l's
    lifted state velocity-wise, so the whole stack obeys the law of FERNN.md §3 exactly:
    moving the input by ``f'_t = S_{tν̂} f_t`` gives ``out'[:, t, ν] = S_{tν̂} out[:, t, ν − ν̂]``
    for every ν with ν − ν̂ ∈ V. ``TranslationFlow2D(max_speed=0)`` makes it a G-RNN;
    ``transport="learned"`` a G-RNN+.

    Args:
        in_channels, hidden_channels, flow, cell, kernel_size, nonlinearity, bias,
        padding_mode, transport: see :class:`FlowRNNCell` (shared by all layers).
        num_layers: depth of the stack.
        dropout: dropout on each layer's output before the next layer (not after the
            last); identity in eval mode, where the law is exact.
        input_conv: layer 1's input convolution U (default). ``False``: layer 1 has none and
            its input is its input term, so the sequence must have ``G·hidden_channels``
            channels (e.g. a frame encoder's output, as in the research KTH classifier);
            deeper layers keep their U. See :class:`FlowRNNCell`.
        checkpoint_every: activation checkpointing over time: keep only the state at every
            ``k``-th frame and recompute the frames between in the backward pass (0: off).
            Same outputs and gradients; less memory for some more compute.

    Shapes:
        x: ``(B, T, C_in, H, W)``.
        state (optional, to continue a sequence): ``(L, B, V, C_h, H, W)``; for
        ``cell="lstm"`` a pair ``(h, c)`` of such tensors.
        Returns ``out`` ``(B, T, V, C_h, H, W)`` — the top layer's state after each frame —
        and the final state in the same form as ``state``. With ``return_sequence=False``
        ``out`` is ``None`` and the top layer's sequence is never kept (less memory).

    Example::

        >>> flow = TranslationFlow2D(max_speed=1)
        >>> rnn = FlowRNN(in_channels=1, hidden_channels=8, flow=flow)
        >>> out, state = rnn(torch.zeros(2, 5, 1, 16, 16))
        >>> out.shape, state.shape
        (torch.Size([2, 5, 9, 8, 16, 16]), torch.Size([1, 2, 9, 8, 16, 16]))
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        flow: Flow,
        cell: str = "rnn",
        num_layers: int = 1,
        kernel_size: int = 3,
        nonlinearity: str | None = None,
        bias: bool | None = None,
        padding_mode: str = "circular",
        dropout: float = 0.0,
        transport: str = "flow",
        checkpoint_every: int = 0,
        input_conv: bool = True,
    ):
        super().__init__()
        in_channels = positive_int(in_channels, "in_channels")
        hidden_channels = positive_int(hidden_channels, "hidden_channels")
        num_layers = positive_int(num_layers, "num_layers")
        checkpoint_every = positive_int(checkpoint_every, "checkpoint_every", minimum=0)
        dropout = unit_interval(dropout, "dropout", closed_right=False)
        self.checkpoint_every = checkpoint_every
        if not isinstance(flow, Flow):
            raise TypeError(f"flow must be a fernn Flow (e.g. TranslationFlow2D); got {flow!r}")
        self.flow = flow
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.cell = cell
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            FlowRNNCell(
                in_channels if layer == 0 else hidden_channels,
                hidden_channels,
                flow,
                cell=cell,
                kernel_size=kernel_size,
                nonlinearity=nonlinearity,
                bias=bias,
                padding_mode=padding_mode,
                lifted_input=layer > 0,
                transport=transport,
                input_conv=input_conv or layer > 0,
            )
            for layer in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def num_velocities(self) -> int:
        return len(self.flow)

    def _check_input(self, x: Tensor) -> None:
        """A sequence ``(B, T, C_in, H, W)``, nothing empty, on the module's device and in
        its dtype (see :func:`fernn._checks.check_input`)."""
        check_input(x, self, f"(B, T, C={self.in_channels}, H, W)", channels=self.in_channels,
                    who="FlowRNN")

    def _split_state(self, state, x: Tensor) -> list:
        """Per-layer states from the stacked form, validated against the input."""
        B, _, _, H, W = x.shape
        expected = (self.num_layers, B, len(self.flow), self.layers[0].state_channels, H, W)
        if state is None:
            return [layer.initial_state(B, H, W, x) for layer in self.layers]
        parts = state if self.cell == "lstm" else (state,)
        if self.cell == "lstm" and not (isinstance(state, (tuple, list)) and len(state) == 2):
            raise ValueError("an lstm FlowRNN's state is a pair (h, c) of (L, B, V, C, H, W)")
        ref = _reference(self)
        for part in parts:
            if not isinstance(part, Tensor) or tuple(part.shape) != expected:
                got = tuple(part.shape) if isinstance(part, Tensor) else type(part).__name__
                raise ValueError(
                    f"state must have shape (L, B, V, C_h, H, W) = {expected} for this input "
                    f"and {self.flow!r}; got {got}"
                )
            check_like(part, "state", ref, "FlowRNN")
        if self.cell == "lstm":
            return list(zip(unstack_layers(state[0]), unstack_layers(state[1])))
        return unstack_layers(state)

    def _stack_state(self, states: list):
        if self.cell == "lstm":
            return stack_layers([h for h, _ in states]), stack_layers([c for _, c in states])
        return stack_layers(states)

    def _run_layer(self, layer, u: Tensor, state, keep: bool, zero_state: bool,
                   offsets: Tensor | None = None):
        """One layer through the input terms ``u`` ``(B, T, 1 or V, G·C_h, H, W)`` (with
        per-frame transport ``offsets`` ``(B, T, 2)``), checkpointed over time if asked."""
        k = self.checkpoint_every
        weight = layer.hidden_weight()  # built once for all frames (None for plain convs)
        if not k or not torch.is_grad_enabled() or u.shape[1] <= k:
            return layer.run_sequence(u, state, keep, zero_state, weight, offsets)
        from torch.utils.checkpoint import checkpoint

        pieces = []
        lstm = layer.cell == "lstm"
        B, H, W = u.shape[0], u.shape[-2], u.shape[-1]
        for start in range(0, u.shape[1], k):
            seg = u[:, start : start + k]
            seg_offsets = None if offsets is None else offsets[:, start : start + k]
            zero = zero_state and not start
            # A zero state is made again inside rather than kept as the segment's input.
            carried = () if zero else flat_state(state, lstm)

            def run(seg, weight, *flat, layer=layer, keep=keep, zero=zero, off=seg_offsets):
                st = unflat_state(flat, lstm) if flat else layer.initial_state(B, H, W, seg)
                out, st = layer.run_sequence(seg, st, keep, zero, weight, off)
                return (out, *flat_state(st, lstm)) if keep else flat_state(st, lstm)

            result = checkpoint(run, seg, weight, *carried, use_reentrant=False)
            if keep:
                pieces.append(result[0])
                result = result[1:]
            state = unflat_state(result, lstm)
        return (torch.cat(pieces, dim=1) if keep else None), state

    def forward(self, x: Tensor, state=None, return_sequence: bool = True,
                offsets: Tensor | None = None):
        """Run the stack over ``x``; ``offsets`` ``(B, T, 2)`` (translation flows): every
        layer's transport into frame t is ``S_{ν + d_{b,t}}`` — an observer moving by
        ``a = −d`` (the world model's self-motion shift)."""
        self._check_input(x)
        zero_state = state is None  # lets a fast path skip W ⋆ 0 on the first frame
        states = self._split_state(state, x)
        layer_input = x  # (B, T, C_in, H, W), then (B, T, V, C_h, H, W)
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            if index > 0:
                layer_input = self.dropout(layer_input)
            u = layer.input_term(layer_input)  # (B, T, 1 or V, G·C_h, H, W), all frames at once
            keep = return_sequence or index < last
            layer_input, states[index] = self._run_layer(layer, u, states[index], keep,
                                                         zero_state, offsets)
        return layer_input, self._stack_state(states)
