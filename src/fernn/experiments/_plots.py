"""Plots of experiment results. Functions take arrays and return a matplotlib Figure;
:func:`save_gif` writes an animated rollout with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["learning_curves", "length_curves", "velocity_heatmap", "velocity_curves",
           "frame_strip", "save_gif", "confusion_matrix", "speed_range_accuracy"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, ax, xlabel: str, ylabel: str, title: str | None = None):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def learning_curves(curves: dict, ylabel: str = "MSE") -> "object":
    """``curves``: label → (steps, values); log scale against training step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (steps, values) in curves.items():
        ax.plot(steps, values, label=label, marker="o" if len(steps) < 30 else None)
    ax.set_yscale("log")
    return _finish(fig, ax, "training step", ylabel)


def confusion_matrix(counts, classes, title: str = "Confusion matrix") -> "object":
    """``counts``: K×K clip counts, rows true class, columns predicted; cells show the
    fraction of each true class (rows sum to 1) and the count."""
    plt = _plt()
    counts = np.asarray(counts, dtype=np.float64)
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=40, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{fractions[i, j]:.2f}\n({int(counts[i, j])})", ha="center",
                    va="center", fontsize=7, color="w" if fractions[i, j] > 0.5 else "k")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    fig.tight_layout()
    return fig


def speed_range_accuracy(runs: dict, trained: int | None = None,
                         title: str = "Camera-speed generalisation") -> "object":
    """``runs``: label → (speed ranges r, accuracy); test clips move at v ∈ {-r..r}²."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (ranges, accuracy) in runs.items():
        ax.plot(ranges, accuracy, marker="o", label=label)
    if trained is not None:
        ax.axvline(trained, color="grey", linestyle="--", linewidth=1, label="trained range")
    ax.set_ylim(0, 1)
    ax.set_xticks(sorted({r for ranges, _ in runs.values() for r in ranges}))
    return _finish(fig, ax, "camera speed range r (v ∈ {-r..r}², px/frame)", "test accuracy",
                   title)


def length_curves(runs: dict, trained_frames: int | None = None) -> "object":
    """``runs``: label → (mean, std) per predicted step; shaded ±1 std (linear axis: the
    band would cross zero on a log axis)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (mean, std) in runs.items():
        mean, std = np.asarray(mean), np.asarray(std)
        steps = np.arange(1, len(mean) + 1)
        ax.plot(steps, mean, label=label)
        ax.fill_between(steps, np.maximum(mean - std, 0.0), mean + std, alpha=0.2)
    if trained_frames:
        ax.axvline(trained_frames, color="grey", linestyle="--", linewidth=1,
                   label="trained horizon")
    ax.set_ylim(bottom=0)
    return _finish(fig, ax, "predicted step", "MSE (mean ± std over sequences)",
                   "Length generalisation")


def velocity_heatmap(mse, grid: int, title: str = "Velocity generalisation",
                     trained: int | None = None, vmin=None, vmax=None) -> "object":
    """``mse``: (2r+1)×(2r+1) matrix, rows v_y and columns v_x from -r to r."""
    plt = _plt()
    mse = np.asarray(mse)
    fig, ax = plt.subplots(figsize=(4.6, 4))
    from matplotlib.colors import LogNorm

    image = ax.imshow(mse, cmap="viridis", norm=LogNorm(vmin=vmin, vmax=vmax))
    ticks = list(range(-grid, grid + 1))
    ax.set_xticks(range(len(ticks)), ticks)
    ax.set_yticks(range(len(ticks)), ticks)
    ax.set_xlabel("v_x (px/frame)")
    ax.set_ylabel("v_y (px/frame)")
    for i in range(mse.shape[0]):
        for j in range(mse.shape[1]):
            ax.text(j, i, f"{mse[i, j]:.1e}", ha="center", va="center", fontsize=6, color="w")
    if trained is not None:
        lo, hi = grid - trained - 0.5, grid + trained + 0.5
        ax.plot([lo, hi, hi, lo, lo], [lo, lo, hi, hi, lo], color="red", linewidth=1.5)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="MSE")
    fig.tight_layout()
    return fig


def velocity_curves(runs: dict, trained: list | None = None,
                    title: str = "Velocity generalisation") -> "object":
    """``runs``: label → (angular velocities, MSE); the trained range shaded."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    if trained:
        ax.axvspan(min(trained), max(trained), color="grey", alpha=0.15, label="trained ω")
    for label, (omegas, mse) in runs.items():
        ax.plot(omegas, mse, marker="o", label=label)
    ax.set_yscale("log")
    return _finish(fig, ax, "angular velocity ω (°/frame)", "MSE", title)


def frame_strip(observed, true, predicted, title: str = "") -> "object":
    """Rows: observed frames, true future, predicted future. Arrays ``(T, H, W)``."""
    plt = _plt()
    observed, true, predicted = (np.asarray(a) for a in (observed, true, predicted))
    cols = max(len(observed), len(true))
    fig, axes = plt.subplots(3, cols, figsize=(cols * 0.9, 3.0), squeeze=False)
    for row, (label, frames) in enumerate(
        (("observed", observed), ("true", true), ("predicted", predicted))
    ):
        for col in range(cols):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(frames):
                ax.imshow(frames[col], cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title(label, fontsize=7, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_gif(path: str | Path, true, predicted, scale: int = 4, ms_per_frame: int = 120) -> None:
    """Animated GIF: true sequence | model's sequence, side by side. Arrays ``(T, H, W)`` in
    [0, 1] of the same length (the model's side shows the observed frames, then its
    predictions)."""
    from PIL import Image

    true, predicted = np.asarray(true), np.asarray(predicted)
    frames = []
    for t in range(len(true)):
        right = predicted[t]
        gap = np.ones((true.shape[1], 2))
        pair = np.concatenate([true[t], gap, right], axis=1)
        image = Image.fromarray((np.clip(pair, 0, 1) * 255).astype(np.uint8))
        frames.append(image.resize((image.width * scale, image.height * scale), Image.NEAREST))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms_per_frame, loop=0)
