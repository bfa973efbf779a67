"""Counter-based random numbers: draw ``k`` of item ``i`` is a pure function of (seed, i, k).

Batched generation draws the numbers of many items at once and still gives each item
exactly what it would get alone, whatever batch it is in and in whatever order; no
global random state is touched. The hash is SplitMix64 (Steele, Lea & Flood 2014) on a
key that mixes seed, item and stream.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["hashed_uniform", "GeneratedItems"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_ITEM = np.uint64(0xD1B54A32D192ED03)  # odd constants that spread item and stream
_STREAM = np.uint64(0xAEF17502108EF2D9)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def hashed_uniform(seed: int, items: Tensor, streams: int) -> Tensor:
    """Uniform float64 numbers in [0, 1): ``out[j, k]`` depends only on (seed, items[j], k).

    Shapes: items ``(N,)`` integer → ``(N, streams)``.
    """
    idx = np.asarray(items.detach().cpu().numpy(), dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        key = _splitmix64(np.full(1, seed, dtype=np.int64).astype(np.uint64))
        k = np.arange(streams, dtype=np.uint64)
        z = key + idx[:, None] * _ITEM + (k[None, :] + np.uint64(1)) * _STREAM
        z = _splitmix64(_splitmix64(z))
    return torch.from_numpy((z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53)))


class GeneratedItems(Dataset):
    """Base of the generated datasets (Flowing MNIST, MNIST World): ``num_sequences``
    items, each a pure function of (seed, epoch, index) drawn by :meth:`item_keys`; a
    digit bank ``images`` kept once per device; ``ds[i]`` is item i of :meth:`batch`.
    Subclasses set ``images``, ``seed``, ``num_sequences`` and call ``_start()``."""

    def _start(self) -> None:
        self.epoch = 0
        self._on_device: dict = {}

    def __len__(self) -> int:
        return self.num_sequences

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh items for a new pass: items become f(seed, epoch, i)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        item = self.batch([index])
        return {key: value[0] for key, value in item.items()}

    def batch(self, indices, device=None) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def _bank(self, device: torch.device) -> Tensor:
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = self.images.to(device)
        return self._on_device[key]

    def item_keys(self, indices) -> Tensor:
        """The hash keys of items ``indices`` in this epoch, ``(N,)``; indices outside
        ``[0, len)`` raise ``IndexError``."""
        idx = torch.as_tensor(indices, dtype=torch.long).flatten()
        if idx.numel() and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices must lie in [0, {len(self)}); got {idx.tolist()[:8]}")
        return (self.epoch << 32) + idx
