"""Sequence classification: FlowRNN classifiers and the 3D-CNN baseline (FERNN.md §5)."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from .._checks import check_input, positive_int
from .._flows import Flow
from .._rnn import FlowRNN, VelocityPool
from .._torus import Conv2d

__all__ = ["SequenceClassifier", "CNN3DClassifier"]


def _conv_bn_relu(cin: int, cout: int, k: int, padding_mode: str) -> list[nn.Module]:
    return [
        Conv2d(cin, cout, k, padding=k // 2, padding_mode=padding_mode, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


class SequenceClassifier(nn.Module):
    """Frame encoder → FlowRNN → max over V at the last step → global average pool → linear.

    The encoder (first conv 5×5, then 3×3, each with BatchNorm and ReLU) runs on every
    frame; with circular padding it commutes with translations of the torus, so the
    logits are invariant to the input flow up to the edge of V (and exactly so in eval
    mode for V-interior velocities of the pooled state, before the spatial pooling).

    Shapes: x ``(B, T, C, H, W)`` → logits ``(B, num_classes)``.
    """

    def __init__(
        self,
        flow: Flow,
        in_channels: int = 1,
        num_classes: int = 6,
        hidden_channels: int = 128,
        encoder_channels: Sequence[int] = (32, 64, 128),
        cell: str = "rnn",
        num_layers: int = 1,
        kernel_size: int = 3,
        nonlinearity: str | None = "tanh",
        padding_mode: str = "circular",
        transport: str = "flow",
        dropout: float = 0.0,
        pool: str = "max",
    ):
        super().__init__()
        in_channels = positive_int(in_channels, "in_channels")
        num_classes = positive_int(num_classes, "num_classes")
        if isinstance(encoder_channels, (str, bytes)) or not isinstance(encoder_channels, Sequence):
            raise TypeError(f"encoder_channels must be a list of positive integers (one per "
                            f"encoder layer, may be empty), got {encoder_channels!r}")
        encoder_channels = [positive_int(c, f"encoder_channels[{i}]")
                            for i, c in enumerate(encoder_channels)]
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(encoder_channels):
            layers += _conv_bn_relu(cin, cout, 5 if i == 0 else 3, padding_mode)
            cin = cout
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
        )
        self.pool = VelocityPool(pool)
        self.head = nn.Linear(hidden_channels, num_classes)

    @property
    def flow(self) -> Flow:
        return self.rnn.flow

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self, "(B, T, C, H, W)", channels=self.in_channels)
        B, T = x.shape[:2]
        z = self.encoder(x.flatten(0, 1))  # '(b t) c h w'
        z = z.view(B, T, *z.shape[1:])  # (B, T, C_e, H, W)
        out, _ = self.rnn(z)  # (B, T, V, C_h, H, W)
        last = self.flow.pool_fibre(self.pool(out[:, -1]))  # (B, C_h, H, W)
        return self.head(last.mean(dim=(-2, -1)))  # (B, num_classes)


class CNN3DClassifier(nn.Module):
    """The 3D-CNN baseline: three stages of 3×3×3 conv + BatchNorm + ReLU, widths
    ``base, 2·base, 4·base``; the first halves time, the later two halve space; global
    space-time average pool, linear head.

    Shapes: x ``(B, T, C, H, W)`` → logits ``(B, num_classes)``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 6, base_channels: int = 32):
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
