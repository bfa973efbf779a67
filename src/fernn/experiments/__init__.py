"""Experiments: configs, the training engine, evaluation and reports (the ``train`` extra).

    from fernn.experiments import load_config, train
    cfg = load_config("flowing_mnist_fernn_v2", ["epochs=1"])
    metrics = train(cfg, "runs/fernn_v2")

Importing this package needs PyTorch Lightning (``pip install fernn[train]``); the core
layers do not.
"""

from ._checkpoint import load_model, save_model
from ._config import (Config, apply_overrides, config_from_dict, config_to_toml, load_config,
                      shipped_configs)
from ._engine import train
from ._evaluate import evaluate_task
from ._modules import NonFiniteLossError
from ._report import headline, load_metrics, write_compare_report, write_run_report
from .tasks import Task, TaskOptions, get_task, list_tasks, register_task
from .tasks.kth import evaluate_classifier
from .tasks.next_step import evaluate_model

__all__ = [
    "Config",
    "NonFiniteLossError",
    "Task",
    "TaskOptions",
    "apply_overrides",
    "config_from_dict",
    "config_to_toml",
    "evaluate_classifier",
    "evaluate_model",
    "evaluate_task",
    "get_task",
    "headline",
    "list_tasks",
    "load_config",
    "load_metrics",
    "load_model",
    "register_task",
    "save_model",
    "shipped_configs",
    "train",
    "write_compare_report",
    "write_run_report",
]
