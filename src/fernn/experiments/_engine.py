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
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .._atomic import atomic_open, remove_stale_temporaries
from .._version import __version__
from ._checkpoint import atomic_torch_save, read_checkpoint, save_model
from ._config import Config, changed_settings, config_from_dict, config_to_toml
from ._modules import NonFiniteLossError
from ._rundir import ResumableCSVLogger, RunLock, TrainClock, is_main_process

__all__ = ["train", "NonFiniteLossError"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic writes, ``weights_only`` reads (no code unpickled)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class _EpochEndCheckpoint(Callback):
    """Write ``last.ckpt`` at the end of every training epoch (through the Trainer, so the
    atomic IO plugin and DDP rank-zero writing apply). Lightning's ModelCheckpoint with
    ``save_top_k=0`` writes ``last.ckpt`` only at the end of training."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_epoch_end(self, trainer, pl_module):
        # The full state (optimizer, loops, callbacks): what a resumed run needs. Said
        # explicitly, or Lightning logs "weights_only was not set" at every epoch.
        trainer.save_checkpoint(self.path, weights_only=False)


class _FreshSequencesEachEpoch(Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        trainer.datamodule.train_set.set_epoch(trainer.current_epoch)


def _loggers(cfg: Config, run_dir: Path, keep_before: int | None) -> list:
    from lightning.pytorch.loggers import TensorBoardLogger

    loggers = []
    for name in cfg.loggers:
        if name == "csv":  # a resumed run keeps its earlier rows
            loggers.append(ResumableCSVLogger(run_dir, name="logs", version="csv",
                                              keep_before=keep_before))
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


# Common fields that may change when a run is resumed (engine and evaluation, and a longer
# run); each task names its own (Task.resumable).
_RESUMABLE_CHANGES = {"epochs", "accelerator", "devices", "num_nodes", "strategy", "compile",
                      "progress", "loggers", "log_every_n_steps", "eval_batch_size", "name"}


def _check_resume(cfg: Config, saved: dict) -> None:
    try:
        saved_cfg = config_from_dict(saved, "the checkpoint's config")
    except ValueError as exc:
        raise ValueError(f"the run directory's checkpoint holds a config this fernn cannot read "
                         f"({exc}); train into a new --out directory") from None
    may_change = _RESUMABLE_CHANGES | {f"task_options.{k}" for k in cfg.task_spec.resumable}
    changed = [k for k in changed_settings(saved_cfg, cfg) if k not in may_change]
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
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"the run directory {run_dir} is a file; give --out a directory")
    _check_devices(cfg)
    task = cfg.task_spec
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # before the model's init
    # Everything that can fail on the user's input fails before the run directory is made.
    task_data = task.load_data(cfg, progress=cfg.progress)
    data = task.data_module(cfg, task_data)
    module = task.lightning_module(cfg)
    main = is_main_process()
    lock = RunLock(run_dir)
    created = not run_dir.exists()
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()  # one writer per run directory
    try:
        if main:
            remove_stale_temporaries(run_dir)
        return _fit(cfg, run_dir, resume, task, task_data, data, module)
    finally:
        lock.release()
        if main and created and not any(run_dir.iterdir()):
            run_dir.rmdir()  # refused before anything was written: leave no empty directory


def _check_devices(cfg: Config) -> None:
    if str(cfg.accelerator).lower() in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(f"accelerator={cfg.accelerator!r}, but no CUDA GPU is visible here; use "
                         "accelerator='cpu' (or 'auto')")


def _fit(cfg, run_dir, resume, task, task_data, data, module) -> dict:
    from ._report import write_run_report

    last = run_dir / "checkpoints" / "last.ckpt"
    resume_from, keep_before = None, None
    if resume and last.is_file():
        saved = read_checkpoint(last, hint="Remove it to start over, or pass --no-resume")
        _check_resume(cfg, saved["fernn_config"])
        done = int(saved.get("epoch", -1)) + 1  # epochs finished when it was written
        if cfg.epochs < done:
            raise ValueError(
                f"{run_dir} already holds a run trained for {done} epochs; epochs={cfg.epochs} "
                f"cannot undo that. Ask for epochs >= {done} to continue it, or train into a new "
                "--out (or pass --no-resume to start over)")
        resume_from, keep_before = str(last), int(saved.get("global_step", 0))
    clock = TrainClock()
    try:
        trainer = L.Trainer(
            default_root_dir=run_dir,
            max_epochs=cfg.epochs,
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            num_nodes=cfg.num_nodes,
            strategy=cfg.strategy,
            precision=cfg.precision,
            gradient_clip_val=cfg.grad_clip,
            logger=_loggers(cfg, run_dir, keep_before) or False,
            callbacks=[_FreshSequencesEachEpoch(), clock, _EpochEndCheckpoint(last)],
            enable_checkpointing=False,  # _EpochEndCheckpoint writes last.ckpt
            plugins=[AtomicCheckpointIO()],
            use_distributed_sampler=False,  # BatchData places the items per rank
            log_every_n_steps=cfg.log_every_n_steps,
            enable_progress_bar=cfg.progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
    except (MisconfigurationException, TypeError, ValueError) as exc:  # Lightning's checks
        raise ValueError(f"the engine settings (accelerator, devices, strategy, precision, ...) "
                         f"do not fit this machine: {exc}") from None
    description = task.describe_data(cfg, task_data)
    if trainer.is_global_zero:
        (run_dir / "config.toml").write_text(config_to_toml(cfg))
        print(f"fernn: {cfg.name}: task {cfg.task}, model {cfg.model}, {description}, "
              f"{sum(p.numel() for p in module.model.parameters())} parameters, "
              f"run directory {run_dir}" + (f", resuming from {last}" if resume_from else ""),
              flush=True)
    trainer.fit(module, datamodule=data, ckpt_path=resume_from)
    train_seconds = clock.seconds

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
        "task": cfg.task,
        "data": description,
        "fernn_version": __version__,
        "hardware": hardware(),
        "world_size": trainer.world_size,
        "global_batch": cfg.batch_size * trainer.world_size,
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "steps_per_epoch": data.steps_per_epoch,
        "train_seconds": train_seconds,
        "weight_digests": digests,
    }
    metrics.update(task.run_metrics(cfg, task_data))
    for key, value in trainer.callback_metrics.items():  # the last validation figures
        if key.startswith("val_"):
            metrics[key] = float(value)
    save_model(module.model, cfg, run_dir)
    metrics.update(task.evaluate(module.model, cfg, task_data, device, progress=cfg.progress))
    _write_json(metrics, run_dir / "metrics.json")
    write_run_report(run_dir, metrics, cfg, task_data, module.model, device)
    return metrics
