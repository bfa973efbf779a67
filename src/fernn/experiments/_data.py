"""Flowing MNIST datasets for an experiment: digit banks, batched datasets, eval sets."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from .._flows import RotationFlow2D, TranslationFlow2D
from ..data import DigitBank, FlowingMNIST, load_digits
from ._config import Config

__all__ = ["SequenceBatches", "Banks", "load_banks", "flowing"]


class SequenceBatches(Dataset):
    """Item ``j`` is batch ``j`` of a :class:`FlowingMNIST`: its sequences ``[j·B, (j+1)·B)``,
    generated at once. Under DDP each rank takes different items (so different sequences);
    ``set_epoch`` draws fresh sequences for a new pass.

    Items: frames ``(B, T, 1, H, W)``.
    """

    def __init__(self, dataset: FlowingMNIST, batch_size: int, num_batches: int):
        if dataset.num_sequences < batch_size * num_batches:
            raise ValueError("the dataset holds fewer sequences than batch_size × num_batches")
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_batches = num_batches

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, j: int) -> torch.Tensor:
        start = j * self.batch_size
        return self.dataset.batch(range(start, start + self.batch_size))["frames"]

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


@dataclass(frozen=True)
class Banks:
    train: DigitBank
    val: DigitBank
    test: DigitBank

    @property
    def source(self) -> str:
        return self.train.source


def load_banks(cfg: Config) -> Banks:
    """The train/val/test digit banks of ``cfg.digits`` (with the configured fallback)."""
    with warnings.catch_warnings():
        # One announcement for the three parts, made by the first.
        banks = {}
        for index, part in enumerate(("train", "val", "test")):
            if index:
                warnings.simplefilter("ignore")
            banks[part] = load_digits(
                cfg.digits, part, root=cfg.data_root, fallback=cfg.digits_fallback
            )
    return Banks(**banks)


def flowing(
    cfg: Config,
    bank: DigitBank,
    *,
    seed: int,
    seq_len: int,
    num_sequences: int,
    velocities=None,
    max_speed: int | None = None,
) -> FlowingMNIST:
    """A Flowing (or Rotating) MNIST set of ``cfg``'s geometry; velocities from the config's
    training set by default."""
    if cfg.flow == "rotation":
        flow = RotationFlow2D(cfg.data_angular_velocities, order=cfg.order)
    else:
        flow = TranslationFlow2D(max_speed=cfg.data_max_speed if max_speed is None else max_speed)
    return FlowingMNIST(
        bank,
        flow,
        num_digits=cfg.num_digits,
        seq_len=seq_len,
        size=cfg.size,
        seed=seed,
        velocities=velocities,
        num_sequences=num_sequences,
    )
