"""Flowing MNIST: digits moving under flows, generated exactly, deterministically, fast.

Each sequence holds ``num_digits`` digits, each with its own velocity drawn from a set,
placed at a uniform start position and moved by the flow object's own action (the same
code that moves hidden states); frames are the sum of the digits clipped to [0, 1]. On
the torus (default) digits wrap around; with ``bounded=True`` they start inside the
frame and are lost as they leave it.

Item ``i`` is a pure function of ``(seed, epoch, i)`` (counter-based random numbers, no
global state), and :meth:`FlowingMNIST.batch` draws a whole batch at once — no Python
loop over frames, digits or sequences — giving the same items as indexing one by one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .._flows import Flow, TranslationFlow2D
from .._torus import roll2d
from ._random import GeneratedItems, hashed_uniform
from ._sources import DigitBank

__all__ = ["FlowingMNIST"]

_STREAMS = 5  # random numbers per digit: bank index, velocity, start row, start column, pose


class FlowingMNIST(GeneratedItems):
    """Sequences of digits moving under a flow.

    Args:
        images: a digit bank ``(N, h, w)``, uint8 (0-255) or float in [0, 1]: MNIST, the
            offline font digits, a :class:`DigitBank`, or your own.
        flow: the flow that moves the digits (e.g. ``TranslationFlow2D(max_speed=2)``).
        num_digits: digits per sequence.
        seq_len: frames per sequence.
        size: frame height and width.
        seed: changes every sequence.
        labels: ``(N,)`` digit labels (taken from a :class:`DigitBank`; else -1).
        velocities: the set each digit's velocity is drawn from (default: the flow's V).
            One velocity, e.g. ``[(2, -1)]``, gives every digit that velocity
            (velocity-generalisation grids). Need not lie in the flow's V.
        bounded: digits start inside the frame and leave it (no wrap-around; translations).
        centred: every digit at the frame centre (flows with a centre: rotations), as the
            research code's Rotating MNIST makes it; then a digit's rotation about its
            own centre is a rotation of the frame — the flow a rotation FERNN is
            equivariant to. Default: a uniform random position on the torus.

    With a :class:`~fernn.RotationFlow2D` (Rotating MNIST) each digit turns about its own
    centre from a uniform random angle, by its own angular velocity (bilinear
    interpolation), at a uniform random position on the torus (``centred=True``: at the
    frame centre).
        num_sequences: the dataset's length (default: one per digit of the bank).

    Items (``ds[i]``): ``"frames"`` float32 ``(T, 1, H, W)`` in [0, 1]; ``"velocities"``
    ``(num_digits, 2)`` in the flow's units (rows ``(v_y, v_x)`` for translations);
    ``"labels"`` ``(num_digits,)``. :meth:`batch` returns the same keys batched.
    """

    def __init__(
        self,
        images: Tensor | np.ndarray | DigitBank,
        flow: Flow,
        num_digits: int = 2,
        seq_len: int = 20,
        size: int = 28,
        seed: int = 0,
        labels: Tensor | None = None,
        velocities: Sequence | None = None,
        bounded: bool = False,
        num_sequences: int | None = None,
        centred: bool = False,
    ):
        if isinstance(images, DigitBank):
            labels = images.labels if labels is None else labels
            images = images.images
        images = torch.as_tensor(images)
        if images.dim() != 3 or images.shape[0] == 0:
            raise ValueError(f"images must be a non-empty digit bank (N, h, w); got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        elif images.dtype.is_floating_point:
            if images.min() < 0 or images.max() > 1:
                raise ValueError("float digit images must lie in [0, 1]; scale uint8 images by 1/255")
            images = images.float()
        else:
            raise ValueError(f"images must be uint8 or float; got {images.dtype}")
        if not isinstance(flow, Flow):
            raise TypeError(f"flow must be a fernn Flow, got {flow!r}")
        h, w = images.shape[1:]
        if h > size or w > size:
            raise ValueError(f"digits of {h}×{w} do not fit a {size}×{size} frame")
        for name, value in (("num_digits", num_digits), ("seq_len", seq_len)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if labels is not None:
            labels = torch.as_tensor(labels).long()
            if labels.shape != (len(images),):
                raise ValueError(f"labels must be ({len(images)},); got {tuple(labels.shape)}")
        if velocities is None:
            velocity_set = flow.velocities
        else:
            velocity_set = torch.stack(
                [torch.as_tensor(flow._key(v)) for v in velocities]
            )  # validated by the flow: (K, ...) rows in the flow's units
        if bounded and not isinstance(flow, TranslationFlow2D):
            raise ValueError("bounded=True is defined for translation flows")
        if centred and isinstance(flow, TranslationFlow2D):
            raise ValueError("centred=True is defined for flows that act about the frame "
                             "centre (rotations); translations place digits at random")
        self.images = images  # (N, h, w) float in [0, 1]
        self.labels = labels
        self.flow = flow
        self.num_digits = num_digits
        self.seq_len = seq_len
        self.size = size
        self.seed = int(seed)
        self.velocity_set = velocity_set
        self.bounded = bounded
        self.centred = bool(centred)
        self.num_sequences = len(images) if num_sequences is None else int(num_sequences)
        self._start()

    def draw(self, indices) -> dict:
        """The random choices of each sequence (bank index, velocity, start position)."""
        keys = self.item_keys(indices)
        B, D = keys.numel(), self.num_digits
        u = hashed_uniform(self.seed, keys, _STREAMS * D).view(B, D, _STREAMS)
        n_bank, n_vel = len(self.images), len(self.velocity_set)
        h, w = self.images.shape[1:]
        span_y, span_x = (self.size - h + 1, self.size - w + 1) if self.bounded else (self.size,) * 2
        return {
            "digit": (u[..., 0] * n_bank).long().clamp(max=n_bank - 1),  # (B, D)
            "velocity": (u[..., 1] * n_vel).long().clamp(max=n_vel - 1),  # (B, D) into the set
            "position": torch.stack(
                [(u[..., 2] * span_y).long().clamp(max=span_y - 1),
                 (u[..., 3] * span_x).long().clamp(max=span_x - 1)], -1
            ),  # (B, D, 2) top-left corner
            "pose": u[..., 4],  # (B, D) uniform: the flow's random starting pose (rotation angle)
        }

    def batch(self, indices, device: torch.device | str | None = None) -> dict:
        """Generate the sequences ``indices`` at once, on ``device`` (default CPU)."""
        device = torch.device(device or "cpu")
        choice = self.draw(indices)
        B, D = choice["digit"].shape
        T, S = self.seq_len, self.size
        bank = self._bank(device)
        h, w = bank.shape[1:]
        velocities = self.velocity_set[choice["velocity"]]  # (B, D, ...) in the flow's units
        canvas = bank.new_zeros(B * D, 1, S, S)
        canvas[:, 0, :h, :w] = bank[choice["digit"].flatten().to(device)]
        position = choice["position"].view(B * D, 1, 2).to(device)
        if self.centred:
            position = torch.tensor([(S - h) // 2, (S - w) // 2], device=device).expand_as(position)
        if isinstance(self.flow, TranslationFlow2D):
            # Translations commute: place each digit (cheap), then move it along its path.
            placed = roll2d(canvas, position)
            paths = self.flow.trajectory(
                placed,
                velocities.view(B * D, 2).to(device),
                T,
                padding_mode="zeros" if self.bounded else "circular",
            )  # (B·D, T, 1, S, S)
        else:
            # Other flows act about the frame centre (a rotating digit turns about its own
            # centre): centre the digit, give it a random starting pose, move, then place.
            centre = torch.tensor([(S - h) // 2, (S - w) // 2], device=device)
            centred = roll2d(canvas, centre.view(1, 1, 2))
            posed = self.flow.random_pose(centred, choice["pose"].flatten().to(device))
            paths = self.flow.trajectory(posed, velocities.view(B * D, -1).to(device), T)
            offset = (position - centre).view(B * D, 1, 1, 2)
            paths = roll2d(paths, offset)
        frames = paths.view(B, D, T, 1, S, S).sum(1).clamp_(0.0, 1.0)  # (B, T, 1, S, S)
        if self.labels is not None:
            labels = self.labels[choice["digit"]]
        else:
            labels = torch.full((B, D), -1, dtype=torch.long)
        return {
            "frames": frames,
            "velocities": velocities.to(device),
            "labels": labels.to(device),
        }
