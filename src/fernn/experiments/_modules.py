"""The Lightning modules of the two tasks: next-step prediction (MSE) and sequence
classification (cross-entropy). Both build their model from the registry, train with
Adam, stop on a non-finite loss before the weights move, and store their config in every
checkpoint."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from .._version import __version__
from ..models import get_model
from ._config import Config

__all__ = ["NonFiniteLossError", "NextStepModule", "ClassifierModule", "task_module"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class _TaskModule(L.LightningModule):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.model = get_model(cfg.model, **cfg.model_options)
        # The training steps' forward: the model itself, or torch.compile of it (same
        # parameters). Set past nn.Module's registration so that checkpoints and saved
        # weights keep their plain names; validation and evaluation run eager.
        train_forward = self.model
        if cfg.compile != "off":
            train_forward = torch.compile(self.model, mode=cfg.compile)
        object.__setattr__(self, "train_forward", train_forward)

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss became {float(loss)} at step {self.global_step} "
                f"(epoch {self.current_epoch}); the weights were not updated and the last good "
                "checkpoint is kept. Lower lr, keep grad_clip, or check the data."
            )

    def configure_optimizers(self):
        return torch.optim.Adam(
            self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay
        )

    def on_save_checkpoint(self, checkpoint):
        checkpoint["fernn_config"] = self.cfg.to_dict()
        checkpoint["fernn_version"] = __version__


class NextStepModule(_TaskModule):
    """Next-step prediction: observe ``input_frames``, predict ``predict_frames``; MSE loss.
    Batches: frames ``(B, T, 1, H, W)``."""

    def _split(self, frames):
        frames = frames.to(self.dtype)  # the data are float32; precision="64-true" runs in float64
        T_in, T_out = self.cfg.input_frames, self.cfg.predict_frames
        return frames[:, :T_in], frames[:, T_in : T_in + T_out]

    def training_step(self, frames, batch_idx):
        x, y = self._split(frames)
        generator = None
        if self.cfg.teacher_forcing > 0:  # a pure function of (seed, step): survives resume
            generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.global_step)
        pred = self.train_forward(x, y.shape[1], target=y, teacher_forcing=self.cfg.teacher_forcing,
                          generator=generator)
        loss = F.mse_loss(pred, y)
        self._check_finite(loss)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, frames, batch_idx):
        x, y = self._split(frames)
        loss = F.mse_loss(self.model(x, y.shape[1]), y)
        self.log("val_mse", loss, prog_bar=True, sync_dist=True, on_epoch=True)


class ClassifierModule(_TaskModule):
    """Clip classification (KTH): cross-entropy on the logits; validation accuracy.
    Batches: ``{"frames": (B, T, 1, H, W), "labels": (B,)}``."""

    def training_step(self, batch, batch_idx):
        logits = self.train_forward(batch["frames"].to(self.dtype))
        loss = F.cross_entropy(logits, batch["labels"])
        self._check_finite(loss)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self.model(batch["frames"].to(self.dtype))
        labels = batch["labels"]
        self.log("val_loss", F.cross_entropy(logits, labels), sync_dist=True, on_epoch=True)
        self.log("val_accuracy", (logits.argmax(-1) == labels).float().mean(), prog_bar=True,
                 sync_dist=True, on_epoch=True)


def task_module(cfg: Config) -> _TaskModule:
    return ClassifierModule(cfg) if cfg.task == "kth" else NextStepModule(cfg)
