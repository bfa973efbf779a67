"""The data of an experiment: batched datasets, Lightning data modules, Flowing MNIST digit
banks and KTH clips."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .._flows import RotationFlow2D, TranslationFlow2D
from ..data import DigitBank, FlowingMNIST, KTHClips, KTHSequences, load_digits, load_kth
from ._config import Config

__all__ = ["SequenceBatches", "BatchData", "FlowingMNISTData", "KTHData", "Banks", "load_banks",
           "flowing", "kth_clips", "load_task_data", "describe_data", "VAL_SEED_OFFSET"]

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
    """Train/val :class:`SequenceBatches` of a task (``setup`` fills ``train_set``,
    ``val_set`` and ``steps_per_epoch``); ``batch_size`` is per device."""

    def __init__(self, cfg: Config, data):
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


class FlowingMNISTData(BatchData):
    """Train/val batches of Flowing (or Rotating) MNIST from :class:`Banks`."""

    def setup(self, stage=None):
        cfg, B, world, banks = self.cfg, self.cfg.batch_size, self.world_size, self.data
        steps = cfg.steps_per_epoch or max(1, len(banks.train) // (B * world))
        seq_len = cfg.input_frames + cfg.predict_frames
        self.steps_per_epoch = steps
        self.train_set = SequenceBatches(
            flowing(cfg, banks.train, seed=cfg.seed, seq_len=seq_len,
                    num_sequences=steps * world * B),
            B, steps * world,
        )
        n_val = -(-cfg.val_sequences // B)
        self.val_set = SequenceBatches(
            flowing(cfg, banks.val, seed=cfg.seed + VAL_SEED_OFFSET, seq_len=seq_len,
                    num_sequences=n_val * B),
            B, n_val,
        )


def kth_clips(cfg: Config, sequences: KTHSequences, *, train: bool, seed: int,
              max_speed: int | None = None) -> KTHClips:
    """KTH clips of ``cfg``'s geometry; camera speeds from the config's training range by
    default."""
    return KTHClips(sequences, clip_frames=cfg.clip_frames, frame_step=cfg.frame_step,
                    max_speed=cfg.data_max_speed if max_speed is None else max_speed,
                    train=train, flip=cfg.flip, seed=seed)


class KTHData(BatchData):
    """Train/val batches of KTH clips (``data``: the loaded :class:`KTHSequences`)."""

    def setup(self, stage=None):
        cfg, B, world = self.cfg, self.cfg.batch_size, self.world_size
        train = kth_clips(cfg, self.data.split("train"), train=True, seed=cfg.seed)
        steps = cfg.steps_per_epoch or max(1, len(train) // (B * world))
        self.steps_per_epoch = steps
        if steps * world * B > len(train):  # more steps than one pass: items recur
            raise ValueError(f"steps_per_epoch={steps} needs {steps * world * B} training clips "
                             f"per epoch; the KTH train split holds {len(train)} sequences")
        self.train_set = SequenceBatches(train, B, steps * world, keys=("frames", "labels"),
                                         shuffle=True, seed=cfg.seed)
        val = kth_clips(cfg, self.data.split("val"), train=False,
                        seed=cfg.seed + VAL_SEED_OFFSET)
        self.val_set = SequenceBatches(val, B, -(-len(val) // B), num_items=len(val),
                                       keys=("frames", "labels"))


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


def load_task_data(cfg: Config, progress: bool = True):
    """The data of ``cfg.task``: digit :class:`Banks`, or the :class:`KTHSequences`."""
    if cfg.task == "kth":
        return load_kth(cfg.kth_root, size=cfg.size, progress=progress)
    return load_banks(cfg)


def describe_data(cfg: Config, data) -> str:
    if cfg.task == "kth":
        return (f"KTH {cfg.size}×{cfg.size}, {len(data)} sequences "
                f"({len(data.split('train'))} train / {len(data.split('val'))} val / "
                f"{len(data.split('test'))} test)")
    return f"digits '{data.source}'"
