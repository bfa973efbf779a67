"""Digit banks: where the digits of Flowing MNIST come from, split into train/val/test.

Sources (chosen explicitly; nothing is substituted silently):

- ``"mnist"``: the MNIST train split cut 90/10 into train (54000) and val (6000) by a fixed
  permutation, and the test split for test — the paper's protocol.
- ``"mnist-test-split"``: only the official *test* split (10000), carved into disjoint
  train (8000), val (1000) and test (1000) sets by a fixed permutation. For machines that
  hold only that split (small-scale runs); say so when reporting numbers.
- ``"font"``: digits rendered offline (:func:`render_font_digits`), 10000/2000/2000.

``fallback="font"`` lets a caller accept the font digits when MNIST cannot be found or
downloaded; a warning then says so, and :attr:`DigitBank.source` records what was used.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from ._font_digits import render_font_digits
from ._mnist import load_mnist

__all__ = ["DigitBank", "load_digits", "DIGIT_SOURCES"]

DIGIT_SOURCES = ("mnist", "mnist-test-split", "font")
PARTS = ("train", "val", "test")
_CARVE_SEED = 20250714  # fixed permutation of the carved splits
_TEST_SPLIT_CARVE = {"train": (0, 8000), "val": (8000, 9000), "test": (9000, 10000)}
_FONT_SIZES = {"train": 10000, "val": 2000, "test": 2000}


@dataclass(frozen=True)
class DigitBank:
    """Digit images ``(N, h, w)`` (uint8 or float), labels ``(N,)``, and where they came from."""

    images: Tensor
    labels: Tensor
    source: str
    part: str

    def __len__(self) -> int:
        return len(self.images)


def _permuted(n: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(_CARVE_SEED))


def _from_mnist(source: str, part: str, root, download: bool) -> DigitBank:
    if source == "mnist":
        if part == "test":
            images, labels = load_mnist(root, "test", download=download)
        else:
            images, labels = load_mnist(root, "train", download=download)
            order = _permuted(len(images))
            cut = len(images) * 9 // 10
            keep = order[:cut] if part == "train" else order[cut:]
            images, labels = images[keep], labels[keep]
    else:
        images, labels = load_mnist(root, "test", download=download)
        start, stop = _TEST_SPLIT_CARVE[part]
        keep = _permuted(len(images))[start:stop]
        images, labels = images[keep], labels[keep]
    return DigitBank(images, labels, source, part)


def load_digits(
    source: str = "mnist",
    part: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = True,
    fallback: str | None = None,
) -> DigitBank:
    """Load the ``part`` (``"train"``, ``"val"``, ``"test"``) of a digit ``source``.

    Args:
        source: one of :data:`DIGIT_SOURCES` (see the module docstring).
        root, download: where MNIST is found and whether it may be downloaded
            (see :func:`load_mnist`).
        fallback: ``"font"`` to use the offline digits, with a warning, when MNIST is
            unavailable; ``None`` (default) to raise instead.
    """
    if source not in DIGIT_SOURCES:
        raise ValueError(f"digit source must be one of {DIGIT_SOURCES}, got {source!r}")
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    if fallback not in (None, "font"):
        raise ValueError(f"fallback must be None or 'font', got {fallback!r}")
    if source == "font":
        first = {"train": 0, "val": 10**6, "test": 2 * 10**6}[part]  # disjoint index ranges
        images, labels = render_font_digits(_FONT_SIZES[part], first=first)
        return DigitBank(images, labels, "font", part)
    try:
        return _from_mnist(source, part, root, download)
    except FileNotFoundError as exc:
        if fallback is None:
            raise
        warnings.warn(
            f"MNIST is unavailable ({str(exc).splitlines()[0]}); using the offline font "
            "digits instead. Numbers from these runs are not MNIST numbers.",
            stacklevel=2,
        )
        return load_digits("font", part)
