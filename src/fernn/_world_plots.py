"""Pictures of a world model (plain functions of arrays; Pillow for GIFs, matplotlib for
plots, both imported when called).

- :func:`rollout_frames` / :func:`save_rollout_gif`: the true view | the model's view
  (the observed frames, then its predictions), frame by frame.
- :func:`memory_frames` / :func:`save_memory_gif`: the full world beside the model's
  decoded memory map (what it believes lies outside the view), world-aligned, with the
  view window drawn on both (it wraps around the torus).
- :func:`error_curves`: per-step error of several models (e.g. FloWM and its ablations).

Arrays are numpy or torch, frames in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["rollout_frames", "save_rollout_gif", "memory_frames", "save_memory_gif",
           "error_curves", "save_gif_frames"]

_BOX = np.array([1.0, 0.15, 0.15])  # the view window's outline (red)
_GAP = np.array([0.35, 0.35, 0.35])  # the strip between panels (grey)


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    return x[:, 0] if x.ndim == 4 and x.shape[1] == 1 else x  # (T, 1, H, W) -> (T, H, W)


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(gray, 0.0, 1.0)[..., None], 3, axis=-1)


def _side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 2) -> np.ndarray:
    """``(T, H, W, 3)`` panels joined by a grey strip: ``(T, H, W_l + gap + W_r, 3)``."""
    strip = np.broadcast_to(_GAP, (left.shape[0], left.shape[1], gap, 3))
    return np.concatenate([left, strip, right], axis=2)


def rollout_frames(views, predictions, context: int) -> np.ndarray:
    """True view | model view for every frame of a clip.

    Shapes: views ``(T, [1,] w, w)`` (context then targets), predictions
    ``(T − context, [1,] w, w)``; returns RGB ``(T, w, 2w + 2, 3)``. The model's side
    shows the observed views during the context, then the predictions.
    """
    views, predictions = _array(views), _array(predictions)
    if views.shape[0] != context + predictions.shape[0] or views.shape[1:] != predictions.shape[1:]:
        raise ValueError(f"views {views.shape} must be the {context} context frames followed "
                         f"by targets shaped like predictions {predictions.shape}")
    model = np.concatenate([views[:context], predictions])
    return _side_by_side(_rgb(views), _rgb(model))


def _outline(frames: np.ndarray, centres: np.ndarray, view_size: int) -> np.ndarray:
    """Draw each frame's view window (centred on ``centres[t]``, wrapping) onto RGB frames
    ``(T, N, N, 3)``."""
    out = frames.copy()
    N = out.shape[1]
    offsets = np.arange(view_size) - view_size // 2
    for t, (cy, cx) in enumerate(np.asarray(centres, dtype=np.int64)):
        rows, cols = (cy + offsets) % N, (cx + offsets) % N
        out[t, rows[0], cols] = _BOX
        out[t, rows[-1], cols] = _BOX
        out[t, rows, cols[0]] = _BOX
        out[t, rows, cols[-1]] = _BOX
    return out


def memory_frames(world, decoded, centres, view_size: int) -> np.ndarray:
    """The full world | the model's decoded memory map, the view window drawn on both.

    Shapes: world and decoded ``(T, [1,] N, N)``, both world-aligned (pixel p is world
    pixel p: for a :class:`~fernn.models.WorldModel`, ``to_world(memory(...,
    frame="allocentric")["decoded"], w)``); centres ``(T, 2)`` camera centres (mod N);
    returns RGB ``(T, N, 2N + 2, 3)``.
    """
    world, decoded = _array(world), _array(decoded)
    centres = np.asarray(centres.cpu() if hasattr(centres, "cpu") else centres)
    if world.shape != decoded.shape or centres.shape != (world.shape[0], 2):
        raise ValueError(f"world {world.shape} and decoded {decoded.shape} must match, with "
                         f"one camera centre per frame; got centres {centres.shape}")
    return _side_by_side(_outline(_rgb(world), centres, view_size),
                         _outline(_rgb(decoded), centres, view_size))


def save_gif_frames(path: str | Path, frames: np.ndarray, scale: int = 4,
                    ms_per_frame: int = 120) -> None:
    """Write RGB frames ``(T, H, W, 3)`` in [0, 1] as a looping GIF, each pixel
    ``scale``×``scale``."""
    from PIL import Image

    images = []
    for frame in np.asarray(frames):
        image = Image.fromarray((np.clip(frame, 0, 1) * 255).astype(np.uint8), mode="RGB")
        images.append(image.resize((image.width * scale, image.height * scale), Image.NEAREST))
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)


def save_rollout_gif(path: str | Path, views, predictions, context: int, **kw) -> None:
    """:func:`rollout_frames` written as a GIF (``scale``, ``ms_per_frame``)."""
    save_gif_frames(path, rollout_frames(views, predictions, context), **kw)


def save_memory_gif(path: str | Path, world, decoded, centres, view_size: int, **kw) -> None:
    """:func:`memory_frames` written as a GIF (``scale``, ``ms_per_frame``)."""
    save_gif_frames(path, memory_frames(world, decoded, centres, view_size), **kw)


def error_curves(curves: dict, ylabel: str = "MSE", trained: int | None = None,
                 log: bool = True, title: str = "Error per predicted step") -> "object":
    """``curves``: label → per-step values (e.g. ``world_metrics(...)["mse"]``) of each
    model; ``trained``: the training horizon, marked. Returns a matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in curves.items():
        values = np.asarray(values.cpu() if hasattr(values, "cpu") else values, dtype=float)
        ax.plot(np.arange(1, len(values) + 1), values, label=label)
    if trained:
        ax.axvline(trained, color="grey", linestyle="--", linewidth=1, label="trained horizon")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("predicted step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
