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

__all__ = ["atomic_open", "remove_stale_temporaries"]


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


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (``.NAME.*.part``) that interrupted :func:`atomic_open`
    writes left anywhere under ``directory``; returns them. Only for a directory this
    process owns (a run directory under its lock): a live writer's file would go too."""
    removed = []
    for path in Path(directory).rglob(".*.part"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
