"""Next-step prediction: a FlowRNN encoder and a CNN decoder on the V-pooled state."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._checks import check_input, positive_int, unit_interval
from .._flows import Flow
from .._recurrence import batch_chunks
from .._rnn import FlowRNN, VelocityPool, flat_state, unflat_state, unstack_layers
from .._torus import Conv2d

__all__ = ["NextStepPredictor", "conv_decoder", "EquivariantDecoder", "READOUTS"]

READOUTS = ("research", "equivariant", "pooled")
"""The readouts of :class:`NextStepPredictor` (they differ only for a flow with a fibre)."""


def conv_decoder(
    in_channels: int, out_channels: int, layers: int = 4, padding_mode: str = "circular"
) -> nn.Sequential:
    """``layers`` × (3×3 conv + ReLU) then a 3×3 conv to ``out_channels`` (no biases).

    With circular padding it commutes with translations of the torus.
    """
    in_channels = positive_int(in_channels, "in_channels")
    out_channels = positive_int(out_channels, "out_channels")
    layers = positive_int(layers, "decoder_layers", minimum=0)
    conv = dict(kernel_size=3, padding=1, padding_mode=padding_mode, bias=False)
    blocks: list[nn.Module] = []
    for _ in range(layers):
        blocks += [Conv2d(in_channels, in_channels, **conv), nn.ReLU()]
    blocks.append(Conv2d(in_channels, out_channels, **conv))
    return nn.Sequential(*blocks)


class EquivariantDecoder(nn.Module):
    """A decoder on lifted fields that keeps their orientations until the very end.

    ``layers`` × (the flow's group convolution ``F → F`` fields + ReLU), a group
    convolution ``F → C_out`` fields, then each output field averaged over its fibre
    (the projection of a regular field onto the invariant one)::

        y = mean_n  W_out ⋆ ReLU(W_L ⋆ … ReLU(W_1 ⋆ s))[·, n]

    Every step commutes with the flow's static action (a rotation of C_N turns the maps
    and rolls the orientations; the mean over orientations is invariant to the roll), so
    the image ``y`` turns with the input: exactly for quarter turns. No biases.

    Shapes: ``(B, F·fibre, H, W) → (B, C_out, H, W)``.
    """

    def __init__(self, flow: Flow, fields: int, out_channels: int, layers: int = 4,
                 padding_mode: str = "circular", kernel_size: int = 3):
        super().__init__()
        self.flow = flow
        conv = dict(kernel_size=kernel_size, bias=False, padding_mode=padding_mode,
                    input_on_group=True)
        blocks: list[nn.Module] = []
        for _ in range(layers):
            blocks += [flow.make_conv(fields, fields, **conv), nn.ReLU()]
        blocks.append(flow.make_conv(fields, out_channels, **conv))
        self.body = nn.Sequential(*blocks)

    def forward(self, s: Tensor) -> Tensor:
        return self.flow.pool_fibre(self.body(s), "mean")


def _decoder(readout: str, flow: Flow, hidden_channels: int, out_channels: int, layers: int,
             padding_mode: str) -> nn.Module:
    if flow.fibre == 1 or readout == "pooled":  # plain convolutions on F channels
        return conv_decoder(hidden_channels, out_channels, layers, padding_mode)
    if readout == "research":  # plain convolutions on all F·N channels (FERNN.md §4)
        return conv_decoder(hidden_channels * flow.fibre, out_channels, layers, padding_mode)
    return EquivariantDecoder(flow, hidden_channels, out_channels, layers, padding_mode)


def _shrinking_groups(n: int) -> list[int]:
    """Sizes m, m-1, ..., summing to ``n``, with the smallest such m (the last one cut)."""
    m = math.ceil((math.sqrt(8 * n + 1) - 1) / 2)  # the least m with m(m+1)/2 >= n
    sizes = []
    while n > 0:
        sizes.append(min(m, n))
        n, m = n - sizes[-1], m - 1
    return sizes


class NextStepPredictor(nn.Module):
    """Observe ``T_in`` frames, then predict the next ``pred_len`` frames one at a time.

    The encoder is a :class:`~fernn.FlowRNN`. Frame ``t + 1`` is predicted from the top
    layer's state after frame ``t``, moved one more step along each slice's flow and
    pooled over V::

        ŷ_{t+1} = D( pool_ν  S_ν h_t(ν) )

    For a flow with a fibre (rotations: N orientations per field) ``readout`` says what
    ``D`` sees:

    - ``"research"`` (default): all ``F·N`` channels of the V-pooled state, decoded by
      plain convolutions — the research model (FERNN.md §4; ≈ 48 M decoder parameters at
      32 fields × C_36). Not equivariant to the static rotation: its convolutions mix
      orientation channels freely.
    - ``"equivariant"``: :class:`EquivariantDecoder`, C_N group convolutions on the
      fields, orientations averaged only at the output.
    - ``"pooled"``: each field max-pooled over its orientations first (an invariant
      ``F``-channel image), then plain convolutions.

    For flows without a fibre (translations) the three are the same decoder. Only the
    ``"equivariant"`` readout commutes with rotations (the others' plain kernels are not
    isotropic). With it, or for translations, moving the state first makes the
    prediction obey the law exactly on the lifted state: an input moved by ``S_{tν̂}``
    moves ``ŷ_{t+1}`` by ``S_{(t+1)ν̂}`` (up to the velocities at the edge of V, lost by
    the pooling). Each prediction is then fed back
    as the next input (detached by default, as in the research code), or the true frame
    with probability ``teacher_forcing`` in training.

    ``refeed_last_frame=True`` reproduces the research code instead: the last observed
    frame is fed a second time as the first decoder input and each prediction is read
    from the un-moved state; this breaks the exact law by one step (FERNN.md §3).

    Args:
        in_channels: channels of a frame.
        hidden_channels, flow, cell, num_layers, kernel_size, nonlinearity, padding_mode,
        transport, dropout: the encoder (see :class:`~fernn.FlowRNN`).
        pool: pooling over V, ``"max"`` (paper), ``"mean"`` or ``"sum"``.
        decoder_layers: number of (3×3 conv + ReLU) blocks before the output conv.
        readout: ``"research"``, ``"equivariant"`` or ``"pooled"`` (see above).
        refeed_last_frame, detach_feedback: see above.
        checkpoint_every: activation checkpointing over time: the encoder keeps its state
            every ``k`` frames, the decoder at the start of groups of predicted frames
            that shrink by one (4, 3, 2, 1 for 10); the frames between, and the readout's
            moved copy of each state, are recomputed in the backward pass. Same outputs
            and gradients.

    Shapes:
        x: ``(B, T_in, C, H, W)``; target (teacher forcing): ``(B, pred_len, C, H, W)``;
        returns ``(B, pred_len, C, H, W)``.
    """

    def __init__(
        self,
        flow: Flow,
        in_channels: int = 1,
        hidden_channels: int = 128,
        cell: str = "rnn",
        num_layers: int = 1,
        kernel_size: int = 3,
        nonlinearity: str | None = None,
        padding_mode: str = "circular",
        transport: str = "flow",
        dropout: float = 0.0,
        pool: str = "max",
        decoder_layers: int = 4,
        refeed_last_frame: bool = False,
        detach_feedback: bool = True,
        checkpoint_every: int = 0,
        readout: str = "research",
    ):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.rnn = FlowRNN(
            in_channels,
            hidden_channels,
            flow,
            cell=cell,
            num_layers=num_layers,
            kernel_size=kernel_size,
            nonlinearity=nonlinearity,
            padding_mode=padding_mode,
            dropout=dropout,
            transport=transport,
            checkpoint_every=checkpoint_every,
        )
        self.pool = VelocityPool(pool)
        self.readout = readout
        self.decoder = _decoder(readout, flow, hidden_channels, in_channels, decoder_layers,
                                padding_mode)
        self.refeed_last_frame = refeed_last_frame
        self.detach_feedback = detach_feedback

    @property
    def flow(self) -> Flow:
        return self.rnn.flow

    def _top(self, state) -> Tensor:
        """The top layer's hidden state ``(B, V, C_h, H, W)`` from a stacked state."""
        # Unstacked rather than indexed: for one layer a view, whose backward copies nothing
        # (indexing's backward writes the gradient into a new stack of zeros).
        return unstack_layers(state[0] if self.rnn.cell == "lstm" else state)[-1]

    def _pooled(self, h: Tensor) -> Tensor:
        """The decoder's input from the top state ``h``: ``(B, C_h·fibre, H, W)`` pooled
        over V (then ``(B, C_h, H, W)``, over orientations, for the pooled readout)."""
        if not self.refeed_last_frame:
            h = self.rnn.layers[-1].transport(h)  # S_ν h_t(ν)
        pooled = self.pool(h)  # over V
        return self.flow.pool_fibre(pooled, "max") if self.readout == "pooled" else pooled

    def _read(self, state) -> Tensor:
        h = self._top(state)  # (B, V, C_h, H, W)
        if self.rnn.checkpoint_every and torch.is_grad_enabled():
            # The max over V keeps its input (a moved copy of the state) for its backward;
            # in memory mode that copy is made again there instead, from h, one batch
            # chunk at a time, so that the backward's temporaries are a chunk's, too.
            from torch.utils.checkpoint import checkpoint

            rows = batch_chunks(h.shape[0], h[:1].nbytes, h.device)
            pooled = torch.cat([checkpoint(self._pooled, part, use_reentrant=False)
                                for part in h.split(rows[0].stop)])
        else:
            pooled = self._pooled(h)
        return self.decoder(pooled)  # (B, C, H, W)

    def forward(
        self,
        x: Tensor,
        pred_len: int,
        target: Tensor | None = None,
        teacher_forcing: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        pred_len = positive_int(pred_len, "pred_len")
        teacher_forcing = unit_interval(teacher_forcing, "teacher_forcing")
        C = self.rnn.in_channels
        check_input(x, self, f"(B, T_in, C={C}, H, W)", channels=C, who="NextStepPredictor")
        if teacher_forcing > 0 and target is None:
            raise ValueError("teacher_forcing > 0 needs the target frames: pass target=")
        if target is not None:
            check_input(target, self, f"(B, pred_len, C={C}, H, W)", name="target",
                        who="NextStepPredictor")
            want = (x.shape[0], pred_len, *x.shape[2:])
            if tuple(target.shape) != want:
                longer = target.shape[1] > pred_len and (
                    target.shape[:1] + target.shape[2:] == x.shape[:1] + x.shape[2:])
                fix = f". Slice it: target[:, :{pred_len}]" if longer else ""
                raise ValueError(
                    f"target must be (B, pred_len={pred_len}, C, H, W) = {want} matching x "
                    f"{tuple(x.shape)}; got {tuple(target.shape)}{fix}"
                )
        _, state = self.rnn(x, return_sequence=False)
        # Teacher-forcing choices are drawn up front, so a recomputed segment sees the same.
        use_truth = [
            self.training and teacher_forcing > 0
            and float(torch.rand((), generator=generator)) < teacher_forcing
            for _ in range(pred_len)
        ]
        lstm = self.rnn.cell == "lstm"

        def decode(first: int, last: int, feed: Tensor, *flat):
            """Predict frames first..last-1; returns (predictions, feed, *state)."""
            st = unflat_state(flat, lstm)
            ys = []
            for k in range(first, last):
                if k > 0 or self.refeed_last_frame:
                    _, st = self.rnn(feed[:, None], st, return_sequence=False)
                y = self._read(st)
                ys.append(y)
                if use_truth[k]:
                    feed = target[:, k]
                else:
                    feed = y.detach() if self.detach_feedback else y
            return (torch.stack(ys, dim=1), feed, *flat_state(st, lstm))

        if self.rnn.checkpoint_every and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            # Only each group's first state is kept through the forward; the backward
            # recomputes a group, keeping its states (each step's readout keeps none: see
            # _read). Groups shrink by one (4, 3, 2, 1 for 10 frames): the later a group,
            # the more kept states are alive while it is recomputed, so every group's
            # backward peaks alike, at about √(2·pred_len) states. Exact.
            pieces, feed, flat, first = [], x[:, -1], flat_state(state, lstm), 0
            for size in _shrinking_groups(pred_len):
                ys, feed, *flat = checkpoint(decode, first, first + size, feed, *flat,
                                             use_reentrant=False)
                pieces.append(ys)
                first += size
            return torch.cat(pieces, dim=1)
        return decode(0, pred_len, x[:, -1], *flat_state(state, lstm))[0]
