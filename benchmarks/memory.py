"""Peak memory of one training step of the next-step model, with and without activation
checkpointing over time (``checkpoint_every``), each in a fresh process.

    python benchmarks/memory.py --batch 16 --hidden 32            # quick
    python benchmarks/memory.py --batch 128 --hidden 128          # the paper's translation config

Peak memory is the process's peak resident set (``ru_maxrss``) minus its size just before
the step (model, optimizer and data already allocated): the activations and gradients of
the step, taken on the first step; the time is that of a second, warm step. On CUDA devices ``torch.cuda.max_memory_allocated`` is used instead.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one_step(batch, hidden, max_speed, frames, checkpoint_every, device):
    import torch

    from fernn.models import get_model

    torch.manual_seed(0)
    model = get_model("fernn_predictor", hidden_channels=hidden, max_speed=max_speed,
                      checkpoint_every=checkpoint_every).to(device)
    x = torch.rand(batch, 2 * frames, 1, 28, 28, device=device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def step():
        model.zero_grad(set_to_none=True)
        pred = model(x[:, :frames], frames)
        (pred - x[:, frames:]).square().mean().backward()
        if cuda:
            torch.cuda.synchronize()

    step()  # the peak is taken on the first step ...
    if cuda:
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    start = time.perf_counter()
    step()  # ... the time on the second (warm)
    return {"seconds": time.perf_counter() - start, "peak_bytes": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--max-speed", type=int, default=2)
    parser.add_argument("--frames", type=int, default=10, help="observed = predicted frames")
    parser.add_argument("--every", type=int, nargs="+", default=[0, 1, 2, 5])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(one_step(args.batch, args.hidden, args.max_speed, args.frames,
                                  args.child, args.device)))
        return
    rows = []
    for every in args.every:
        cmd = [sys.executable, __file__, "--child", str(every), "--batch", str(args.batch),
               "--hidden", str(args.hidden), "--max-speed", str(args.max_speed),
               "--frames", str(args.frames), "--device", args.device]
        result = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True)
                            .stdout.strip().splitlines()[-1])
        rows.append(dict(checkpoint_every=every, **result))
    plain = rows[0]
    print(f"One training step of fernn_predictor: batch {args.batch}, hidden {args.hidden}, "
          f"V={(2 * args.max_speed + 1) ** 2}, {args.frames}+{args.frames} frames, 28×28, "
          f"{args.device}")
    print(f"{'checkpoint_every':>16s} {'peak (GiB)':>11s} {'vs plain':>9s} {'time (s)':>9s} {'vs plain':>9s}")
    for r in rows:
        print(f"{r['checkpoint_every']:16d} {r['peak_bytes'] / 2**30:11.2f} "
              f"{r['peak_bytes'] / plain['peak_bytes']:9.2f} {r['seconds']:9.2f} "
              f"{r['seconds'] / plain['seconds']:9.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(args=vars(args), rows=rows), fh, indent=2)


if __name__ == "__main__":
    main()
