"""Experiment configuration: one dataclass, TOML files, ``key=value`` overrides.

Every field is used by the engine; unknown keys are errors that list the valid ones.
Model options live in ``[model_options]`` and are checked against the model registry.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..data import DIGIT_SOURCES
from ..models import model_options

__all__ = ["TASKS", "COMPILE_MODES", "Config", "load_config", "apply_overrides", "shipped_configs", "config_to_toml"]


TASKS = ("next_step", "kth")
# Config.compile: "off", or the torch.compile mode of the training step's forward pass
# ("reduce-overhead" adds CUDA graphs on a GPU).
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


@dataclass
class Config:
    """An experiment of FERNN.md §5: ``task="next_step"`` (Flowing / Rotating MNIST
    next-step prediction) or ``task="kth"`` (KTH action recognition under camera motion)."""

    name: str = "run"
    task: str = "next_step"  # "next_step" | "kth"
    # -- model --------------------------------------------------------------------------
    model: str = "fernn_predictor"
    model_options: dict = field(default_factory=dict)
    # -- data ---------------------------------------------------------------------------
    digits: str = "mnist"  # "mnist" | "mnist-test-split" | "font"
    digits_fallback: str | None = None  # "font": use offline digits (announced) if MNIST is missing
    data_root: str | None = None  # MNIST directory (default: $FERNN_DATA or the cache)
    flow: str = "translation"  # "translation" (Flowing MNIST) | "rotation" (Rotating MNIST)
    data_max_speed: int = 2  # translation: training velocities {-r..r}^2 per digit
    order: int = 36  # rotation: N of C_N for the data's angular velocities
    data_angular_velocities: list = field(default_factory=lambda: list(range(-40, 41, 10)))
    test_angular_velocities: list = field(default_factory=lambda: list(range(-50, 51, 10)))
    # -- KTH (task="kth"; size, data_max_speed and steps_per_epoch apply too) -------------
    kth_root: str | None = None  # the dataset directory (default: $FERNN_DATA/kth or the cache)
    clip_frames: int = 16  # frames per clip
    frame_step: int = 2  # take every frame_step-th frame
    flip: bool = True  # random horizontal flips in training
    test_speeds: list = field(default_factory=lambda: [0, 1, 2])  # camera speed ranges tested
    # -- Flowing MNIST ------------------------------------------------------------------
    num_digits: int = 2
    size: int = 28
    input_frames: int = 10
    predict_frames: int = 10
    steps_per_epoch: int | None = None  # default: one pass over the train digits
    val_sequences: int = 1000
    test_sequences: int = 1000
    # -- optimisation -------------------------------------------------------------------
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    teacher_forcing: float = 0.0
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
    # -- evaluation ---------------------------------------------------------------------
    eval_batch_size: int = 100
    length_frames: int = 70  # predicted frames in the length-generalisation test
    length_sequences: int = 200
    velocity_grid: int = 2  # translation: test grid {-r..r}^2 (one fixed velocity per cell)
    velocity_sequences: int = 100

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.digits not in DIGIT_SOURCES:
            raise ValueError(f"digits must be one of {DIGIT_SOURCES}, got {self.digits!r}")
        if self.flow not in ("translation", "rotation"):
            raise ValueError(f"flow must be 'translation' or 'rotation', got {self.flow!r}")
        if self.flow == "rotation":
            from .._flows import RotationFlow2D

            RotationFlow2D(self.data_angular_velocities, order=self.order)  # validates
            RotationFlow2D(self.test_angular_velocities, order=self.order)
        if self.digits_fallback not in (None, "font"):
            raise ValueError(f"digits_fallback must be None or 'font', got {self.digits_fallback!r}")
        valid = model_options(self.model)  # raises for an unknown model
        unknown = sorted(set(self.model_options) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown model_options {unknown} for model {self.model!r}; "
                f"valid: {', '.join(sorted(valid))}"
            )
        classifier = "num_classes" in valid
        if classifier != (self.task == "kth"):
            kind = "a classifier (e.g. fernn_classifier)" if self.task == "kth" else \
                "a next-step predictor (e.g. fernn_predictor)"
            raise ValueError(f"task {self.task!r} needs {kind}; model {self.model!r} is not one")
        if self.task == "kth":
            if self.flow != "translation":
                raise ValueError("KTH's camera motion is a translation flow: flow='translation'")
            if self.model_options.get("num_classes", 6) != 6:
                raise ValueError("KTH has 6 classes: model_options.num_classes=6")
            if any(not isinstance(r, int) or r < 0 for r in self.test_speeds) or not self.test_speeds:
                raise ValueError(f"test_speeds must be non-negative integers, got {self.test_speeds}")
            if self.clip_frames < 1 or self.frame_step < 1:
                raise ValueError("clip_frames and frame_step must be at least 1")
        if "in_channels" in self.model_options and self.model_options["in_channels"] != 1:
            raise ValueError("the frames have one channel: model_options.in_channels=1")
        for name in ("num_digits", "size", "input_frames", "predict_frames", "epochs",
                     "batch_size", "val_sequences", "test_sequences", "eval_batch_size",
                     "length_frames", "length_sequences", "velocity_sequences", "num_nodes",
                     "log_every_n_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be at least 1, got {self.steps_per_epoch}")
        if self.data_max_speed < 0 or self.velocity_grid < 0:
            raise ValueError("data_max_speed and velocity_grid must be non-negative")
        if not 0.0 <= self.teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must lie in [0, 1], got {self.teacher_forcing}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, got {self.compile!r}")
        for logger in self.loggers:
            if logger not in ("csv", "tensorboard", "wandb"):
                raise ValueError(f"loggers may be 'csv', 'tensorboard', 'wandb'; got {logger!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _valid_keys() -> str:
    return ", ".join(sorted(_FIELDS))


_NULLABLE = {"digits_fallback", "data_root", "kth_root", "steps_per_epoch", "grad_clip"}


def _from_dict(data: dict, source: str) -> Config:
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} in {source}; valid keys: {_valid_keys()}")
    data = {k: None if k in _NULLABLE and v == "none" else v for k, v in data.items()}
    return Config(**data)


def _parse_value(text: str) -> Any:
    """A TOML value (``16``, ``1e-3``, ``true``, ``"a"``, ``[1, 2]``), else the bare string."""
    if text.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` overrides (``model_options.hidden_channels=16`` for model options;
    ``model_options.KEY=none`` removes an option, e.g. when switching models)."""
    data = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, text = item.split("=", 1)
        value = _parse_value(text.strip())
        key = key.strip()
        if key.startswith("model_options."):
            options = dict(data["model_options"])
            option = key.split(".", 1)[1]
            if value is None:  # model_options.KEY=none unsets the option
                options.pop(option, None)
            else:
                options[option] = value
            data["model_options"] = options
        elif key in _FIELDS:
            data[key] = value
        else:
            raise ValueError(f"unknown config key {key!r} in override; valid keys: {_valid_keys()}")
    return _from_dict(data, "overrides")


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
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    data.setdefault("name", path.stem)
    cfg = _from_dict(data, str(path))
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


def config_to_toml(cfg: Config) -> str:
    """The resolved config as TOML. TOML has no null: ``None`` is written as ``"none"``
    where the default is not ``None``, and left out where it is."""
    data = cfg.to_dict()
    options = data.pop("model_options")
    lines = [
        f"{k} = {_toml_value(v if v is not None else 'none')}"
        for k, v in data.items()
        if v is not None or _FIELDS[k].default is not None
    ]
    lines += ["", "[model_options]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in options.items() if v is not None]
    return "\n".join(lines) + "\n"
