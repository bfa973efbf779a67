"""Peak memory of one training step of the next-step model, with and without activation
checkpointing over time (``checkpoint_every``), each in a fresh process.

    python benchmarks/memory.py --batch 16 --hidden 32            # quick
    python benchmarks/memory.py --batch 128 --hidden 128          # the paper's translation config

Peak memory is that of a second, warm step (the first allocates what every step reuses:
gradients, kernels, thread pools): after it, freed heap is handed back to the OS
(``malloc_trim``) and the peak resident set reset (``/proc/self/clear_refs``); the figure
is the step's peak resident set (``VmHWM``) minus the resident set before it — the
activations and temporaries of one step, as the OS sees them, allocator overheads
included. On CPU a third step, under the profiler, gives the peak of the bytes held by
tensors alone (``tensors``: no allocator overheads, what a GPU run reports); on CUDA
devices ``torch.cuda.max_memory_allocated`` is the only figure. Needs Linux with glibc
on CPU. Times come from one more process, which builds every configuration and times
them in turn, round after round (best of ``--repeats``), so that the machine's drift
hits all alike. glibc's malloc is left as it comes (``--allocator system``, the default:
what the ``fernn`` command line does for a run in memory mode); ``--allocator tuned`` runs
``fernn.tune_cpu_allocator()`` in every process first, whose heap-held memory fragments
(a higher resident peak for the same tensors: docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys

from _timing import interleaved


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> int:
    """Return freed heap to the OS, reset the peak resident set; the resident set now."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM (Linux >= 4.0)
    return _status_bytes("VmRSS")


def _peak_rss() -> int:
    return _status_bytes("VmHWM")


def _training_step(batch, hidden, max_speed, frames, checkpoint_every, device):
    """A closure running one training step of a fresh model (same weights for every k)."""
    import torch

    from fernn.models import get_model

    torch.manual_seed(0)
    model = get_model("fernn_predictor", hidden_channels=hidden, max_speed=max_speed,
                      checkpoint_every=checkpoint_every).to(device)
    x = torch.rand(batch, 2 * frames, 1, 28, 28, device=device)

    def step():
        model.zero_grad(set_to_none=True)
        pred = model(x[:, :frames], frames)
        (pred - x[:, frames:]).square().mean().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return step


def peak_memory(batch, hidden, max_speed, frames, checkpoint_every, device) -> dict:
    """The peak memory of one warm training step (module docstring), in this process."""
    import torch

    step = _training_step(batch, hidden, max_speed, frames, checkpoint_every, device)
    step()  # warm-up: one-time allocations (kernels, thread pools, the gradients)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        return {"peak_bytes": torch.cuda.max_memory_allocated() - before}
    before = _reset_peak_rss()
    step()
    return {"peak_bytes": _peak_rss() - before, "tensor_peak_bytes": _tensor_peak(step)}


def step_times(batch, hidden, max_speed, frames, everys, device, repeats) -> list[float]:
    """Best-of-``repeats`` step time of each ``checkpoint_every``, timed in turn in every
    round (one process), so that the machine's drift hits all of them alike."""
    steps = {k: _training_step(batch, hidden, max_speed, frames, k, device) for k in everys}
    times = interleaved(steps, repeats)
    return [min(times[k]) for k in everys]


def _tensor_peak(step) -> int:
    """Peak of the bytes held by tensors allocated during ``step`` (net of those freed):
    what ``torch.cuda.max_memory_allocated`` measures on a GPU, from the profiler's
    allocation events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--max-speed", type=int, default=2)
    parser.add_argument("--frames", type=int, default=10, help="observed = predicted frames")
    parser.add_argument("--every", type=int, nargs="+", default=[0, 1, 2, 5])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps (best counts)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--allocator", choices=("tuned", "system"), default="system",
                        help="system: glibc's malloc as it comes (default); tuned: "
                             "fernn.tune_cpu_allocator() in every process")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None and args.allocator == "tuned":
        import fernn

        fernn.tune_cpu_allocator()
    shape = (args.batch, args.hidden, args.max_speed, args.frames)
    if args.child == "times":
        print(json.dumps(step_times(*shape, args.every, args.device, args.repeats)))
        return
    if args.child is not None:
        print(json.dumps(peak_memory(*shape, int(args.child), args.device)))
        return

    def child(what: str):
        cmd = [sys.executable, __file__, "--child", what, "--batch", str(args.batch),
               "--hidden", str(args.hidden), "--max-speed", str(args.max_speed),
               "--frames", str(args.frames), "--device", args.device,
               "--repeats", str(args.repeats), "--allocator", args.allocator,
               "--every", *map(str, args.every)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    rows = [dict(checkpoint_every=every, **child(str(every))) for every in args.every]
    for row, seconds in zip(rows, child("times")):
        row["seconds"] = seconds
    plain = rows[0]
    print(f"One training step of fernn_predictor: batch {args.batch}, hidden {args.hidden}, "
          f"V={(2 * args.max_speed + 1) ** 2}, {args.frames}+{args.frames} frames, 28×28, "
          f"{args.device}, {args.allocator} allocator")
    tensors = "tensor_peak_bytes" in plain
    print(f"{'checkpoint_every':>16s} {'peak (GiB)':>11s} {'vs plain':>9s}"
          + (f" {'tensors (GiB)':>14s} {'vs plain':>9s}" if tensors else "")
          + f" {'time (s)':>9s} {'vs plain':>9s}")
    for r in rows:
        line = (f"{r['checkpoint_every']:16d} {r['peak_bytes'] / 2**30:11.2f} "
                f"{r['peak_bytes'] / plain['peak_bytes']:9.2f}")
        if tensors:
            line += (f" {r['tensor_peak_bytes'] / 2**30:14.2f} "
                     f"{r['tensor_peak_bytes'] / plain['tensor_peak_bytes']:9.2f}")
        print(line + f" {r['seconds']:9.2f} {r['seconds'] / plain['seconds']:9.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(args=vars(args), rows=rows), fh, indent=2)


if __name__ == "__main__":
    main()
