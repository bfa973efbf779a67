"""The data of an experiment, common to the tasks: batched generated datasets and the
Lightning data module that hands them out per rank. Each task's own data (digit banks,
KTH clips, ...) lives in its module under :mod:`fernn.experiments.tasks`."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..data import DigitBank, load_digits

__all__ = ["SequenceBatches", "BatchData", "Banks", "load_banks", "VAL_SEED_OFFSET"]

VAL_SEED_OFFSET = 4_000_003


class SequenceBatches(Dataset):
    """Item ``j`` is batch ``j`` of a generated dataset (anything with ``batch(indices)``
    returning a dict and ``set_epoch``): its items ``[j·B, (j+1)·B)`` — of a fresh
    permutation each epoch with ``shuffle`` — generated at once; the last batch may be
    short when ``num_items`` is not a multiple of ``B``. Under DDP each rank takes
    different batches; ``set_epoch`` draws fresh items for a new pass.

    Items: the ``keys`` of the dataset's batch, a tensor for one key, else a dict.
    """

    def __init__(self, dataset, batch_size: int, num_batches: int, *, num_items: int | None = None,
                 keys: tuple[str, ...] = ("frames",), shuffle: bool = False, seed: int = 0):
        num_items = batch_size * num_batches if num_items is None else num_items
        if len(dataset) < num_items or num_items > batch_size * num_batches:
            raise ValueError("the dataset holds fewer items than the batches need")
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.num_items = num_items
        self.keys = keys
        self.shuffle = shuffle
        self.seed = seed
        self._order = None
        self.set_epoch(0)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, j: int):
        start, stop = j * self.batch_size, min((j + 1) * self.batch_size, self.num_items)
        items = range(start, stop) if self._order is None else self._order[start:stop]
        batch = self.dataset.batch(items)
        return batch[self.keys[0]] if len(self.keys) == 1 else {k: batch[k] for k in self.keys}

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        if self.shuffle:  # a pure function of (seed, epoch): survives resume
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = torch.randperm(len(self.dataset), generator=generator)


class BatchData(L.LightningDataModule):
    """Train/val :class:`SequenceBatches` of a task: a task's subclass implements
    ``setup`` to fill ``train_set``, ``val_set`` and ``steps_per_epoch``; ``batch_size``
    is per device. ``data``: what the task's ``load_data`` returned."""

    def __init__(self, cfg, data):
        super().__init__()
        self.cfg = cfg
        self.data = data

    @property
    def world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    def _loader(self, dataset) -> DataLoader:
        # Rank r takes items r, r + W, ... in order, so W ranks with batch B see exactly the
        # sequences of one process with batch W·B. (Lightning's own distributed sampler
        # would shuffle training items; it is switched off in the Trainer.)
        trainer = self.trainer
        sampler = None
        if trainer is not None and trainer.world_size > 1:
            sampler = DistributedSampler(dataset, num_replicas=trainer.world_size,
                                         rank=trainer.global_rank, shuffle=False)
        return DataLoader(dataset, batch_size=None, shuffle=False, sampler=sampler)

    def train_dataloader(self):
        return self._loader(self.train_set)

    def val_dataloader(self):
        return self._loader(self.val_set)


@dataclass(frozen=True)
class Banks:
    """The train / val / test digit banks of a digit-based task."""

    train: DigitBank
    val: DigitBank
    test: DigitBank

    @property
    def source(self) -> str:
        return self.train.source


def load_banks(options) -> Banks:
    """The train/val/test digit banks of task options with ``digits``, ``data_root`` and
    ``digits_fallback`` (one announcement of a fallback for the three parts)."""
    with warnings.catch_warnings():
        banks = {}
        for index, part in enumerate(("train", "val", "test")):
            if index:
                warnings.simplefilter("ignore")
            banks[part] = load_digits(options.digits, part, root=options.data_root,
                                      fallback=options.digits_fallback)
    return Banks(**banks)
