"""Experiment configuration: one dataclass, TOML files, ``key=value`` overrides.

A config is the common part — name, task, model, optimisation, engine — plus the task's
own settings in a ``[task_options]`` table (a dataclass owned by the task module, see
:mod:`fernn.experiments.tasks`) and the model's in ``[model_options]`` (checked against
the model registry). Every field is used; an unknown key is an error that lists the valid
ones. Configs written by fernn 0.1.0 (one flat table) are converted on load, exactly: a
0.1.0 key that the task does not use is dropped only if it holds 0.1.0's default, else
the load fails and says what to remove.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..models import model_class, model_options
from ._fields import check_field_types
from .tasks import DEFAULT_TASK, TaskOptions, get_task, list_tasks

__all__ = ["COMPILE_MODES", "Config", "load_config", "apply_overrides", "shipped_configs",
           "config_to_toml", "config_from_dict", "changed_settings"]

# Config.compile: "off", or the torch.compile mode of the training step's forward pass
# ("reduce-overhead" adds CUDA graphs on a GPU).
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


@dataclass
class Config:
    """An experiment: the common settings, the task's ``task_options`` (its
    :class:`~fernn.experiments.tasks.TaskOptions`; a dict is converted, ``None`` gives the
    task's defaults) and the model's ``model_options``."""

    name: str = "run"
    task: str = DEFAULT_TASK  # a registered task: see fernn.experiments.tasks.list_tasks()
    task_options: Any = None
    # -- model --------------------------------------------------------------------------
    model: str = "fernn_predictor"
    model_options: dict = field(default_factory=dict)
    # -- optimisation -------------------------------------------------------------------
    epochs: int = 50
    steps_per_epoch: int | None = None  # default: the task's one pass over its training data
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    seed: int = 0
    # -- engine -------------------------------------------------------------------------
    accelerator: str = "auto"  # "cpu" | "gpu" | "auto"
    devices: Any = 1  # number of devices, or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # "ddp" for several devices or nodes
    precision: str = "32-true"  # "bf16-mixed", "16-mixed", ...
    compile: str = "off"  # torch.compile the training step: "default", "reduce-overhead" (CUDA graphs), "max-autotune"
    loggers: list = field(default_factory=lambda: ["csv", "tensorboard"])  # + "wandb"
    log_every_n_steps: int = 10
    progress: bool = True
    eval_batch_size: int = 100

    def __post_init__(self) -> None:
        self.validate()

    @property
    def task_spec(self):
        """The registered :class:`~fernn.experiments.tasks.Task` of this config."""
        return get_task(self.task)

    def validate(self) -> None:
        check_field_types(self)
        task = _check_model(self.task, self.model, self.model_options)
        if self.task_options is None:
            self.task_options = task.Options()
        elif isinstance(self.task_options, dict):
            self.task_options = task.Options.from_dict(self.task_options, "task_options")
        elif not isinstance(self.task_options, task.Options):
            raise ValueError(f"task_options of task {self.task!r} must be a "
                             f"{task.Options.__name__} or a dict, got {self.task_options!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "num_nodes", "log_every_n_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be at least 1, got {self.steps_per_epoch}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, got {self.compile!r}")
        for logger in self.loggers:
            if logger not in ("csv", "tensorboard", "wandb"):
                raise ValueError(f"loggers may be 'csv', 'tensorboard', 'wandb'; got {logger!r}")
        task.validate(self)

    def to_dict(self) -> dict:
        """Plain data (``task_options`` as a dict): JSON- and TOML-ready."""
        return dataclasses.asdict(self)


def _check_model(task_name: str, model: str, options: dict):
    """The task (an unknown one raises), once ``model`` is known to fit it and its
    ``options`` to be the model's."""
    task = get_task(task_name)
    valid = model_options(model)  # raises for an unknown model
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown model_options {unknown} for model {model!r}; "
                         f"valid: {', '.join(sorted(valid))}")
    cls = model_class(model)
    if cls is None or not issubclass(cls, task.model_types):
        raise ValueError(f"task {task_name!r} needs {task.model_hint}; model {model!r} is not one")
    return task


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_TABLES = ("task_options", "model_options")
_NULLABLE = {"steps_per_epoch", "grad_clip"}


def _valid_keys(options: type[TaskOptions]) -> str:
    return ", ".join(sorted(set(_FIELDS) - set(_TABLES) | set(options.keys())))


def _convert_flat(data: dict, source: str) -> dict:
    """A fernn 0.1.0 config (task settings at the top level, no ``[task_options]``) in
    today's layout, with the same meaning."""
    task = get_task(data.get("task", DEFAULT_TASK))
    own = task.Options.keys()
    legacy = {name: get_task(name).Options.legacy_defaults() for name in list_tasks()}
    options = dict(task.Options.legacy_defaults())
    common = {}
    for key, value in data.items():
        if key in _FIELDS:
            common[key] = value
        elif key in own:
            options[key] = value
        else:
            others = [name for name, defaults in legacy.items() if key in defaults]
            if not others:
                raise ValueError(f"unknown config key(s) [{key!r}] in {source}; valid keys: "
                                 f"{_valid_keys(task.Options)}")
            if all(_same(value, legacy[name][key]) for name in others):
                continue  # 0.1.0 wrote every field; this one has no meaning for the task
            raise ValueError(
                f"{source} is a fernn 0.1.0 config whose key {key!r} = {value!r} belongs to "
                f"task {others[0]!r}, not to its task {task.name!r}, and would be ignored; "
                f"remove it (task {task.name!r} takes: {', '.join(sorted(own))})")
    common["task_options"] = options
    return common


def _same(a, b) -> bool:
    return a == b or (a == "none" and b is None)


def config_from_dict(data: dict, source: str = "config") -> Config:
    """A :class:`Config` from plain data: today's layout (``task_options`` a table), or a
    flat fernn 0.1.0 config, converted."""
    data = dict(data)
    if ("task_options" not in data and any(k not in _FIELDS for k in data)
            and get_task(data.get("task", DEFAULT_TASK)).Options.legacy_defaults()):
        data = _convert_flat(data, source)  # a task fernn 0.1.0 had, in its flat layout
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        task = get_task(data.get("task", DEFAULT_TASK))
        stray = [k for k in unknown if k in task.Options.keys()]
        if stray:
            raise ValueError(f"{stray} in {source} are options of task {task.name!r}: put them "
                             "in the [task_options] table")
        raise ValueError(f"unknown config key(s) {unknown} in {source}; valid keys: "
                         f"{_valid_keys(task.Options)}")
    data = {k: None if k in _NULLABLE and v == "none" else v for k, v in data.items()}
    for table in _TABLES:
        if table in data and not isinstance(data[table], (dict, TaskOptions)):
            raise ValueError(f"{table} in {source} must be a table, got {data[table]!r}")
    if isinstance(data.get("task_options"), dict):
        # The model must fit the task before the task's options are read: the clearer error.
        task = _check_model(data.get("task", DEFAULT_TASK), data.get("model", _FIELDS["model"].default),
                            data.get("model_options", {}))
        data["task_options"] = task.Options.from_dict(data["task_options"],
                                                      f"[task_options] of {source}")
    return Config(**data)


def _flat_settings(cfg: Config) -> dict:
    data = cfg.to_dict()
    flat = {k: v for k, v in data.items() if k not in _TABLES}
    for table in _TABLES:
        flat.update({f"{table}.{k}": v for k, v in data[table].items()})
    return flat


def changed_settings(a: Config, b: Config) -> list[str]:
    """The settings in which two configs differ, as ``key``, ``task_options.KEY`` and
    ``model_options.KEY``, sorted."""
    fa, fb = _flat_settings(a), _flat_settings(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))


def _parse_value(text: str) -> Any:
    """A TOML value (``16``, ``1e-3``, ``true``, ``"a"``, ``[1, 2]``), else the bare string."""
    if text.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` overrides. Common keys by name; the task's options as
    ``task_options.KEY=value`` or by their bare name (``length_frames=70``); model
    options as ``model_options.KEY=value`` (``model_options.KEY=none`` removes one, e.g.
    when switching models)."""
    data = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, text = item.split("=", 1)
        value = _parse_value(text.strip())
        key = key.strip()
        task = get_task(data["task"])
        table, _, option = key.partition(".")
        if table in _TABLES and option:
            options = dict(data[table])
            if value is None and table == "model_options":  # unsets the option
                options.pop(option, None)
            else:
                options[option] = value
            data[table] = options
        elif key in _TABLES:
            raise ValueError(f"override {item!r}: set one option, as {key}.KEY=value")
        elif key in _FIELDS:
            data[key] = value
        elif key in task.Options.keys():
            data["task_options"] = {**data["task_options"], key: value}
        else:
            raise ValueError(f"unknown config key {key!r} in override; valid keys: "
                             f"{_valid_keys(task.Options)}")
    return config_from_dict(data, "overrides")


def shipped_configs() -> dict[str, Path]:
    """Configs shipped with fernn: name → path."""
    folder = resources.files("fernn") / "configs"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def load_config(path_or_name: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a TOML config file — or a shipped config by name, or a run directory's
    ``config.toml`` — and apply overrides."""
    path = Path(path_or_name)
    if path.is_dir():
        path = path / "config.toml"
    if not path.is_file():
        shipped = shipped_configs()
        if str(path_or_name) in shipped:
            path = shipped[str(path_or_name)]
        else:
            raise FileNotFoundError(
                f"no config file {path_or_name!r}; shipped configs: {', '.join(sorted(shipped))}"
            )
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    data.setdefault("name", path.stem)
    cfg = config_from_dict(data, str(path))
    return apply_overrides(cfg, overrides or [])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def _toml_lines(data: dict, defaults: dict) -> list[str]:
    """TOML has no null: ``None`` is written as ``"none"`` where the default is not
    ``None``, and left out where it is."""
    return [f"{k} = {_toml_value(v if v is not None else 'none')}"
            for k, v in data.items() if v is not None or defaults.get(k) is not None]


def config_to_toml(cfg: Config) -> str:
    """The resolved config as TOML: the common keys, then ``[task_options]`` and
    ``[model_options]``."""
    data = cfg.to_dict()
    options = data.pop("model_options")
    task_options = data.pop("task_options")
    common_defaults = {k: f.default for k, f in _FIELDS.items()}
    task_defaults = {f.name: f.default for f in dataclasses.fields(cfg.task_options)}
    lines = _toml_lines(data, common_defaults)
    lines += ["", "[task_options]"] + _toml_lines(task_options, task_defaults)
    lines += ["", "[model_options]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in options.items() if v is not None]
    return "\n".join(lines) + "\n"
