"""Atomic file writes: write beside the target, then rename onto it.

A reader (or a run killed mid-write) sees either the old file or the complete new one,
never half of one; if the body of the ``with`` raises, the temporary file is removed and
the target is untouched.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_open"]


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb"):
    """``with atomic_open(path) as fh: ...`` — ``fh`` is a temporary file in ``path``'s
    directory, flushed, synced and renamed onto ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
