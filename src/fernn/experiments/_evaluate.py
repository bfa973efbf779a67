"""Evaluation of a trained model on its task's test data (plain PyTorch, no training
engine: usable on any saved model). Each task's metrics live in its module; the seeds of
the evaluation sets are fixed offsets of the config seed, shared by the tasks, so every
run of a config sees the same test data."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["evaluate_task", "TEST_SEED_OFFSET", "LENGTH_SEED_OFFSET", "VELOCITY_SEED_OFFSET"]

TEST_SEED_OFFSET = 1_000_003
LENGTH_SEED_OFFSET = 2_000_003
VELOCITY_SEED_OFFSET = 3_000_003


def evaluate_task(model: nn.Module, cfg, data, device: torch.device, progress=True) -> dict:
    """The evaluation of ``cfg``'s task on the test part of ``data`` (what the task's
    ``load_data`` returned)."""
    return cfg.task_spec.evaluate(model, cfg, data, device, progress)
