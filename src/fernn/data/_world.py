"""MNIST World: a toroidal world of drifting digits seen through a moving camera
(the FloWM 2-D benchmark, FLOWM.md §4), generated on the fly, exactly, deterministically.

- World: an ``N×N`` torus with ``K`` digits (28×28, uniform labels via a uniform bank
  index), top-left corners uniform in ``[0, N)²``, integer velocities uniform in
  ``[−m, m]²`` (zero allowed; all zero for ``static``), ``p_t = p_0 + t·v mod N``;
  frame = ``clamp(Σ digits, 0, 1)`` (sum, then clamp).
- Camera: starts at ``c_0 = (0, 0)``; ``a_0 = 0``. In the context, until every world
  pixel has been seen, each step heads for a random unseen pixel by the shortest toroidal
  move, clipped to ``±max_step`` per axis; after that, uniform integer steps in
  ``[−max_step, max_step]²``. If the context ends without covering the world the camera
  path is redrawn. In the prediction segment the first action is 0, then uniform steps.
  ``self_motion=False``: every action is 0.
- View ``w×w`` centred on the camera: ``view[i, j] = world[(c_y − w//2 + i) mod N,
  (c_x − w//2 + j) mod N]``; ``a_t = c_t − c_{t−1}`` as ``(dy, dx)``.

Item ``i`` is a pure function of ``(seed, epoch, i)`` (:func:`~fernn.data.hashed_uniform`),
whatever batch it is drawn in. :meth:`MNISTWorld.batch` is vectorised over the batch: the
coverage walk loops over the context's frames (each step for all items at once), the
rendering reads every view pixel straight from the digit images (one gather per digit,
no world frames unless asked for).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._random import GeneratedItems, hashed_uniform
from ._sources import DigitBank

__all__ = ["MNISTWorld", "WORLD_PRESETS"]

_DIGIT_STREAMS = 5  # per digit: bank index, v_y, v_x, start row, start column
_CAMERA_STREAMS = 3  # per frame: target pick, uniform step dy, dx
_REDRAW_SEED = 0x5DEECE66D  # seed offset of camera path redraw r (r ≥ 1)

WORLD_PRESETS: dict[str, dict] = {
    "dynamic_po": dict(world_size=50, view_size=32, num_digits=5, max_velocity=1,
                       max_step=10, context=50, predicted=20),
    "static_po": dict(world_size=50, view_size=32, num_digits=5, max_velocity=0,
                      max_step=10, context=50, predicted=20),
    "dynamic_fo": dict(world_size=32, view_size=32, num_digits=3, max_velocity=1,
                       max_step=10, context=50, predicted=20),
    "dynamic_fo_no_sm": dict(world_size=32, view_size=32, num_digits=3, max_velocity=1,
                             max_step=10, context=50, predicted=20, self_motion=False),
}
"""The benchmark's splits (FLOWM.md §4): partially observed (po) 50×50 world, 32×32 view,
5 digits; fully observed (fo) 32×32 world = view, 3 digits; ``no_sm``: a still camera;
``static``: still digits. Training length 50 + 20 (evaluate longer with ``predicted=150``)."""


def _uniform_int(u: Tensor, m: int) -> Tensor:
    """Uniform integers in ``[−m, m]`` from uniforms in [0, 1)."""
    return (u * (2 * m + 1)).long().clamp(max=2 * m) - m


class MNISTWorld(GeneratedItems):
    """Clips of MNIST World.

    Args:
        images: a digit bank ``(n, 28, 28)`` (uint8 0-255, or float in [0, 1]) or a
            :class:`DigitBank` (``load_digits("mnist", "train")``, ``"mnist-test-split"``,
            ``"font"``).
        world_size: N. view_size: w (``w ≤ N``). num_digits: K.
        context, predicted: frames of the context and of the prediction segment (the clip
            has ``context + predicted`` frames).
        max_velocity: digit velocities are uniform integers in ``[−m, m]²``.
        max_step: the camera's largest move per axis.
        self_motion: False: the camera never moves.
        static: the digits stand still (``static_po``).
        seed: changes every clip. num_sequences: the length (default 10,000).
        extras: also return the camera centres, the full world frames, the digits'
            positions, velocities and labels (``batch(extras=...)`` overrides it).
        max_redraws: camera paths tried per clip before giving up (a context too short to
            cover the world raises ``RuntimeError``).

    Items (``ds[i]``, batched by :meth:`batch`): ``"views"`` float32 ``(T, 1, w, w)``;
    ``"actions"`` int64 ``(T, 2)`` as ``(dy, dx)``, ``a_0 = 0``. With extras:
    ``"centres"`` ``(T, 2)`` (mod N), ``"world"`` ``(T, 1, N, N)``, ``"positions"``
    ``(T, K, 2)`` (each digit's top-left corner, mod N), ``"velocities"`` ``(K, 2)``,
    ``"labels"`` ``(K,)``.
    """

    def __init__(
        self,
        images: Tensor | np.ndarray | DigitBank,
        world_size: int = 50,
        view_size: int = 32,
        num_digits: int = 5,
        context: int = 50,
        predicted: int = 20,
        max_velocity: int = 1,
        max_step: int = 10,
        self_motion: bool = True,
        static: bool = False,
        seed: int = 0,
        labels: Tensor | None = None,
        num_sequences: int = 10_000,
        extras: bool = False,
        max_redraws: int = 32,
    ):
        if isinstance(images, DigitBank):
            labels = images.labels if labels is None else labels
            images = images.images
        images = torch.as_tensor(images)
        if images.dim() != 3 or images.shape[0] == 0:
            raise ValueError(f"images must be a non-empty digit bank (n, h, w); got "
                             f"{tuple(images.shape)}")
        if images.dtype == torch.uint8:
            pass  # kept as bytes: rendered in uint8, scaled by 1/255 at the end
        elif images.dtype.is_floating_point:
            if images.min() < 0 or images.max() > 1:
                raise ValueError("float digit images must lie in [0, 1]; scale uint8 by 1/255")
            images = images.float()
        else:
            raise ValueError(f"images must be uint8 or float; got {images.dtype}")
        for name, value, low in (("world_size", world_size, 1), ("view_size", view_size, 1),
                                 ("num_digits", num_digits, 1), ("context", context, 1),
                                 ("predicted", predicted, 0), ("max_velocity", max_velocity, 0),
                                 ("max_step", max_step, 0), ("num_sequences", num_sequences, 0),
                                 ("max_redraws", max_redraws, 1)):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if view_size > world_size:
            raise ValueError(f"view_size ({view_size}) must not exceed world_size ({world_size})")
        h, w = images.shape[1:]
        if h > world_size or w > world_size:
            raise ValueError(f"digits of {h}×{w} do not fit a {world_size}×{world_size} world")
        if labels is not None:
            labels = torch.as_tensor(labels).long()
            if labels.shape != (len(images),):
                raise ValueError(f"labels must be ({len(images)},); got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels
        self.world_size, self.view_size = int(world_size), int(view_size)
        self.num_digits = int(num_digits)
        self.context, self.predicted = int(context), int(predicted)
        self.max_velocity, self.max_step = int(max_velocity), int(max_step)
        self.self_motion, self.static = bool(self_motion), bool(static)
        self.seed = int(seed)
        self.num_sequences = int(num_sequences)
        self.extras = bool(extras)
        self.max_redraws = int(max_redraws)
        self._start()

    @classmethod
    def preset(cls, name: str, images, **overrides) -> "MNISTWorld":
        """A benchmark split of :data:`WORLD_PRESETS` (``"dynamic_po"``, ``"static_po"``,
        ``"dynamic_fo"``, ``"dynamic_fo_no_sm"``), with any argument overridden."""
        if name not in WORLD_PRESETS:
            raise ValueError(f"unknown MNIST World preset {name!r}; choose one of "
                             f"{sorted(WORLD_PRESETS)}")
        cfg = dict(WORLD_PRESETS[name])
        if name == "static_po":
            cfg["static"] = True
        cfg.update(overrides)
        return cls(images, **cfg)

    @property
    def seq_len(self) -> int:
        return self.context + self.predicted

    # -- random choices --------------------------------------------------------------------
    def draw(self, indices) -> dict:
        """The digits of each clip: bank index ``(B, K)``, velocity and start ``(B, K, 2)``."""
        keys = self.item_keys(indices)
        B, K, N, m = keys.numel(), self.num_digits, self.world_size, self.max_velocity
        u = hashed_uniform(self.seed, keys, _DIGIT_STREAMS * K).view(B, K, _DIGIT_STREAMS)
        n = len(self.images)
        velocity = torch.stack([_uniform_int(u[..., 1], m), _uniform_int(u[..., 2], m)], -1)
        if self.static:
            velocity = torch.zeros_like(velocity)
        return {
            "digit": (u[..., 0] * n).long().clamp(max=n - 1),
            "velocity": velocity,
            "position": (u[..., 3:5] * N).long().clamp(max=N - 1),
        }

    def camera(self, indices) -> Tensor:
        """The camera moves ``(B, T, 2)`` (``a_0 = 0``) of each clip, redrawn where the
        context did not cover the world (redraw r uses its own stream of numbers)."""
        keys = self.item_keys(indices)
        B, T = keys.numel(), self.seq_len
        actions = torch.zeros(B, T, 2, dtype=torch.long)
        if not self.self_motion:
            return actions
        pending = torch.arange(B)
        for attempt in range(self.max_redraws):
            seed = self.seed + attempt * _REDRAW_SEED
            u = hashed_uniform(seed, keys[pending], _CAMERA_STREAMS * T)
            moves, covered = self._walk(u.view(-1, T, _CAMERA_STREAMS))
            actions[pending] = moves
            pending = pending[~covered]
            if not len(pending):
                return actions
        raise RuntimeError(
            f"the camera did not cover the {self.world_size}×{self.world_size} world within "
            f"context={self.context} frames in {self.max_redraws} tries (view {self.view_size}, "
            f"max_step {self.max_step}); lengthen the context or raise max_step")

    def _walk(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """The coverage-seeking walk for uniforms ``u`` ``(B, T, 3)``: moves ``(B, T, 2)``
        and whether each context covered the world ``(B,)``. Loops over the context's
        frames, vectorised over the clips."""
        B, T = u.shape[:2]
        N, w, s = self.world_size, self.view_size, self.max_step
        steps = torch.stack([_uniform_int(u[..., 1], s), _uniform_int(u[..., 2], s)], -1)
        moves = steps.clone()  # uniform steps: after coverage, and in the prediction segment
        moves[:, 0] = 0
        if self.context < T:
            moves[:, self.context] = 0
        seen = torch.zeros(B, N * N, dtype=torch.bool)
        window = torch.arange(w) - w // 2
        rows_of = torch.arange(B)[:, None, None]
        centre = torch.zeros(B, 2, dtype=torch.long)

        def mark(centre: Tensor) -> None:
            rows = (centre[:, :1] + window).remainder(N)  # (B, w)
            cols = (centre[:, 1:] + window).remainder(N)
            seen.view(B, N, N)[rows_of, rows[:, :, None], cols[:, None, :]] = True

        mark(centre)
        for t in range(1, self.context):
            unseen = ~seen
            count = unseen.sum(1)
            covered = count == 0
            if bool(covered.all()):
                break
            pick = (u[:, t, 0] * count).long().clamp(max=(count - 1).clamp(min=0))
            flat = (unseen.cumsum(1) <= pick[:, None]).sum(1)  # the (pick+1)-th unseen pixel
            target = torch.stack([flat // N, flat % N], -1)
            toward = (target - centre + N // 2).remainder(N) - N // 2  # shortest on the torus
            step = torch.where(covered[:, None], steps[:, t], toward.clamp(-s, s))
            moves[:, t] = step
            centre = (centre + step).remainder(N)
            mark(centre)
        return moves, seen.all(1)

    # -- rendering -------------------------------------------------------------------------
    def _render(self, bank: Tensor, digit: Tensor, start: Tensor, velocity: Tensor,
                centres: Tensor, size: int) -> Tensor:
        """``size×size`` windows centred on ``centres`` ``(B, T, 2)``: ``(B, T, size, size)``
        float in [0, 1], every pixel read from the digit image it falls on (sum over
        digits, clamp).

        Each digit row is laid out twice along a torus-long line (``2N`` pixels, zeros
        where the digit is not), so the ``size`` pixels a view row reads from one digit are
        one contiguous window of one line: one indexed copy per digit for every clip,
        frame and row. uint8 banks are summed in uint8 with saturation (the same as sum,
        then clamp to 255: all terms are non-negative) and scaled once at the end.
        """
        B, T = centres.shape[:2]
        K = digit.shape[1]
        N = self.world_size
        h, w = bank.shape[1:]
        images = bank[digit.flatten()]  # (B·K, h, w)
        lines = images.new_zeros(B * K, h + 1, 2 * N)  # row h: the zero row
        lines[:, :h, :w] = images
        lines[:, :h, N : N + w] = images
        windows = lines.view(B * K * (h + 1), 2 * N).unfold(1, size, 1)  # (B·K·(h+1), ·, size)
        t = torch.arange(T, device=centres.device)
        rows = torch.arange(size, device=centres.device)
        corner = centres - size // 2  # (B, T, 2): the window's top-left world pixel
        out = None
        for k in range(K):
            place = start[:, k, None] + t[None, :, None] * velocity[:, k, None]  # (B, T, 2)
            local = (corner - place).remainder(N)  # digit-local coordinates of the corner
            ly = (local[..., :1] + rows).remainder(N)  # (B, T, size)
            ly = torch.where(ly < h, ly, h)
            line = (torch.arange(B, device=centres.device)[:, None, None] * K + k) * (h + 1) + ly
            pixels = windows[line, local[..., 1:2]]  # (B, T, size, size)
            if out is None:
                out = pixels  # a fresh tensor (advanced indexing copies)
            elif out.dtype == torch.uint8:  # saturating add: min(out, 255 − p) + p
                room = pixels.bitwise_not()  # 255 − p
                out = torch.minimum(out, room, out=room).add_(pixels)
            else:
                out.add_(pixels)
        if out.dtype == torch.uint8:
            return out.to(torch.float32).mul_(1.0 / 255.0)
        return out.clamp_(0.0, 1.0)

    def batch(self, indices, device: torch.device | str | None = None,
              extras: bool | None = None) -> dict:
        """Generate the clips ``indices`` at once, on ``device`` (default CPU)."""
        device = torch.device(device or "cpu")
        extras = self.extras if extras is None else extras
        choice = self.draw(indices)
        actions = self.camera(indices)
        N = self.world_size
        centres = actions.cumsum(1).remainder(N)  # c_0 = 0
        bank = self._bank(device)
        digit = choice["digit"].to(device)
        start, velocity = choice["position"].to(device), choice["velocity"].to(device)
        views = self._render(bank, digit, start, velocity, centres.to(device), self.view_size)
        out = {"views": views.unsqueeze(2), "actions": actions.to(device)}
        if extras:
            B, T = actions.shape[:2]
            middle = torch.full((B, T, 2), N // 2, dtype=torch.long, device=device)
            world = self._render(bank, digit, start, velocity, middle, N)
            t = torch.arange(T, device=device)
            positions = (start[:, None] + t[None, :, None, None] * velocity[:, None]).remainder(N)
            labels = (self.labels[choice["digit"]] if self.labels is not None
                      else torch.full(choice["digit"].shape, -1, dtype=torch.long))
            out.update(centres=centres.to(device), world=world.unsqueeze(2),
                       positions=positions, velocities=velocity, labels=labels.to(device))
        return out
