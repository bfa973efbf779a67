"""The Lightning module common to the tasks: it builds the model from the registry, trains
with Adam, stops on a non-finite loss before the weights move, and stores its config in
every checkpoint. Each task subclasses it with its loss and logged metrics."""

from __future__ import annotations

import lightning as L
import torch

from .._version import __version__
from ..models import get_model

__all__ = ["NonFiniteLossError", "TaskModule", "task_module", "build_model"]


def build_model(cfg):
    """The config's model from the registry; options the model refuses (a wrong type or
    value) are a ``ValueError`` that names the model and its options."""
    try:
        return get_model(cfg.model, **cfg.model_options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model {cfg.model!r} cannot be built from model_options "
                         f"{cfg.model_options}: {exc}") from exc


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class TaskModule(L.LightningModule):
    """Base of a task's Lightning module: ``self.model`` (from the registry),
    ``self.train_forward`` (the model, or ``torch.compile`` of it, for training steps),
    Adam, the finiteness check and the config in checkpoints."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = build_model(cfg)
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


def task_module(cfg) -> TaskModule:
    """The Lightning module of ``cfg``'s task."""
    return cfg.task_spec.lightning_module(cfg)
