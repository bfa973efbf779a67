"""CPU memory: keep freed tensor memory in the process instead of page-faulting it in again.

glibc's ``malloc`` serves every request above its *mmap threshold* with a fresh ``mmap``
and unmaps it on ``free``; the threshold starts at 128 KiB and rises with use, but never
above 32 MiB. It also hands the top of its heap back to the OS above a *trim threshold*.
A training step allocates and frees large tensors (states, their moved copies, gradients)
many times, and every time the kernel zero-fills fresh pages on first touch: a CPU step
of the next-step model (hidden 32, V = 25, 10 + 10 frames) took about 145 000 minor page
faults and 0.65 s of kernel time at batch 8, and 990 000 faults and 4 s at batch 16
(``benchmarks/allocator.py``; docs/benchmarks.md). Raising both thresholds lets freed
memory be reused from the heap: a few faults per step, 1.1-1.5x faster steps, at the
price of a resident set that stays at its high-water mark and of fragmentation (what the
CUDA caching allocator does on a GPU). ``jemalloc`` or ``tcmalloc`` through ``LD_PRELOAD``
do the same for a whole process; this needs nothing installed.

The ``fernn`` command line calls :func:`tune_cpu_allocator` for ``train``, ``eval``,
``demo`` and ``equivariance``, except for a run in memory mode (``checkpoint_every``),
whose point is a low resident peak; ``fernn --system-allocator ...`` leaves malloc alone.
Library users call it themselves.
"""

from __future__ import annotations

import ctypes
import platform

__all__ = ["tune_cpu_allocator"]

# From glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_INT_MAX = 2**31 - 1  # mallopt takes a C int


def _glibc():
    """glibc's handle, or ``None`` on other C libraries (musl, macOS, Windows)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def tune_cpu_allocator(threshold: int = 2**30) -> bool:
    """Serve allocations up to ``threshold`` bytes from glibc's heap and keep freed memory.

    Sets glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` to ``threshold`` (the same
    as the environment variables ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``)
    for the whole process. Tensors larger than ``threshold`` are still mapped afresh.

    Returns ``True`` when the thresholds were set, ``False`` where the C library is not
    glibc (nothing is changed there).
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int) \
            or not 0 < threshold <= _INT_MAX:
        raise ValueError(f"threshold must be an int of bytes in [1, {_INT_MAX}] (mallopt takes "
                         f"a C int); got {threshold!r}")
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold)
                and libc.mallopt(_M_TRIM_THRESHOLD, threshold))
