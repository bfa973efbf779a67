"""CPU time of one training step of each KTH (Table 2) model at the paper's size.

One step as `fernn train kth_*` runs it: forward on a batch of clips, cross-entropy, backward,
Adam. Paper size (FERNN.md §5): batch 32, 16 frames of 32×32 grayscale, hidden 128, V2
(25 velocities) / V1 (9) / the G-RNN (1); the 3D-CNN at base width 16. Inputs are random
(the step's cost does not depend on them). Each model runs in its own process, so that
each reports its own peak resident memory (``ru_maxrss``). Baseline: the 3D-CNN's step,
measured in the same run; a 2048² fp32 matmul timed in each model's process just before
its steps gives the machine's rate at that moment (its speed drifts within minutes), and
"/ matmul" is the model's FLOP rate (3× the forward's FLOPs as PyTorch's FlopCounterMode
counts them) over it.

    python benchmarks/kth_step.py                      # all five models, 1 thread
    python benchmarks/kth_step.py --models grnn cnn3d --batch 8 --json out.json

A step that takes longer than ``--long`` seconds is timed once (its first run; what a
first run costs extra — allocations, kernel selection — is well under 1% of such a step);
shorter steps are the best of ``--repeats`` after one warm-up. ``--micro-batch`` splits a
model's batch into chunks whose gradients are accumulated before the one Adam step (the
same arithmetic but for BatchNorm's statistics, which are then per chunk): by default the
G-RNN+, whose learned transport runs frame by frame under autograd and would keep about
2 GiB of activations per frame at batch 32.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import fernn
from fernn.models import get_model

from _timing import timed

# The model_options of the shipped Table 2 configs (src/fernn/configs/kth_*.toml), with the
# 3D-CNN at the research model's base width 16.
MODELS = {
    "cnn3d": ("cnn3d_classifier", {"base_channels": 16}),
    "grnn": ("grnn_classifier", {"hidden_channels": 128}),
    "fernn_v1": ("fernn_classifier", {"hidden_channels": 128, "max_speed": 1}),
    "fernn_v2": ("fernn_classifier", {"hidden_channels": 128, "max_speed": 2}),
    "grnn_plus": ("grnn_plus_classifier", {"hidden_channels": 128, "max_speed": 2}),
}
MICRO_BATCH = {"grnn_plus": 8}
MATMUL_N = 2048
STEPS_PER_EPOCH = 48  # ≈ 1,530 training sequences (persons 1–16), one clip each, batch 32


def make_step(model, x, labels, micro: int):
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        for start in range(0, x.shape[0], micro):
            logits = model(x[start : start + micro])
            loss = F.cross_entropy(logits, labels[start : start + micro], reduction="sum")
            (loss / x.shape[0]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return step


def counted_flops(model, x) -> float:
    """3× the forward's FLOPs (convolutions and matmuls, as FlopCounterMode counts them;
    the backward's input and weight gradients cost about one forward each). The forward
    only: FlopCounterMode counts the backward of the G-RNN+'s depthwise (grouped) transport
    convolution as if it were dense (540 instead of ~8 GFLOP for one 4-frame clip). Counted
    on one clip and scaled by the batch (the step is linear in it)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(x[:1])  # with autograd on: the training path (the fused recurrence)
    return 3.0 * float(counter.get_total_flops()) * x.shape[0]


def measure_one(name: str, args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset, options = MODELS[name]
    model = get_model(preset, **options)
    model.train()
    x = torch.rand(args.batch, args.frames, 1, args.size, args.size)
    labels = torch.randint(6, (args.batch,))
    micro = args.micro_batch or MICRO_BATCH.get(name, args.batch)
    flops = counted_flops(model, x)
    a, b = (torch.randn(MATMUL_N, MATMUL_N) for _ in range(2))
    matmul_s = timed(lambda: a @ b, repeats=5)
    step = make_step(model, x, labels, min(micro, args.batch))
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    best, runs = first, 1
    if first <= args.long:
        best, runs = timed(step, repeats=args.repeats, warmup=0), 1 + args.repeats
    matmul_gflops = 2 * MATMUL_N**3 / matmul_s / 1e9
    return dict(model=name, preset=preset, options=options,
                parameters=sum(p.numel() for p in model.parameters()),
                batch=args.batch, micro_batch=min(micro, args.batch), step_s=best,
                steps_timed=runs, flops=flops, gflops=flops / best / 1e9,
                matmul_gflops=matmul_gflops, peak_fraction=flops / best / 1e9 / matmul_gflops,
                peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                hours_500_epochs=best * STEPS_PER_EPOCH * 500 / 3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long", type=float, default=30.0,
                        help="a step longer than this (s) is timed once")
    parser.add_argument("--micro-batch", type=int, default=0,
                        help="accumulate gradients over chunks of this many clips (0: per-model "
                             f"default, {MICRO_BATCH} else whole)")
    parser.add_argument("--allocator", choices=("tuned", "system"), default="tuned")
    parser.add_argument("--json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one model
    args = parser.parse_args()
    if args.allocator == "tuned":
        fernn.tune_cpu_allocator()
    if args.one:
        print(json.dumps(measure_one(args.one, args)))
        return
    rows = []
    passed = ["--batch", args.batch, "--frames", args.frames, "--size", args.size, "--threads",
              args.threads, "--repeats", args.repeats, "--long", args.long, "--micro-batch",
              args.micro_batch, "--allocator", args.allocator]
    for name in args.models:
        out = subprocess.run([sys.executable, __file__, *map(str, passed), "--one", name],
                             check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  {name}: {rows[-1]['step_s']:.2f} s", file=sys.stderr, flush=True)
    base = next((r["step_s"] for r in rows if r["model"] == "cnn3d"), None)
    print(f"torch {torch.__version__}, {platform.machine()}, {args.threads} thread(s), batch "
          f"{args.batch}, {args.frames} frames of {args.size}×{args.size}, {args.allocator} "
          f"allocator")
    print("| model | parameters | micro-batch | step (s) | × 3D-CNN | TFLOP / step | GFLOP/s | "
          "matmul (GFLOP/s) | / matmul | peak RSS (GiB) | 500 epochs (h) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['step_s'] / base:.1f}×" if base else "—"
        print(f"| {r['model']} | {r['parameters']:,} | {r['micro_batch']} | {r['step_s']:.2f} | "
              f"{ratio} | {r['flops'] / 1e12:.2f} | {r['gflops']:.1f} | {r['matmul_gflops']:.1f} | "
              f"{100 * r['peak_fraction']:.0f}% | {r['peak_rss_gib']:.2f} | "
              f"{r['hours_500_epochs']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(torch=torch.__version__, machine=platform.machine(),
                           threads=args.threads, rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
