"""Flowing MNIST generation: the vectorised batch path against straightforward generation.

The baseline is what research code does: for every sequence, every digit and every frame,
a ``torch.roll`` of the placed digit, summed and clipped. Both produce the same frames
(checked here, bit for bit). Prints a table and writes JSON.

    python benchmarks/flowing_mnist.py [--sequences 512] [--frames 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
from _timing import timed

import fernn
from fernn.data import FlowingMNIST, load_digits


def baseline(ds: FlowingMNIST, indices) -> torch.Tensor:
    """Per-item, per-digit, per-frame generation with torch.roll (the research-code way)."""
    choice = ds.draw(indices)
    T, S = ds.seq_len, ds.size
    out = torch.zeros(len(indices), T, 1, S, S)
    h, w = ds.images.shape[1:]
    for b in range(len(indices)):
        for d in range(ds.num_digits):
            canvas = torch.zeros(S, S)
            canvas[:h, :w] = ds.images[choice["digit"][b, d]]
            py, px = choice["position"][b, d].tolist()
            vy, vx = ds.velocity_set[choice["velocity"][b, d]].tolist()
            for t in range(T):
                out[b, t, 0] += torch.roll(canvas, (py + t * vy, px + t * vx), (0, 1))
    return out.clamp_(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=512)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--source", default="mnist-test-split",
                        help="digit source (mnist, mnist-test-split, font)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    bank = load_digits(args.source, "train", fallback="font")
    flow = fernn.TranslationFlow2D(max_speed=2)
    ds = FlowingMNIST(bank, flow, num_digits=2, seq_len=args.frames, size=28, seed=0)
    indices = list(range(args.sequences))
    fast = ds.batch(indices)["frames"]
    slow = baseline(ds, indices)
    assert torch.equal(fast, slow), "batch path and baseline disagree"

    t_fast = timed(lambda: ds.batch(indices), args.repeats)
    t_slow = timed(lambda: baseline(ds, indices), max(1, args.repeats // 3))
    seqs = args.sequences
    rows = [
        ("baseline (loop of torch.roll)", t_slow, seqs / t_slow),
        ("FlowingMNIST.batch", t_fast, seqs / t_fast),
    ]
    print(f"Flowing MNIST, {seqs} sequences × {args.frames} frames, 2 digits, 28×28, "
          f"digits: {bank.source}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    print(f"{'method':32s} {'time (s)':>10s} {'seq/s':>10s}")
    for name, t, rate in rows:
        print(f"{name:32s} {t:10.3f} {rate:10.0f}")
    print(f"speed-up: {t_slow / t_fast:.1f}×")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"sequences": seqs, "frames": args.frames, "baseline_s": t_slow,
                       "batch_s": t_fast, "speedup": t_slow / t_fast,
                       "threads": torch.get_num_threads(), "torch": torch.__version__}, fh, indent=2)


if __name__ == "__main__":
    main()
