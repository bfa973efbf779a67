"""Timing shared by the benchmarks: best of ``repeats`` after warm-up runs, alone or in
turn with other candidates."""

import time


def timed(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def interleaved(steps: dict, repeats: int, sync=lambda: None) -> dict:
    """Times of each step in every round, the candidates timed in turn (A B C A B C ...) so
    that a drift of the machine's speed affects them alike."""
    for fn in steps.values():
        fn()  # warm-up
    sync()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return times
