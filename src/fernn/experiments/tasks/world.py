"""Task ``world``: a world model under self-motion on MNIST World (FLOWM.md §4–5).

An agent sees a ``view_size``² window of a ``world_size``² torus of drifting digits and
knows its camera moves; given ``context`` views and the camera moves of context and
prediction, predict the next ``predicted`` views. Loss: MSE on the predicted frames. Test
metrics (predictions and targets clamped to [0, 1]): MSE pooled over all pixels, PSNR of
the pooled MSE, SSIM (11×11 Gaussian, σ 1.5), per predicted step and over the rollout, at
the training horizon and on a long rollout of ``long_predicted`` frames (150 in the
paper). The report adds a rollout GIF (view | prediction) and a GIF of the memory: the
full world beside the model's decoded map, the view window drawn on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..._world_metrics import world_metrics
from ..._world_plots import error_curves, save_memory_gif, save_rollout_gif
from ...data import DIGIT_SOURCES, WORLD_PRESETS, MNISTWorld
from ...models import WorldModel, model_options, to_world
from .._data import VAL_SEED_OFFSET, Banks, BatchData, SequenceBatches
from .._evaluate import LENGTH_SEED_OFFSET, TEST_SEED_OFFSET
from .._modules import TaskModule
from .._report import fmt_mse, learning_figure, report_link, save_figure
from . import DigitTask, TaskOptions, register_task

__all__ = ["WorldOptions", "WorldTask", "WorldModule", "WorldData", "world_clips",
           "predict_clips", "evaluate_world_model"]

_GEOMETRY = ("world_size", "view_size", "num_digits", "max_velocity", "max_step", "context",
             "predicted")


@dataclass
class WorldOptions(TaskOptions):
    """The ``[task_options]`` of a world-model run: a benchmark split (``preset``) with any
    of its settings overridden (``None``: the preset's)."""

    preset: str = "dynamic_po"  # "dynamic_po" | "static_po" | "dynamic_fo" | "dynamic_fo_no_sm"
    world_size: int | None = None  # N (50 in dynamic_po)
    view_size: int | None = None  # w (32)
    num_digits: int | None = None  # K (5)
    max_velocity: int | None = None  # digit velocities in [-m, m]^2 (1)
    max_step: int | None = None  # the camera's largest move per axis (10)
    context: int | None = None  # observed frames (50)
    predicted: int | None = None  # predicted frames in training and the test (20)
    digits: str = "mnist"  # "mnist" | "mnist-test-split" | "font"
    digits_fallback: str | None = None  # "font": offline digits (announced) if MNIST is missing
    data_root: str | None = None  # MNIST directory (default: $FERNN_DATA or the cache)
    train_clips: int = 180_000  # clips per epoch when steps_per_epoch is not set (the paper's)
    val_clips: int = 256
    test_clips: int = 1024
    long_predicted: int = 150  # the long rollout of the evaluation (FLOWM.md §5)
    long_clips: int = 64

    nullable = frozenset({*_GEOMETRY, "digits_fallback", "data_root"})

    def validate(self) -> None:
        if self.preset not in WORLD_PRESETS:
            raise ValueError(f"preset must be one of {sorted(WORLD_PRESETS)}, got {self.preset!r}")
        if self.digits not in DIGIT_SOURCES:
            raise ValueError(f"digits must be one of {DIGIT_SOURCES}, got {self.digits!r}")
        if self.digits_fallback not in (None, "font"):
            raise ValueError(f"digits_fallback must be None or 'font', got {self.digits_fallback!r}")
        for name in ("world_size", "view_size", "num_digits", "context", "predicted",
                     "train_clips", "val_clips", "test_clips", "long_predicted", "long_clips"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        for name in ("max_velocity", "max_step"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be non-negative, got {value}")
        geometry = self.geometry()
        if geometry["view_size"] > geometry["world_size"]:
            raise ValueError(f"view_size ({geometry['view_size']}) must not exceed world_size "
                             f"({geometry['world_size']})")

    def geometry(self) -> dict:
        """The split's settings: the preset's, with this table's overrides."""
        geometry = dict(WORLD_PRESETS[self.preset])
        geometry.update({k: getattr(self, k) for k in _GEOMETRY if getattr(self, k) is not None})
        return geometry


# -- data ------------------------------------------------------------------------------
def world_clips(cfg, bank, *, seed: int, num_sequences: int, predicted: int | None = None,
                extras: bool = False) -> MNISTWorld:
    """MNIST World clips of the config's split (``predicted``: a longer rollout)."""
    geometry = cfg.task_options.geometry()
    if predicted is not None:
        geometry["predicted"] = predicted
    if cfg.task_options.preset == "static_po":
        geometry["static"] = True
    return MNISTWorld(bank, **geometry, seed=seed, num_sequences=num_sequences, extras=extras)


class WorldData(BatchData):
    """Train/val batches of MNIST World clips (``data``: the digit :class:`Banks`)."""

    def setup(self, stage=None):
        cfg, B, world, banks = self.cfg, self.cfg.batch_size, self.world_size, self.data
        opts = cfg.task_options
        steps = cfg.steps_per_epoch or max(1, opts.train_clips // (B * world))
        self.steps_per_epoch = steps
        keys = ("views", "actions")
        self.train_set = SequenceBatches(
            world_clips(cfg, banks.train, seed=cfg.seed, num_sequences=steps * world * B),
            B, steps * world, keys=keys)
        n_val = -(-opts.val_clips // B)
        self.val_set = SequenceBatches(
            world_clips(cfg, banks.val, seed=cfg.seed + VAL_SEED_OFFSET, num_sequences=n_val * B),
            B, n_val, keys=keys)


# -- training --------------------------------------------------------------------------
class WorldModule(TaskModule):
    """Predict the views after the context from the context's views and every camera
    move; MSE on the predicted frames. Batches: ``{"views": (B, T, 1, w, w), "actions":
    (B, T, 2)}``."""

    def _predict(self, forward, batch):
        geometry = self.cfg.task_options.geometry()
        C, P = geometry["context"], geometry["predicted"]
        views = batch["views"].to(self.dtype)  # float64 runs (precision="64-true") alike
        pred = forward(views[:, :C], batch["actions"][:, : C + P], P)
        return pred, views[:, C : C + P]

    def training_step(self, batch, batch_idx):
        pred, target = self._predict(self.train_forward, batch)
        loss = F.mse_loss(pred, target)
        self._check_finite(loss)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        pred, target = self._predict(self.model, batch)
        self.log("val_mse", F.mse_loss(pred, target), prog_bar=True, sync_dist=True,
                 on_epoch=True)


# -- evaluation ------------------------------------------------------------------------
@torch.no_grad()
def predict_clips(model: nn.Module, clips: MNISTWorld, count: int, batch_size: int,
                  device: torch.device, progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and targets of the first ``count`` clips, on the CPU:
    two ``(count, predicted, 1, w, w)`` tensors."""
    model.eval()
    dtype = next(model.parameters()).dtype
    C, P = clips.context, clips.predicted
    preds, targets = [], []
    for start in range(0, count, batch_size):
        stop = min(count, start + batch_size)
        batch = clips.batch(range(start, stop), device=device)
        views = batch["views"].to(dtype)
        preds.append(model(views[:, :C], batch["actions"], P).float().cpu())
        targets.append(views[:, C:].float().cpu())
        if progress is not None:
            progress.update(stop - start)
    return torch.cat(preds), torch.cat(targets)


def _summary(metrics: dict) -> dict:
    return {"mse": metrics["mse"].tolist(), "psnr": metrics["psnr"].tolist(),
            "ssim": metrics["ssim"].tolist(), "mse_pooled": metrics["mse_pooled"],
            "psnr_pooled": metrics["psnr_pooled"], "ssim_mean": metrics["ssim_mean"]}


def evaluate_world_model(model: nn.Module, cfg, test_bank, device: torch.device,
                         progress=True) -> dict:
    """MSE / PSNR / SSIM on the test clips at the training horizon (per step and pooled),
    and per step over a long rollout of ``long_predicted`` frames."""
    opts = cfg.task_options
    test = world_clips(cfg, test_bank, seed=cfg.seed + TEST_SEED_OFFSET,
                       num_sequences=opts.test_clips)
    long = world_clips(cfg, test_bank, seed=cfg.seed + LENGTH_SEED_OFFSET,
                       num_sequences=opts.long_clips, predicted=opts.long_predicted)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=opts.test_clips + opts.long_clips, desc="evaluating", unit="clip",
                   leave=False)
    at_horizon = world_metrics(*predict_clips(model, test, opts.test_clips, cfg.eval_batch_size,
                                              device, bar))
    long_run = world_metrics(*predict_clips(model, long, opts.long_clips, cfg.eval_batch_size,
                                            device, bar))
    if bar is not None:
        bar.close()
    return {
        "test_mse": at_horizon["mse_pooled"],
        "test_psnr": at_horizon["psnr_pooled"],
        "test_ssim": at_horizon["ssim_mean"],
        "test_clips": opts.test_clips,
        "per_step": _summary(at_horizon),
        "long": {**_summary(long_run), "predicted": opts.long_predicted,
                 "clips": opts.long_clips},
        "geometry": opts.geometry(),
    }


@register_task
class WorldTask(DigitTask):
    name = "world"
    Options = WorldOptions
    DataModule = WorldData
    Module = WorldModule
    model_types = (WorldModel,)
    model_hint = "a world model (e.g. world_model)"
    resumable = frozenset({"test_clips", "long_predicted", "long_clips", "data_root"})
    summary = "world model under self-motion on MNIST World (FloWM, FLOWM.md)"

    def validate(self, cfg) -> None:
        geometry = cfg.task_options.geometry()
        defaults = model_options(cfg.model)
        for key in ("world_size", "view_size"):
            size = cfg.model_options.get(key, defaults.get(key))
            if size != geometry[key]:
                raise ValueError(
                    f"the model's {key} ({size}) is not the data's ({geometry[key]}, preset "
                    f"{cfg.task_options.preset!r}): set model_options.{key}={geometry[key]}")

    def describe_data(self, cfg, data: Banks) -> str:
        g = cfg.task_options.geometry()
        return (f"MNIST World '{cfg.task_options.preset}' (world {g['world_size']}, view "
                f"{g['view_size']}, {g['num_digits']} digits, {g['context']} + {g['predicted']} "
                f"frames), digits '{data.source}'")

    def evaluate(self, model, cfg, data, device, progress=True) -> dict:
        return evaluate_world_model(model, cfg, self.test_bank(data), device, progress)

    def headline(self, metrics: dict) -> str:
        return (f"test MSE {metrics['test_mse']:.4e} (PSNR {metrics['test_psnr']:.2f}, "
                f"SSIM {metrics['test_ssim']:.3f})")

    def eval_summary(self, metrics: dict) -> str:
        long = metrics["long"]
        return f"MSE at predicted step {long['predicted']}: {long['mse'][-1]:.4e}"

    def report(self, run_dir: Path, metrics: dict, cfg, data, model, device) -> list[str]:
        """Learning curves, the per-step error of the long rollout, a rollout GIF and a
        memory GIF of one test clip."""
        opts = cfg.task_options
        g = opts.geometry()
        figures = {}
        learning = learning_figure(run_dir, "val MSE")
        if learning:
            figures["learning"] = learning
        figures["errors"] = save_figure(
            error_curves({cfg.name: metrics["long"]["mse"]}, trained=g["predicted"]),
            run_dir / "rollout_error.png")
        test_bank = self.test_bank(data)
        clip = world_clips(cfg, test_bank, seed=cfg.seed + LENGTH_SEED_OFFSET, num_sequences=1,
                           predicted=opts.long_predicted).batch([0], device=device, extras=True)
        model.eval()
        views = clip["views"].to(next(model.parameters()).dtype)
        C = g["context"]
        with torch.no_grad():
            aligned = getattr(model, "self_motion", False)  # a map that follows the world
            memory = model.memory(views[:, :C], clip["actions"], opts.long_predicted,
                                  frame="allocentric" if aligned else None)
        save_rollout_gif(run_dir / "rollout.gif", clip["views"][0].cpu(),
                         memory["predictions"][0].float().cpu(), C)
        lines = [
            "| metric | value |",
            "|---|---|",
            f"| test MSE ({g['predicted']} predicted frames, {metrics['test_clips']} clips) | "
            f"{fmt_mse(metrics['test_mse'])} |",
            f"| test PSNR / SSIM | {metrics['test_psnr']:.2f} / {metrics['test_ssim']:.3f} |",
            f"| validation MSE (last) | {fmt_mse(metrics.get('val_mse'))} |",
            f"| MSE at predicted step {g['predicted']} / {opts.long_predicted} (long rollout, "
            f"{opts.long_clips} clips) | {fmt_mse(metrics['long']['mse'][g['predicted'] - 1])}"
            f" / {fmt_mse(metrics['long']['mse'][-1])} |",
            "",
        ]
        if "learning" in figures:
            lines += [f"![learning curves]({figures['learning']})", ""]
        lines += [f"![error per predicted step]({figures['errors']})", "",
                  f"Rollout (true view | model; the model sees the first {C} views): "
                  "![rollout](rollout.gif)", ""]
        if aligned:
            decoded = to_world(memory["decoded"][0].float().cpu(), g["view_size"],
                               start=clip["centres"][0, 0].cpu())
            save_memory_gif(run_dir / "memory.gif", clip["world"][0].cpu(), decoded,
                            clip["centres"][0].cpu(), g["view_size"])
            lines += ["Memory (the whole world | the model's decoded map, the view window "
                      "outlined on both): ![memory](memory.gif)"]
        else:
            lines += ["No memory GIF: without self-motion equivariance the model's map does "
                      "not stay aligned with the world."]
        return lines

    def compare(self, runs, out_dir: Path) -> list[str]:
        """A table, and the per-step error of the long rollouts overlaid."""
        lines = [
            "| run | model | params | steps | test MSE | PSNR | SSIM | MSE at last long step "
            "| train time |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, d, m in runs:
            lines.append(
                f"| [{label}]({report_link(d, out_dir)}) | `{m['model']}` | {m['parameters']} "
                f"| {m['steps']} | {fmt_mse(m['test_mse'])} | {m['test_psnr']:.2f} "
                f"| {m['test_ssim']:.3f} | {fmt_mse(m['long']['mse'][-1])} "
                f"| {m['train_seconds']:.0f} s |")
        trained = runs[0][2].get("geometry", {}).get("predicted")
        fig = error_curves({label: m["long"]["mse"] for label, _, m in runs}, trained=trained)
        name = save_figure(fig, out_dir / "compare_rollout_error.png")
        lines += ["", f"![error per predicted step]({name})"]
        return lines
