"""Tasks: one experiment family, one module, behind a registry.

A task owns everything that is particular to it — its config section (a dataclass, the
``[task_options]`` table of a config file), its data, its Lightning module, its
evaluation, its report section and plots, and the one-line headline the CLI prints. The
engine (:func:`fernn.experiments.train`), the CLI and the comparison report only talk to
the :class:`Task` interface, so a new experiment is a new module here and one
:func:`register_task` line below.

    >>> from fernn.experiments.tasks import get_task, list_tasks
    >>> list_tasks()
    ['kth', 'next_step', 'world']
    >>> get_task("kth").Options().clip_frames
    16
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from .._fields import check_field_types

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import torch
    from torch import nn

    from .._config import Config
    from .._data import BatchData
    from .._modules import TaskModule

__all__ = ["Task", "DigitTask", "TaskOptions", "register_task", "get_task", "list_tasks", "DEFAULT_TASK"]


@dataclasses.dataclass
class TaskOptions:
    """Base of a task's config section. Subclasses are dataclasses whose fields are the
    task's settings; ``validate`` raises ``ValueError`` naming the bad key, its value and
    the valid values. ``legacy_defaults`` are the values fernn 0.1.0 gave these keys when
    a (flat) config left them out, so that such configs convert without a change of
    meaning; ``nullable`` keys may be written ``"none"`` in TOML."""

    nullable: ClassVar[frozenset] = frozenset()

    def __post_init__(self) -> None:
        check_field_types(self, "task_options.")
        self.validate()

    def validate(self) -> None:  # pragma: no cover - overridden
        pass

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def legacy_defaults(cls) -> dict:
        """fernn 0.1.0's defaults of these keys, for the tasks that 0.1.0 had (their flat
        configs are converted on load); empty for a task 0.1.0 did not know."""
        return {}

    @classmethod
    def defaults(cls) -> dict:
        """The dataclass's defaults."""
        return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, data: dict, source: str) -> "TaskOptions":
        unknown = sorted(set(data) - set(cls.keys()))
        if unknown:
            raise ValueError(f"unknown task option(s) {unknown} in {source}; valid options: "
                             f"{', '.join(sorted(cls.keys()))}")
        data = {k: None if k in cls.nullable and v == "none" else v for k, v in data.items()}
        return cls(**data)


class Task:
    """The interface between the engine / CLI / reports and one experiment family.

    Class attributes:
        name: the registry name (``task = "..."`` in a config).
        Options: the :class:`TaskOptions` dataclass of its ``[task_options]`` table.
        DataModule, Module: its ``BatchData`` and ``TaskModule`` subclasses.
        model_types: the model classes it can train (checked against the registry).
        model_hint: a model that fits, named in the error when one does not.
        resumable: task options that may change when a run is resumed (evaluation
            settings, data locations).
        summary: one line for ``fernn configs`` / docs.
    """

    name: ClassVar[str]
    Options: ClassVar[type[TaskOptions]]
    DataModule: ClassVar[type]  # a BatchData subclass: DataModule(cfg, data)
    Module: ClassVar[type]  # a TaskModule subclass: Module(cfg)
    model_types: ClassVar[tuple[type, ...]]
    model_hint: ClassVar[str]
    resumable: ClassVar[frozenset] = frozenset()
    summary: ClassVar[str] = ""

    # -- config --------------------------------------------------------------------------
    def validate(self, cfg: "Config") -> None:
        """Checks across the common config, the model options and the task options."""

    # -- data ----------------------------------------------------------------------------
    def load_data(self, cfg: "Config", progress: bool = True) -> Any:
        """Everything the run needs from disk (digit banks, a video cache, ...)."""
        raise NotImplementedError

    def describe_data(self, cfg: "Config", data: Any) -> str:
        """A short description of the loaded data, for the log line and the report."""
        raise NotImplementedError

    def data_module(self, cfg: "Config", data: Any) -> "BatchData":
        return self.DataModule(cfg, data)

    # -- training ------------------------------------------------------------------------
    def lightning_module(self, cfg: "Config") -> "TaskModule":
        return self.Module(cfg)

    def run_metrics(self, cfg: "Config", data: Any) -> dict:
        """Extra entries of ``metrics.json`` known before evaluation."""
        return {}

    # -- evaluation and reports ----------------------------------------------------------
    def evaluate(self, model: "nn.Module", cfg: "Config", data: Any, device: "torch.device",
                 progress: bool = True) -> dict:
        raise NotImplementedError

    def headline(self, metrics: dict) -> str:
        """The run's main figure in words."""
        raise NotImplementedError

    def eval_summary(self, metrics: dict) -> str:
        """The detail ``fernn eval`` prints after the headline."""
        return ""

    def report(self, run_dir: "Path", metrics: dict, cfg: "Config", data: Any,
               model: "nn.Module", device: "torch.device") -> list[str]:
        """Writes the run's plots into ``run_dir``; returns the body of its report.md."""
        raise NotImplementedError

    def compare(self, runs: list[tuple[str, "Path", dict]], out_dir: "Path") -> list[str]:
        """``runs``: (label, run directory, metrics), labels unique. Writes the comparison
        plots into ``out_dir``; returns the body of the comparison report."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<task {self.name!r}>"


class DigitTask(Task):
    """A task whose data are the train / val / test digit banks of its options'
    ``digits``, ``data_root`` and ``digits_fallback`` (Flowing MNIST, MNIST World)."""

    def load_data(self, cfg: "Config", progress: bool = True):
        from .._data import load_banks

        return load_banks(cfg.task_options)

    def run_metrics(self, cfg: "Config", data) -> dict:
        return {"digits": data.source}

    @staticmethod
    def test_bank(data):
        """The test bank of the loaded :class:`~fernn.experiments._data.Banks` (or a bank
        given directly)."""
        return getattr(data, "test", data)


_TASKS: dict[str, Task] = {}


def register_task(task: type[Task]) -> type[Task]:
    """Class decorator: register ``task`` (a :class:`Task` subclass) under ``task.name``."""
    if task.name in _TASKS:
        raise ValueError(f"a task named {task.name!r} is already registered")
    _TASKS[task.name] = task()
    return task


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    try:
        return _TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"task must be one of {tuple(list_tasks())}, got {name!r}") from None


# The built-in tasks (one module each), and the task of a config that names none.
from . import kth, next_step, world  # noqa: E402,F401

DEFAULT_TASK = next_step.NextStepTask.name
