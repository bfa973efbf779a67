"""Task ``next_step``: next-step prediction on Flowing MNIST (translations) and Rotating
MNIST (rotations) — Table 1, length and velocity generalisation (FERNN.md §5).

Observe ``input_frames`` frames of digits moving on a torus, predict the next
``predict_frames``; loss and test metric: MSE over the predicted frames. Evaluation adds
the MSE per predicted step out to ``length_frames`` (length generalisation) and one MSE
per fixed velocity (velocity generalisation: the grid ``{-r..r}²`` of translations, or
``test_angular_velocities``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._flows import RotationFlow2D, TranslationFlow2D
from ...data import DIGIT_SOURCES, DigitBank, FlowingMNIST
from ...models import NextStepPredictor
from .._data import VAL_SEED_OFFSET, Banks, BatchData, SequenceBatches
from .._evaluate import LENGTH_SEED_OFFSET, TEST_SEED_OFFSET, VELOCITY_SEED_OFFSET
from .._modules import TaskModule
from .._plots import frame_strip, length_curves, save_gif, velocity_curves, velocity_heatmap
from .._report import file_slugs, fmt_mse, learning_figure, report_link, save_figure
from . import DigitTask, TaskOptions, register_task

__all__ = ["NextStepOptions", "NextStepTask", "NextStepModule", "FlowingMNISTData", "flowing",
           "rollout_errors", "evaluate_model"]


@dataclass
class NextStepOptions(TaskOptions):
    """The ``[task_options]`` of a next-step run."""

    # -- data ---------------------------------------------------------------------------
    digits: str = "mnist"  # "mnist" | "mnist-test-split" | "font"
    digits_fallback: str | None = None  # "font": use offline digits (announced) if MNIST is missing
    data_root: str | None = None  # MNIST directory (default: $FERNN_DATA or the cache)
    flow: str = "translation"  # "translation" (Flowing MNIST) | "rotation" (Rotating MNIST)
    data_max_speed: int = 2  # translation: training velocities {-r..r}^2 per digit
    order: int = 36  # rotation: N of C_N for the data's angular velocities
    data_angular_velocities: list = field(default_factory=lambda: list(range(-40, 41, 10)))
    test_angular_velocities: list = field(default_factory=lambda: list(range(-50, 51, 10)))
    num_digits: int = 2
    size: int = 28
    centred_digits: bool = False  # every digit at the frame centre (the research code's Rotating MNIST)
    input_frames: int = 10
    predict_frames: int = 10
    val_sequences: int = 1000
    test_sequences: int = 1000
    # -- training -----------------------------------------------------------------------
    teacher_forcing: float = 0.0
    # -- evaluation ---------------------------------------------------------------------
    length_frames: int = 70  # predicted frames in the length-generalisation test
    length_sequences: int = 200
    velocity_grid: int = 2  # translation: test grid {-r..r}^2 (one fixed velocity per cell)
    velocity_sequences: int = 100

    nullable = frozenset({"digits_fallback", "data_root"})

    @classmethod
    def legacy_defaults(cls) -> dict:
        return cls.defaults()  # fernn 0.1.0's flat Config had these keys with these defaults

    def validate(self) -> None:
        if self.digits not in DIGIT_SOURCES:
            raise ValueError(f"digits must be one of {DIGIT_SOURCES}, got {self.digits!r}")
        if self.flow not in ("translation", "rotation"):
            raise ValueError(f"flow must be 'translation' or 'rotation', got {self.flow!r}")
        if self.flow == "rotation":
            RotationFlow2D(self.data_angular_velocities, order=self.order)  # validates
            RotationFlow2D(self.test_angular_velocities, order=self.order)
        if self.digits_fallback not in (None, "font"):
            raise ValueError(f"digits_fallback must be None or 'font', got {self.digits_fallback!r}")
        for name in ("num_digits", "size", "input_frames", "predict_frames", "val_sequences",
                     "test_sequences", "length_frames", "length_sequences", "velocity_sequences"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.data_max_speed < 0 or self.velocity_grid < 0:
            raise ValueError("data_max_speed and velocity_grid must be non-negative")
        if not 0.0 <= self.teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must lie in [0, 1], got {self.teacher_forcing}")


# -- data ------------------------------------------------------------------------------
def flowing(cfg, bank: DigitBank, *, seed: int, seq_len: int, num_sequences: int,
            velocities=None, max_speed: int | None = None) -> FlowingMNIST:
    """A Flowing (or Rotating) MNIST set of the config's geometry; velocities from its
    training set by default."""
    opts = cfg.task_options
    if opts.flow == "rotation":
        flow = RotationFlow2D(opts.data_angular_velocities, order=opts.order)
    else:
        flow = TranslationFlow2D(max_speed=opts.data_max_speed if max_speed is None else max_speed)
    return FlowingMNIST(bank, flow, num_digits=opts.num_digits, seq_len=seq_len, size=opts.size,
                        seed=seed, velocities=velocities, num_sequences=num_sequences,
                        centred=opts.centred_digits)


class FlowingMNISTData(BatchData):
    """Train/val batches of Flowing (or Rotating) MNIST from :class:`Banks`."""

    def setup(self, stage=None):
        cfg, B, world, banks = self.cfg, self.cfg.batch_size, self.world_size, self.data
        opts = cfg.task_options
        steps = cfg.steps_per_epoch or max(1, len(banks.train) // (B * world))
        seq_len = opts.input_frames + opts.predict_frames
        self.steps_per_epoch = steps
        self.train_set = SequenceBatches(
            flowing(cfg, banks.train, seed=cfg.seed, seq_len=seq_len,
                    num_sequences=steps * world * B),
            B, steps * world,
        )
        n_val = -(-opts.val_sequences // B)
        self.val_set = SequenceBatches(
            flowing(cfg, banks.val, seed=cfg.seed + VAL_SEED_OFFSET, seq_len=seq_len,
                    num_sequences=n_val * B),
            B, n_val,
        )


# -- training --------------------------------------------------------------------------
class NextStepModule(TaskModule):
    """Next-step prediction: observe ``input_frames``, predict ``predict_frames``; MSE loss.
    Batches: frames ``(B, T, 1, H, W)``."""

    def _split(self, frames):
        frames = frames.to(self.dtype)  # the data are float32; precision="64-true" runs in float64
        opts = self.cfg.task_options
        T_in, T_out = opts.input_frames, opts.predict_frames
        return frames[:, :T_in], frames[:, T_in : T_in + T_out]

    def training_step(self, frames, batch_idx):
        x, y = self._split(frames)
        teacher_forcing = self.cfg.task_options.teacher_forcing
        generator = None
        if teacher_forcing > 0:  # a pure function of (seed, step): survives resume
            generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.global_step)
        pred = self.train_forward(x, y.shape[1], target=y, teacher_forcing=teacher_forcing,
                                  generator=generator)
        loss = F.mse_loss(pred, y)
        self._check_finite(loss)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, frames, batch_idx):
        x, y = self._split(frames)
        loss = F.mse_loss(self.model(x, y.shape[1]), y)
        self.log("val_mse", loss, prog_bar=True, sync_dist=True, on_epoch=True)


# -- evaluation ------------------------------------------------------------------------
@torch.no_grad()
def rollout_errors(model: nn.Module, dataset: FlowingMNIST, count: int, input_frames: int,
                   pred_len: int, batch_size: int, device: torch.device, progress=None) -> Tensor:
    """MSE of every sequence at every predicted step: ``(count, pred_len)``, float64."""
    model.eval()
    dtype = next(model.parameters()).dtype
    errors = []
    for start in range(0, count, batch_size):
        stop = min(count, start + batch_size)
        frames = dataset.batch(range(start, stop), device=device)["frames"].to(dtype)  # (B, T, 1, H, W)
        pred = model(frames[:, :input_frames], pred_len)
        true = frames[:, input_frames : input_frames + pred_len]
        errors.append((pred - true).double().square().mean(dim=(2, 3, 4)).cpu())  # (B, T')
        if progress is not None:
            progress.update(stop - start)
    return torch.cat(errors)


def _test_velocities(opts) -> list:
    if opts.flow == "rotation":
        return [float(w) for w in opts.test_angular_velocities]
    r = opts.velocity_grid
    return [(vy, vx) for vy in range(-r, r + 1) for vx in range(-r, r + 1)]


def evaluate_model(model: nn.Module, cfg, test_bank: DigitBank, device: torch.device,
                   progress=True) -> dict:
    """Test MSE (the config's geometry and training velocities), length generalisation
    (MSE per step to ``length_frames`` predicted frames), velocity generalisation (MSE per
    fixed velocity — of the grid ``{-r..r}²`` for translations, of
    ``test_angular_velocities`` for rotations — all digits sharing it)."""
    opts = cfg.task_options
    T_in, T_out = opts.input_frames, opts.predict_frames
    grid = _test_velocities(opts)
    total = opts.test_sequences + opts.length_sequences + len(grid) * opts.velocity_sequences
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="evaluating", unit="seq", leave=False)
    run = dict(input_frames=T_in, batch_size=cfg.eval_batch_size, device=device, progress=bar)

    test = flowing(cfg, test_bank, seed=cfg.seed + TEST_SEED_OFFSET, seq_len=T_in + T_out,
                   num_sequences=opts.test_sequences)
    test_err = rollout_errors(model, test, opts.test_sequences, pred_len=T_out, **run)

    length = flowing(cfg, test_bank, seed=cfg.seed + LENGTH_SEED_OFFSET,
                     seq_len=T_in + opts.length_frames, num_sequences=opts.length_sequences)
    length_err = rollout_errors(model, length, opts.length_sequences,
                                pred_len=opts.length_frames, **run)

    velocity_mse = []
    for cell, v in enumerate(grid):
        fixed = flowing(cfg, test_bank, seed=cfg.seed + VELOCITY_SEED_OFFSET + cell,
                        seq_len=T_in + T_out, num_sequences=opts.velocity_sequences,
                        velocities=[v])
        err = rollout_errors(model, fixed, opts.velocity_sequences, pred_len=T_out, **run)
        velocity_mse.append(float(err.mean()))
    if bar is not None:
        bar.close()
    side = 2 * opts.velocity_grid + 1
    if opts.flow == "rotation":
        velocity = {"kind": "rotation", "velocities": grid, "mse": velocity_mse,
                    "trained": [float(w) for w in opts.data_angular_velocities],
                    "sequences": opts.velocity_sequences}
    else:
        velocity = {
            "kind": "translation",
            "grid": opts.velocity_grid,
            "trained": opts.data_max_speed,
            "velocities": [list(v) for v in grid],
            "mse": [velocity_mse[r * side : (r + 1) * side] for r in range(side)],  # rows v_y
            "sequences": opts.velocity_sequences,
        }
    return {
        "test_mse": float(test_err.mean()),
        "test_mse_std": float(test_err.mean(dim=1).std()) if len(test_err) > 1 else 0.0,
        "length": {
            "input_frames": T_in,
            "mean": length_err.mean(dim=0).tolist(),
            "std": length_err.std(dim=0).tolist() if len(length_err) > 1
            else [0.0] * opts.length_frames,
            "sequences": opts.length_sequences,
        },
        "velocity": velocity,
    }


# -- reports ---------------------------------------------------------------------------
def _velocity_figure(velocity: dict, vmin=None, vmax=None):
    """A heat map (translations, one run) or curves (rotations, any runs)."""
    (name, first), = list(velocity.items())[:1]
    if first.get("kind", "translation") == "rotation":
        return velocity_curves({n: (v["velocities"], v["mse"]) for n, v in velocity.items()},
                               trained=first["trained"])
    return velocity_heatmap(first["mse"], first["grid"], title=f"{name}: MSE per velocity",
                            trained=first.get("trained"), vmin=vmin, vmax=vmax)


@register_task
class NextStepTask(DigitTask):
    name = "next_step"
    Options = NextStepOptions
    DataModule = FlowingMNISTData
    Module = NextStepModule
    model_types = (NextStepPredictor,)
    model_hint = "a next-step predictor (e.g. fernn_predictor)"
    resumable = frozenset({"length_frames", "length_sequences", "velocity_grid",
                           "velocity_sequences", "data_root"})
    summary = "next-step prediction on Flowing / Rotating MNIST (Table 1)"

    def validate(self, cfg) -> None:
        if cfg.model_options.get("in_channels", 1) != 1:
            raise ValueError("the frames have one channel: model_options.in_channels=1")

    def describe_data(self, cfg, data: Banks) -> str:
        return f"digits '{data.source}'"

    def evaluate(self, model, cfg, data, device, progress=True) -> dict:
        return evaluate_model(model, cfg, self.test_bank(data), device, progress)

    def headline(self, metrics: dict) -> str:
        return f"test MSE {metrics['test_mse']:.4e}"

    def eval_summary(self, metrics: dict) -> str:
        return (f"MSE at predicted step {len(metrics['length']['mean'])}: "
                f"{metrics['length']['mean'][-1]:.4e}")

    def report(self, run_dir: Path, metrics: dict, cfg, data, model, device) -> list[str]:
        """Learning curves, length generalisation, velocity heat map (or curves), a frame
        strip and a rollout GIF."""
        opts = cfg.task_options
        test_bank = self.test_bank(data)
        figures = {}
        learning = learning_figure(run_dir, "val MSE")
        if learning:
            figures["learning"] = learning
        length = metrics["length"]
        figures["length"] = save_figure(
            length_curves({cfg.name: (length["mean"], length["std"])}, opts.predict_frames),
            run_dir / "length_generalisation.png")
        figures["velocity"] = save_figure(_velocity_figure({cfg.name: metrics["velocity"]}),
                                          run_dir / "velocity_generalisation.png")
        model.eval()
        sample = flowing(cfg, test_bank, seed=cfg.seed + LENGTH_SEED_OFFSET,
                         seq_len=opts.input_frames + opts.length_frames, num_sequences=1)
        frames = sample.batch([0], device=device)["frames"]  # (1, T, 1, H, W)
        frames = frames.to(next(model.parameters()).dtype)
        T_in = opts.input_frames
        pred = model(frames[:, :T_in], opts.length_frames)[0, :, 0].clamp(0, 1).cpu()
        true = frames[0, :, 0].cpu()
        figures["strip"] = save_figure(
            frame_strip(true[:T_in], true[T_in : T_in + opts.predict_frames],
                        pred[: opts.predict_frames], title=f"{cfg.name}: test sequence 0"),
            run_dir / "frames.png")
        save_gif(run_dir / "rollout.gif", true.numpy(), torch.cat([true[:T_in], pred]).numpy())

        lines = [
            "| metric | value |",
            "|---|---|",
            f"| test MSE ({opts.predict_frames} predicted frames, {opts.test_sequences} sequences) "
            f"| {fmt_mse(metrics['test_mse'])} ± {fmt_mse(metrics['test_mse_std'])} |",
            f"| validation MSE (last) | {fmt_mse(metrics.get('val_mse'))} |",
            f"| MSE at predicted step {opts.predict_frames} / {len(length['mean'])} "
            f"| {fmt_mse(length['mean'][opts.predict_frames - 1])} / {fmt_mse(length['mean'][-1])} |",
            "",
        ]
        if "learning" in figures:
            lines += [f"![learning curves]({figures['learning']})", ""]
        lines += [
            f"![length generalisation]({figures['length']})",
            "",
            f"![velocity generalisation]({figures['velocity']})",
            "",
            f"![frames]({figures['strip']})",
            "",
            "Rollout (true | model; the model sees the first "
            f"{T_in} frames): ![rollout](rollout.gif)",
        ]
        return lines

    def compare(self, runs, out_dir: Path) -> list[str]:
        """A table, the length curves overlaid, the velocity heat maps on one colour scale
        (curves overlaid for rotations)."""
        lines = [
            "| run | model | params | digits | steps | test MSE | MSE at last predicted step | train time |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, d, m in runs:
            lines.append(
                f"| [{label}]({report_link(d, out_dir)}) | `{m['model']}` "
                f"| {m['parameters']} | {m['digits']} | {m['steps']} | {fmt_mse(m['test_mse'])} "
                f"| {fmt_mse(m['length']['mean'][-1])} | {m['train_seconds']:.0f} s |")
        fig = length_curves({label: (m["length"]["mean"], m["length"]["std"])
                             for label, _, m in runs})
        lines += ["", f"![length generalisation]({save_figure(fig, out_dir / 'compare_length.png')})",
                  ""]
        if runs[0][2]["velocity"].get("kind", "translation") == "rotation":
            fig = _velocity_figure({label: m["velocity"] for label, _, m in runs})
            lines.append("![velocity generalisation]"
                         f"({save_figure(fig, out_dir / 'compare_velocity.png')})")
        else:
            values = [v for _, _, m in runs for row in m["velocity"]["mse"] for v in row]
            slugs = file_slugs([label for label, _, _ in runs])
            for (label, _, m), slug in zip(runs, slugs):  # one heat map per run, one colour scale
                fig = _velocity_figure({label: m["velocity"]}, min(values), max(values))
                name = save_figure(fig, out_dir / f"compare_velocity_{slug}.png")
                lines.append(f"![{label} velocity generalisation]({name})")
        return lines
