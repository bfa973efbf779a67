"""The training engine: ``train(cfg, run_dir) -> metrics`` on PyTorch Lightning.

Lightning's Trainer provides progress bars, loggers (CSV and TensorBoard by default,
Weights & Biases on request), gradient clipping, mixed precision and DDP on one or many
machines (``devices``/``num_nodes``/``strategy="ddp"``, torchrun and SLURM detected). The
core layers do not depend on it.

Determinism and resume: training sequences are a pure function of (seed, epoch, index);
a checkpoint (``checkpoints/last.ckpt``, written atomically, read with
``weights_only=True``) is taken at the end of every epoch, so a run killed mid-training
and started again with the same command replays the interrupted epoch exactly: nothing
is lost. Use ``steps_per_epoch`` to checkpoint more often. A non-finite loss stops the
run before the weights are touched, with the last good checkpoint kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader, DistributedSampler

from .._atomic import atomic_open
from .._version import __version__
from ..models import get_model
from ._checkpoint import atomic_torch_save, save_model
from ._config import Config, config_to_toml
from ._data import Banks, SequenceBatches, flowing, load_banks
from ._evaluate import evaluate_model

__all__ = ["train", "NonFiniteLossError", "NextStepModule", "FlowingMNISTData"]

VAL_SEED_OFFSET = 4_000_003


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic writes, ``weights_only`` reads (no code unpickled)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class NextStepModule(L.LightningModule):
    """Next-step prediction: observe ``input_frames``, predict ``predict_frames``; MSE loss."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.model = get_model(cfg.model, **cfg.model_options)

    def _split(self, frames):
        frames = frames.to(self.dtype)  # the data are float32; precision="64-true" runs in float64
        T_in, T_out = self.cfg.input_frames, self.cfg.predict_frames
        return frames[:, :T_in], frames[:, T_in : T_in + T_out]

    def training_step(self, frames, batch_idx):
        x, y = self._split(frames)
        generator = None
        if self.cfg.teacher_forcing > 0:  # a pure function of (seed, step): survives resume
            generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.global_step)
        pred = self.model(x, y.shape[1], target=y, teacher_forcing=self.cfg.teacher_forcing,
                          generator=generator)
        loss = F.mse_loss(pred, y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss became {float(loss)} at step {self.global_step} "
                f"(epoch {self.current_epoch}); the weights were not updated and the last good "
                "checkpoint is kept. Lower lr, keep grad_clip, or check the data."
            )
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, frames, batch_idx):
        x, y = self._split(frames)
        loss = F.mse_loss(self.model(x, y.shape[1]), y)
        self.log("val_mse", loss, prog_bar=True, sync_dist=True, on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.Adam(
            self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay
        )

    def on_save_checkpoint(self, checkpoint):
        checkpoint["fernn_config"] = self.cfg.to_dict()
        checkpoint["fernn_version"] = __version__


class FlowingMNISTData(L.LightningDataModule):
    """Train/val batches of Flowing MNIST; ``batch_size`` is per device."""

    def __init__(self, cfg: Config, banks: Banks):
        super().__init__()
        self.cfg = cfg
        self.banks = banks

    def setup(self, stage=None):
        cfg, B = self.cfg, self.cfg.batch_size
        world = self.trainer.world_size if self.trainer is not None else 1
        steps = cfg.steps_per_epoch or max(1, len(self.banks.train) // (B * world))
        seq_len = cfg.input_frames + cfg.predict_frames
        self.steps_per_epoch = steps
        self.train_set = SequenceBatches(
            flowing(cfg, self.banks.train, seed=cfg.seed, seq_len=seq_len,
                    num_sequences=steps * world * B),
            B, steps * world,
        )
        n_val = -(-cfg.val_sequences // B)
        self.val_set = SequenceBatches(
            flowing(cfg, self.banks.val, seed=cfg.seed + VAL_SEED_OFFSET, seq_len=seq_len,
                    num_sequences=n_val * B),
            B, n_val,
        )

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


class _EpochEndCheckpoint(Callback):
    """Write ``last.ckpt`` at the end of every training epoch (through the Trainer, so the
    atomic IO plugin and DDP rank-zero writing apply). Lightning's ModelCheckpoint with
    ``save_top_k=0`` writes ``last.ckpt`` only at the end of training."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.save_checkpoint(self.path)


class _FreshSequencesEachEpoch(Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        trainer.datamodule.train_set.set_epoch(trainer.current_epoch)


def _loggers(cfg: Config, run_dir: Path) -> list:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers = []
    for name in cfg.loggers:
        if name == "csv":
            loggers.append(CSVLogger(run_dir, name="logs", version="csv"))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(run_dir, name="logs", version="tensorboard"))
        elif name == "wandb":
            try:
                from lightning.pytorch.loggers import WandbLogger
                import wandb  # noqa: F401
            except ImportError:
                raise ImportError("loggers=['wandb'] needs `pip install wandb`") from None
            loggers.append(WandbLogger(project="fernn", name=cfg.name, save_dir=str(run_dir)))
    return loggers


# Fields that may change when a run is resumed (engine and evaluation, and a longer run).
_RESUMABLE_CHANGES = {"epochs", "accelerator", "devices", "num_nodes", "strategy", "progress",
                      "loggers", "log_every_n_steps", "eval_batch_size", "length_frames",
                      "length_sequences", "velocity_grid", "velocity_sequences", "name"}


def _check_resume(cfg: Config, saved: dict) -> None:
    current = cfg.to_dict()
    changed = sorted(k for k in current if k not in _RESUMABLE_CHANGES
                     and current.get(k) != saved.get(k))
    if changed:
        raise ValueError(
            f"the run directory holds a run with a different config ({', '.join(changed)} "
            "differ); resume with the same config, or train into a new --out directory"
        )


def _weights_digest(model: torch.nn.Module) -> str:
    flat = torch.cat([p.detach().double().flatten().cpu() for p in model.parameters()])
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()[:16]


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} × {torch.cuda.device_count()}"
    return f"CPU {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def _write_json(data: dict, path: Path) -> None:
    with atomic_open(path, "w") as fh:
        json.dump(data, fh, indent=2)


def train(cfg: Config, run_dir: str | os.PathLike, resume: bool = True) -> dict:
    """Train, evaluate and report one experiment; returns its metrics (``metrics.json``).

    ``run_dir`` receives ``config.toml``, ``checkpoints/last.ckpt``, ``model.safetensors`` +
    ``model.json``, ``logs/``, ``metrics.json``, plots and ``report.md``. If it already holds
    a checkpoint of the same config, training resumes from it.
    """
    from ._report import write_run_report

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    last = run_dir / "checkpoints" / "last.ckpt"
    resume_from = None
    if resume and last.is_file():
        saved = torch.load(last, map_location="cpu", weights_only=True)
        _check_resume(cfg, saved.get("fernn_config", {}))
        resume_from = str(last)
    banks = load_banks(cfg)
    data = FlowingMNISTData(cfg, banks)
    module = NextStepModule(cfg)
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=cfg.epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=cfg.precision,
        gradient_clip_val=cfg.grad_clip,
        logger=_loggers(cfg, run_dir) or False,
        callbacks=[_FreshSequencesEachEpoch(), _EpochEndCheckpoint(last)],
        enable_checkpointing=False,  # _EpochEndCheckpoint writes last.ckpt
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # FlowingMNISTData places the items per rank
        log_every_n_steps=cfg.log_every_n_steps,
        enable_progress_bar=cfg.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    if trainer.is_global_zero:
        (run_dir / "config.toml").write_text(config_to_toml(cfg))
        print(f"fernn: {cfg.name}: model {cfg.model}, digits '{banks.source}', "
              f"{sum(p.numel() for p in module.model.parameters())} parameters, "
              f"run directory {run_dir}" + (f", resuming from {last}" if resume_from else ""),
              flush=True)
    started = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=resume_from)
    train_seconds = time.perf_counter() - started

    digests = [_weights_digest(module.model)]
    if trainer.world_size > 1 and torch.distributed.is_initialized():
        gathered = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, digests[0])
        digests = gathered
    if not trainer.is_global_zero:
        return {}

    device = module.device
    metrics = {
        "name": cfg.name,
        "model": cfg.model,
        "model_options": cfg.model_options,
        "parameters": sum(p.numel() for p in module.model.parameters()),
        "digits": banks.source,
        "fernn_version": __version__,
        "hardware": hardware(),
        "world_size": trainer.world_size,
        "global_batch": cfg.batch_size * trainer.world_size,
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "steps_per_epoch": data.steps_per_epoch,
        "train_seconds": train_seconds,
        "weight_digests": digests,
        "val_mse": float(trainer.callback_metrics["val_mse"])
        if "val_mse" in trainer.callback_metrics else None,
    }
    save_model(module.model, cfg, run_dir)
    metrics.update(evaluate_model(module.model, cfg, banks.test, device, progress=cfg.progress))
    _write_json(metrics, run_dir / "metrics.json")
    write_run_report(run_dir, metrics, cfg, banks.test, module.model, device)
    return metrics
