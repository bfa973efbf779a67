"""Page faults, kernel time and wall time of a CPU training step of the next-step model,
with glibc's malloc as it comes and with ``fernn.tune_cpu_allocator()``.

    python benchmarks/allocator.py                          # batch 8, hidden 32, 10+10 frames
    python benchmarks/allocator.py --batch 16 --rounds 4 --json out.json

Each round runs the two settings in turn, each in a fresh process (the setting is
process-wide), so that the machine's drift hits both alike. A process builds the model,
runs two warm-up steps, then times ``--steps`` steps; per process: the best wall time,
and the median minor page faults and kernel (system) CPU time of a step. Linux only.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

SETTINGS = ("system", "tuned")


def measure(setting: str, batch: int, hidden: int, frames: int, steps: int) -> dict:
    import fernn
    from memory import _training_step

    if setting == "tuned" and not fernn.tune_cpu_allocator():
        raise SystemExit("tune_cpu_allocator: not glibc, nothing to compare")
    step = _training_step(batch, hidden, 2, frames, 0, "cpu")
    step()
    step()
    walls, faults, kernel = [], [], []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        step()
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        faults.append(after.ru_minflt - before.ru_minflt)
        kernel.append(after.ru_stime - before.ru_stime)
    return dict(best_s=min(walls), faults=statistics.median(faults),
                kernel_s=statistics.median(kernel))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--frames", type=int, default=10, help="observed = predicted frames")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (args.batch, args.hidden, args.frames, args.steps)
    if args.child:
        print(json.dumps(measure(args.child, *shape)))
        return

    runs = {s: [] for s in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            cmd = [sys.executable, __file__, "--child", setting, "--batch", str(args.batch),
                   "--hidden", str(args.hidden), "--frames", str(args.frames),
                   "--steps", str(args.steps)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"One training step of fernn_predictor: batch {args.batch}, hidden {args.hidden}, "
          f"V=25, {args.frames}+{args.frames} frames, 28×28, cpu; {args.rounds} rounds, each "
          f"setting in a fresh process per round (best of {args.steps} steps)")
    print(f"{'allocator':>10s} {'page faults':>12s} {'kernel (s)':>11s} {'best (s), per round':>28s}"
          f" {'median best (s)':>16s}")
    summary = {}
    for setting, rows in runs.items():
        summary[setting] = statistics.median(r["best_s"] for r in rows)
        bests = " ".join(f"{r['best_s']:.2f}" for r in rows)
        print(f"{setting:>10s} {statistics.median(r['faults'] for r in rows):12.0f} "
              f"{statistics.median(r['kernel_s'] for r in rows):11.2f} "
              f"{bests:>28s} {summary[setting]:16.2f}")
    ratios = [s["best_s"] / t["best_s"] for s, t in zip(runs["system"], runs["tuned"])]
    print(f"system / tuned time, per round: {' '.join(f'{r:.2f}' for r in ratios)} "
          f"(median {statistics.median(ratios):.2f})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(args=vars(args), runs=runs, ratios=ratios), fh, indent=2)


if __name__ == "__main__":
    main()
