"""An offline digit source: the digits 0-9 rendered from the font bundled with Pillow,
each sample under its own random affine jitter (rotation, scale, shear, translation) and
stroke width. For demos and tests on machines with no MNIST and no network; the models
learn the same kind of task, but the numbers are not MNIST's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._random import hashed_uniform

__all__ = ["render_font_digits"]

_STROKES = (0, 1)  # stroke widths of the base glyphs


def _base_glyphs(size: int) -> Tensor:
    """(len(_STROKES), 10, size, size) float in [0, 1]: each digit centred by its ink box."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=round(size * 0.72))
    glyphs = torch.zeros(len(_STROKES), 10, size, size)
    for s, stroke in enumerate(_STROKES):
        for digit in range(10):
            text = str(digit)
            left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
            image = Image.new("L", (size, size), 0)
            draw = ImageDraw.Draw(image)
            x = (size - (right - left)) / 2 - left
            y = (size - (bottom - top)) / 2 - top
            draw.text((x, y), text, fill=255, font=font, stroke_width=stroke, stroke_fill=255)
            glyphs[s, digit] = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(
                size, size
            ) / 255.0
    return glyphs


def render_font_digits(
    count: int, size: int = 28, seed: int = 0, first: int = 0
) -> tuple[Tensor, Tensor]:
    """``count`` jittered digits: ``uint8 (count, size, size)`` images, ``int64 (count,)`` labels.

    Sample ``i`` is a pure function of ``(seed, first + i)``, so disjoint index ranges or
    different seeds give disjoint, reproducible sets.
    """
    glyphs = _base_glyphs(size)  # (S, 10, size, size)
    u = hashed_uniform(seed, torch.arange(first, first + count), 7).float()  # (N, 7)
    labels = (u[:, 0] * 10).long().clamp(max=9)
    stroke = (u[:, 1] * len(_STROKES)).long().clamp(max=len(_STROKES) - 1)
    angle = (u[:, 2] - 0.5) * math.radians(30)  # ±15°
    scale = 0.85 + 0.3 * u[:, 3]
    shear = (u[:, 4] - 0.5) * 0.4
    shift = (u[:, 5:7] - 0.5) * (4.0 / size)  # ±2 px in normalised coordinates
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output -> input sampling map: rotate, shear and scale about the centre, then translate.
    theta = torch.stack(
        [
            torch.stack([cos / scale, (-sin + shear * cos) / scale, shift[:, 0]], 1),
            torch.stack([sin / scale, (cos + shear * sin) / scale, shift[:, 1]], 1),
        ],
        1,
    )  # (N, 2, 3)
    base = glyphs[stroke, labels][:, None]  # (N, 1, size, size)
    grid = F.affine_grid(theta, list(base.shape), align_corners=False)
    images = F.grid_sample(base, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (images[:, 0] * 255).round().clamp(0, 255).to(torch.uint8), labels
