"""Evaluation: next-step predictors (test MSE, length and velocity generalisation) and
clip classifiers (accuracy, confusion matrix, camera-speed generalisation).

Plain PyTorch (no training engine): usable on any saved model. Seeds of the evaluation
sets are fixed offsets of the config seed, so every run of a config sees the same test
sequences.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data import KTH_ACTIONS, DigitBank, FlowingMNIST, KTHClips, KTHSequences
from ._config import Config
from ._data import Banks, flowing, kth_clips

__all__ = ["rollout_errors", "evaluate_model", "classify_clips", "evaluate_classifier",
           "evaluate_task", "TEST_SEED_OFFSET"]

TEST_SEED_OFFSET = 1_000_003
LENGTH_SEED_OFFSET = 2_000_003
VELOCITY_SEED_OFFSET = 3_000_003


@torch.no_grad()
def rollout_errors(
    model: nn.Module,
    dataset: FlowingMNIST,
    count: int,
    input_frames: int,
    pred_len: int,
    batch_size: int,
    device: torch.device,
    progress=None,
) -> Tensor:
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


def evaluate_model(
    model: nn.Module, cfg: Config, test_bank: DigitBank, device: torch.device, progress=True
) -> dict:
    """Test MSE (cfg geometry, training velocities), length generalisation (MSE per step to
    ``cfg.length_frames`` predicted frames), velocity generalisation (MSE per fixed velocity
    — of the grid ``{-r..r}²`` for translations, of ``test_angular_velocities`` for
    rotations — all digits sharing it)."""
    T_in, T_out = cfg.input_frames, cfg.predict_frames
    if cfg.flow == "rotation":
        grid = [float(w) for w in cfg.test_angular_velocities]
    else:
        grid = [(vy, vx) for vy in range(-cfg.velocity_grid, cfg.velocity_grid + 1)
                for vx in range(-cfg.velocity_grid, cfg.velocity_grid + 1)]
    total = (cfg.test_sequences + cfg.length_sequences + len(grid) * cfg.velocity_sequences)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="evaluating", unit="seq", leave=False)
    run = dict(input_frames=T_in, batch_size=cfg.eval_batch_size, device=device, progress=bar)

    test = flowing(cfg, test_bank, seed=cfg.seed + TEST_SEED_OFFSET, seq_len=T_in + T_out,
                   num_sequences=cfg.test_sequences)
    test_err = rollout_errors(model, test, cfg.test_sequences, pred_len=T_out, **run)

    length = flowing(cfg, test_bank, seed=cfg.seed + LENGTH_SEED_OFFSET,
                     seq_len=T_in + cfg.length_frames, num_sequences=cfg.length_sequences)
    length_err = rollout_errors(model, length, cfg.length_sequences, pred_len=cfg.length_frames,
                                **run)

    velocity_mse = []
    for cell, v in enumerate(grid):
        fixed = flowing(cfg, test_bank, seed=cfg.seed + VELOCITY_SEED_OFFSET + cell,
                        seq_len=T_in + T_out, num_sequences=cfg.velocity_sequences,
                        velocities=[v])
        err = rollout_errors(model, fixed, cfg.velocity_sequences, pred_len=T_out, **run)
        velocity_mse.append(float(err.mean()))
    if bar is not None:
        bar.close()
    side = 2 * cfg.velocity_grid + 1
    if cfg.flow == "rotation":
        velocity = {"kind": "rotation", "velocities": grid, "mse": velocity_mse,
                    "trained": [float(w) for w in cfg.data_angular_velocities],
                    "sequences": cfg.velocity_sequences}
    else:
        velocity = {
            "kind": "translation",
            "grid": cfg.velocity_grid,
            "trained": cfg.data_max_speed,
            "velocities": [list(v) for v in grid],
            "mse": [velocity_mse[r * side : (r + 1) * side] for r in range(side)],  # rows v_y
            "sequences": cfg.velocity_sequences,
        }
    return {
        "test_mse": float(test_err.mean()),
        "test_mse_std": float(test_err.mean(dim=1).std()) if len(test_err) > 1 else 0.0,
        "length": {
            "input_frames": T_in,
            "mean": length_err.mean(dim=0).tolist(),
            "std": length_err.std(dim=0).tolist() if len(length_err) > 1 else [0.0] * cfg.length_frames,
            "sequences": cfg.length_sequences,
        },
        "velocity": velocity,
    }


@torch.no_grad()
def classify_clips(model: nn.Module, clips: KTHClips, batch_size: int, device: torch.device,
                   progress=None) -> tuple[Tensor, Tensor]:
    """Predicted and true class of every clip: two ``(len(clips),)`` int64 tensors."""
    model.eval()
    dtype = next(model.parameters()).dtype
    predicted, labels = [], []
    for start in range(0, len(clips), batch_size):
        stop = min(len(clips), start + batch_size)
        batch = clips.batch(range(start, stop), device=device)
        predicted.append(model(batch["frames"].to(dtype)).argmax(-1).cpu())
        labels.append(batch["labels"].cpu())
        if progress is not None:
            progress.update(stop - start)
    return torch.cat(predicted), torch.cat(labels)


def evaluate_classifier(model: nn.Module, cfg: Config, test: KTHSequences, device: torch.device,
                        progress=True) -> dict:
    """Clip accuracy on the test persons: at the training camera-speed range (with the
    confusion matrix, rows true class, columns predicted) and at each of
    ``cfg.test_speeds`` (velocity generalisation). Clips: every non-overlapping window of
    every test sequence, each moved by its own fixed velocity from the range."""
    ranges = sorted(set(cfg.test_speeds) | {cfg.data_max_speed})
    sets = {r: kth_clips(cfg, test, train=False, seed=cfg.seed + TEST_SEED_OFFSET + r,
                         max_speed=r) for r in ranges}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(c) for c in sets.values()), desc="evaluating", unit="clip",
                   leave=False)
    accuracy, confusion = {}, None
    for r, clips in sets.items():
        predicted, labels = classify_clips(model, clips, cfg.eval_batch_size, device, bar)
        accuracy[r] = float((predicted == labels).double().mean())
        if r == cfg.data_max_speed:
            k = len(KTH_ACTIONS)
            confusion = torch.bincount(labels * k + predicted, minlength=k * k).view(k, k)
    if bar is not None:
        bar.close()
    clips = sets[cfg.data_max_speed]
    return {
        "test_accuracy": accuracy[cfg.data_max_speed],
        "test_clips": len(clips),
        "test_sequences_skipped": clips.skipped,
        "classes": list(KTH_ACTIONS),
        "confusion": confusion.tolist(),
        "velocity": {"kind": "speed_range", "trained": cfg.data_max_speed,
                     "ranges": cfg.test_speeds,
                     "accuracy": [accuracy[r] for r in cfg.test_speeds]},
    }


def evaluate_task(model: nn.Module, cfg: Config, data, device: torch.device,
                  progress=True) -> dict:
    """The evaluation of ``cfg.task`` on the test part of ``data`` (:class:`Banks` or
    :class:`KTHSequences`)."""
    if cfg.task == "kth":
        return evaluate_classifier(model, cfg, data.split("test"), device, progress)
    test = data.test if isinstance(data, Banks) else data
    return evaluate_model(model, cfg, test, device, progress)
