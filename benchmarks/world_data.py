"""MNIST World generation: fernn's batched generator against a per-item, per-frame
generator written the research way, in the same run, on the same random choices.

Baseline: for every clip, a Python walk of the camera (one numpy step per frame: pick an
unseen pixel, move toward it), then for every frame the world is drawn digit by digit
(``np.roll`` of each placed digit, summed, clipped) and the view cut out of it with
modular indexing. It reads the same uniforms as fernn (``MNISTWorld.draw`` and the camera
streams), so its clips must equal fernn's exactly: checked before timing.

    python benchmarks/world_data.py                  # 256 dynamic_po clips of 70 frames
    python benchmarks/world_data.py --batch 64 --json out.json

The process runs with ``fernn.tune_cpu_allocator()`` (as the ``fernn`` command line does):
the 73 MB float views of a batch then reuse freed memory instead of faulting in fresh pages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import numpy as np
import torch

import fernn
from fernn.data import MNISTWorld, hashed_uniform, load_digits
from fernn.data import _world as world_module

from _timing import interleaved


def research_clip(ds: MNISTWorld, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One clip, the research way: views (T, w, w) and actions (T, 2)."""
    N, w, s, T, ctx = ds.world_size, ds.view_size, ds.max_step, ds.seq_len, ds.context
    choice = ds.draw([index])
    digits = ds.images[choice["digit"][0]].numpy() / np.float32(255.0)  # (K, 28, 28)
    start = choice["position"][0].numpy()
    velocity = choice["velocity"][0].numpy()
    key = torch.tensor([(ds.epoch << 32) + index])
    for attempt in range(ds.max_redraws):  # the camera walk, frame by frame
        u = hashed_uniform(ds.seed + attempt * world_module._REDRAW_SEED, key, 3 * T)
        u = u.view(T, 3).numpy()
        seen = np.zeros((N, N), dtype=bool)
        c = np.zeros(2, dtype=np.int64)
        rows = (c[0] - w // 2 + np.arange(w)) % N
        cols = (c[1] - w // 2 + np.arange(w)) % N
        seen[np.ix_(rows, cols)] = True
        actions = np.zeros((T, 2), dtype=np.int64)
        for t in range(1, T):
            uniform = np.array([min(int(u[t, 1] * (2 * s + 1)), 2 * s) - s,
                                min(int(u[t, 2] * (2 * s + 1)), 2 * s) - s])
            if t == ctx:
                a = np.zeros(2, dtype=np.int64)
            elif t < ctx and not seen.all():
                unseen = np.flatnonzero(~seen)
                k = min(int(u[t, 0] * len(unseen)), len(unseen) - 1)
                target = np.array(divmod(int(unseen[k]), N))
                d = (target - c + N // 2) % N - N // 2
                a = np.clip(d, -s, s)
            else:
                a = uniform
            actions[t] = a
            c = (c + a) % N
            if t < ctx:
                rows = (c[0] - w // 2 + np.arange(w)) % N
                cols = (c[1] - w // 2 + np.arange(w)) % N
                seen[np.ix_(rows, cols)] = True
        if seen.all() or not ds.self_motion:
            break
    views = np.zeros((T, w, w), dtype=np.float32)
    c = np.zeros(2, dtype=np.int64)
    for t in range(T):  # each frame: draw the world, cut the view
        c = (c + actions[t]) % N
        world = np.zeros((N, N), dtype=np.float32)
        for k in range(len(digits)):
            canvas = np.zeros((N, N), dtype=np.float32)
            canvas[: digits.shape[1], : digits.shape[2]] = digits[k]
            p = start[k] + t * velocity[k]
            world += np.roll(canvas, shift=(int(p[0]), int(p[1])), axis=(0, 1))
        np.clip(world, 0.0, 1.0, out=world)
        rows = (c[0] - w // 2 + np.arange(w)) % N
        cols = (c[1] - w // 2 + np.arange(w)) % N
        views[t] = world[np.ix_(rows, cols)]
    return views, actions


def research_batch(ds: MNISTWorld, indices) -> tuple[np.ndarray, np.ndarray]:
    clips = [research_clip(ds, i) for i in indices]
    return np.stack([v for v, _ in clips]), np.stack([a for _, a in clips])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--preset", default="dynamic_po")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    fernn.tune_cpu_allocator()  # as the fernn command line runs; both candidates share it
    bank = load_digits(os.environ.get("FERNN_DIGITS", "mnist-test-split"), "train",
                       fallback="font")
    ds = MNISTWorld.preset(args.preset, bank)
    indices = list(range(args.batch))
    ours = ds.batch(indices)
    views, actions = research_batch(ds, indices)
    assert np.array_equal(ours["actions"].numpy(), actions), "camera paths differ"
    err = float(np.abs(ours["views"][:, :, 0].numpy() - views).max())
    assert err <= 1e-6, f"views differ by {err}"
    times = interleaved({"fernn": lambda: ds.batch(indices),
                         "research": lambda: research_batch(ds, indices)}, args.repeats)
    best = {k: min(v) for k, v in times.items()}
    result = {
        "preset": args.preset, "batch": args.batch, "frames": ds.seq_len,
        "digits": bank.source, "fernn_s": best["fernn"], "research_s": best["research"],
        "speedup": best["research"] / best["fernn"], "max_view_difference": err,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
    }
    print(f"{args.batch} {args.preset} clips of {ds.seq_len} frames ({bank.source} digits): "
          f"fernn {best['fernn']:.3f} s, research-style {best['research']:.3f} s, "
          f"{result['speedup']:.1f}x (outputs equal, max |diff| {err:.1e})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
