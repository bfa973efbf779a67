"""Sequence classification: FlowRNN classifiers and the 3D-CNN baseline (FERNN.md §5)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .._cells import _GATES
from .._checks import check_input, positive_int
from .._flows import Flow
from .._rnn import FlowRNN, VelocityPool
from .._torus import Conv2d

__all__ = ["SequenceClassifier", "CNN3DClassifier", "ENCODER_BATCH_STATS"]

ENCODER_BATCH_STATS = ("per_frame", "all_frames")


def _conv_bn_relu(cin: int, cout: int, k: int, padding_mode: str) -> list[nn.Module]:
    return [
        Conv2d(cin, cout, k, padding=k // 2, padding_mode=padding_mode, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


class SequenceClassifier(nn.Module):
    """Frame encoder → FlowRNN → max over V at the last step → global average pool → linear.

    The encoder (first conv 5×5, then 3×3, each without bias and followed by BatchNorm and
    ReLU) runs on every frame. By default it is the research KTH model (FERNN.md §5): the
    encoder pads with zeros and its output **is** the recurrence's input term, with no
    further input convolution::

        h_t(ν) = tanh( Enc(f_t) + W ⋆ S_ν h_{t-1}(ν) ),   W circular, no bias
        logits = Linear( mean_{x,y} max_ν h_T(ν) )

    — 241,638 parameters at ``hidden_channels=128`` for FERNN-V2^T and the G-RNN alike,
    242,263 for the G-RNN+ (``transport="learned"``, r = 2). The encoder's zero padding
    breaks translation equivariance at the frame border, so the logits are only nearly
    invariant to the input flow.

    ``encoder_padding="circular"`` makes the encoder commute with translations of the
    torus: then the encoder + FlowRNN features obey the law of FERNN.md §3 exactly (eval
    mode, BatchNorm frozen) and the logits are invariant for V-interior flows.
    ``input_conv=True`` adds the FlowRNN's own 3×3 input convolution after the encoder
    (fernn's earlier default: ``encoder_padding="circular", input_conv=True``, 389,094
    parameters at hidden 128, V2).

    Args:
        flow: the velocity set V (``TranslationFlow2D(max_speed=0)``: a G-RNN).
        in_channels, num_classes: frame channels, classes.
        hidden_channels: channels of each velocity slice of the hidden state.
        encoder_channels: widths of the encoder's convolutions (5×5, then 3×3 each);
            default ``(32, 64, G·hidden_channels)`` with G = 1 for ``rnn`` (3 ``gru``, 4
            ``lstm``): the research encoder, whose last width is the hidden width.
        cell, num_layers, kernel_size, nonlinearity, transport, dropout: of the
            :class:`~fernn.FlowRNN`.
        padding_mode: padding of the recurrence (and of its input convolution):
            ``"circular"`` as in the research model.
        encoder_padding: padding of the encoder: ``"zeros"`` (research model) or
            ``"circular"`` (exactly equivariant).
        input_conv: the FlowRNN's first-layer input convolution U. ``None`` (default):
            none, the encoder's output is the input term (then the last encoder width
            must be ``hidden_channels``, times 3 or 4 for ``gru``/``lstm``) — except for a
            flow with a fibre (rotations), whose first layer needs its lifting convolution.
        encoder_batch_stats: where the encoder's BatchNorm takes its training statistics:
            ``"per_frame"`` (default, the research model, whose encoder runs inside the
            time loop): over the B clips at each frame, the running statistics updated
            once per frame; ``"all_frames"``: over all B·T frames at once, updated once
            per batch. Eval mode (running statistics) gives the same outputs for both.
        pool: how V is pooled at the last step (``"max"``).

    Shapes: x ``(B, T, C, H, W)`` → logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        flow: Flow,
        in_channels: int = 1,
        num_classes: int = 6,
        hidden_channels: int = 128,
        encoder_channels: Sequence[int] | None = None,
        cell: str = "rnn",
        num_layers: int = 1,
        kernel_size: int = 3,
        nonlinearity: str | None = "tanh",
        padding_mode: str = "circular",
        encoder_padding: str = "zeros",
        input_conv: bool | None = None,
        transport: str = "flow",
        dropout: float = 0.0,
        pool: str = "max",
        encoder_batch_stats: str = "per_frame",
    ):
        super().__init__()
        in_channels = positive_int(in_channels, "in_channels")
        num_classes = positive_int(num_classes, "num_classes")
        self.in_channels = in_channels
        if encoder_batch_stats not in ENCODER_BATCH_STATS:
            raise ValueError(f"encoder_batch_stats must be one of {ENCODER_BATCH_STATS}; got "
                             f"{encoder_batch_stats!r}")
        self.encoder_batch_stats = encoder_batch_stats
        if encoder_padding not in ("zeros", "circular"):
            raise ValueError(
                f"encoder_padding must be 'zeros' (the research model) or 'circular' (exactly "
                f"equivariant); got {encoder_padding!r}"
            )
        if input_conv is None:
            input_conv = getattr(flow, "fibre", 1) != 1
        gates = _GATES.get(cell, 1)  # an unknown cell is named by FlowRNN below
        if encoder_channels is None:
            encoder_channels = (32, 64, gates * positive_int(hidden_channels, "hidden_channels"))
        if isinstance(encoder_channels, (str, bytes)) or not isinstance(encoder_channels, Sequence):
            raise TypeError(f"encoder_channels must be a list of positive integers (one per "
                            f"encoder layer, may be empty), got {encoder_channels!r}")
        encoder_channels = [positive_int(c, f"encoder_channels[{i}]")
                            for i, c in enumerate(encoder_channels)]
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(encoder_channels):
            layers += _conv_bn_relu(cin, cout, 5 if i == 0 else 3, encoder_padding)
            cin = cout
        if not input_conv:
            if cin != gates * hidden_channels:
                raise ValueError(
                    f"without an input convolution the encoder's output is the input term, so "
                    f"the last of encoder_channels={tuple(encoder_channels)} (in_channels="
                    f"{in_channels} if none) must be {gates}·hidden_channels = "
                    f"{gates * hidden_channels}; got {cin} (match them, or give input_conv=True)"
                )
        self.encoder = nn.Sequential(*layers)
        self.rnn = FlowRNN(
            cin,
            hidden_channels,
            flow,
            cell=cell,
            num_layers=num_layers,
            kernel_size=kernel_size,
            nonlinearity=nonlinearity,
            padding_mode=padding_mode,
            dropout=dropout,
            transport=transport,
            input_conv=input_conv,
        )
        self.pool = VelocityPool(pool)
        self.head = nn.Linear(hidden_channels, num_classes)

    @property
    def flow(self) -> Flow:
        return self.rnn.flow

    def _encode(self, x: Tensor) -> Tensor:
        """The encoder on every frame: ``(B, T, C, H, W)`` → ``(B, T, C_e, H, W)``."""
        check_input(x, self, "(B, T, C, H, W)", channels=self.in_channels)
        B, T = x.shape[:2]
        if self.training and self.encoder_batch_stats == "per_frame":
            # BatchNorm's statistics over the clips of each frame, as a per-frame loop does.
            return torch.stack([self.encoder(x[:, t]) for t in range(T)], dim=1)
        z = self.encoder(x.flatten(0, 1))  # '(b t) c h w'
        return z.view(B, T, *z.shape[1:])

    def features(self, x: Tensor) -> Tensor:
        """The top layer's hidden state after each frame (encoder, then the FlowRNN).

        Shapes: x ``(B, T, C, H, W)`` → ``(B, T, V, C_h, H, W)``.
        """
        return self.rnn(self._encode(x))[0]

    def forward(self, x: Tensor) -> Tensor:
        _, state = self.rnn(self._encode(x), return_sequence=False)  # (L, B, V, C_h, H, W)
        last = state[0] if self.rnn.cell == "lstm" else state  # h of an lstm's (h, c)
        last = self.flow.pool_fibre(self.pool(last[-1]))  # top layer, pooled: (B, C_h, H, W)
        return self.head(last.mean(dim=(-2, -1)))  # (B, num_classes)


class CNN3DClassifier(nn.Module):
    """The 3D-CNN baseline of FERNN.md §5: five blocks of 3×3×3 conv (no bias, zero
    padding 1) + BatchNorm3d + ReLU, widths ``b`` (time stride 2) → ``2b`` (space stride 2)
    → ``2b`` → ``4b`` (space stride 2) → ``4b``; global space-time average pool, linear
    head. ``base_channels=16`` (default) is the research model: 208,598 parameters.

    Shapes: x ``(B, T, C, H, W)`` → logits ``(B, num_classes)``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 6, base_channels: int = 16):
        super().__init__()
        in_channels = positive_int(in_channels, "in_channels")
        num_classes = positive_int(num_classes, "num_classes")
        base_channels = positive_int(base_channels, "base_channels")
        self.in_channels = in_channels

        def block(cin: int, cout: int, stride: tuple[int, int, int]) -> list[nn.Module]:
            return [
                nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm3d(cout),
                nn.ReLU(),
            ]

        b = base_channels
        self.features = nn.Sequential(
            *block(in_channels, b, (2, 1, 1)),
            *block(b, 2 * b, (1, 2, 2)),
            *block(2 * b, 2 * b, (1, 1, 1)),
            *block(2 * b, 4 * b, (1, 2, 2)),
            *block(4 * b, 4 * b, (1, 1, 1)),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * b, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self, "(B, T, C, H, W)", channels=self.in_channels)
        return self.head(self.features(x.transpose(1, 2)))  # 'b t c h w -> b c t h w'
