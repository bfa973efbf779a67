"""Atomic file writes: write beside the target, then rename onto it.

A reader (or a run killed mid-write) sees either the old file or the complete new one,
never half of one; if the body of the ``with`` raises, the temporary file is removed and
the target is untouched.

The temporary file of ``dir/name`` is ``dir/.name.<token>.part`` (``<token>``: 16 random
hex digits; 8 or more of ``[a-z0-9_]`` for files of earlier versions): a write killed
between creating it and renaming it leaves such a file behind, recognised by
:func:`is_temporary` and removed by :func:`remove_stale_temporaries`.

File modes are those of an ordinary ``open(path, "w")``: a new file gets ``0o666`` less the
process umask (``0644`` under the usual ``022``); a file that is replaced keeps its mode.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import time
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_open", "is_temporary", "remove_stale_temporaries", "TEMPORARY_PATTERN"]

TEMPORARY_PATTERN = re.compile(r"^\.(?P<target>.+)\.(?P<token>[a-z0-9_]{8,})\.part$")
"""The name of an :func:`atomic_open` temporary file; ``target`` is the file it was for."""

_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
          | getattr(os, "O_CLOEXEC", 0))


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path``'s name is that of an :func:`atomic_open` temporary file."""
    return TEMPORARY_PATTERN.match(Path(path).name) is not None


def _create_temporary(path: Path) -> tuple[int, Path]:
    """Create ``.name.<token>.part`` beside ``path`` exclusively, with the mode an ordinary
    new file would get (``0o666`` less the umask, applied by the system)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.part"
        try:
            return os.open(tmp, _FLAGS, 0o666), tmp
        except FileExistsError:  # a 64-bit token collided: draw another
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb"):
    """``with atomic_open(path) as fh: ...`` — ``fh`` is a temporary file in ``path``'s
    directory, flushed, synced and renamed onto ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        keep = stat.S_IMODE(os.stat(path).st_mode)  # a replaced file keeps its mode
    except FileNotFoundError:
        keep = None
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, mode) as fh:
            if keep is not None and hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), keep)
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(directory: str | os.PathLike, *, recursive: bool = True,
                             older_than: float = 0.0) -> list[Path]:
    """Remove the temporary files that interrupted :func:`atomic_open` writes left in
    ``directory`` (and its subdirectories, unless ``recursive=False``); returns them.

    Only regular files named like :data:`TEMPORARY_PATTERN` are removed (symbolic links
    are neither followed nor removed). Call it where no other process writes — e.g. in
    a run directory while holding its lock: a write still in progress would lose its
    temporary file and fail at its rename (loudly, never leaving a half-written target).
    ``older_than`` (seconds) keeps the files modified more recently than that, for
    directories that others may be writing to (a shared download cache). A directory
    that does not exist holds nothing to remove.
    """
    directory = Path(directory)
    if not directory.exists():
        return []
    if not directory.is_dir():
        raise NotADirectoryError(f"remove_stale_temporaries needs a directory, got {directory}")
    cutoff = time.time() - older_than
    removed = []
    for root, dirs, files in os.walk(directory):
        for name in files:
            if TEMPORARY_PATTERN.match(name) is None:
                continue
            candidate = Path(root) / name
            try:
                info = os.lstat(candidate)
                if not stat.S_ISREG(info.st_mode) or (older_than and info.st_mtime > cutoff):
                    continue
                os.unlink(candidate)
            except FileNotFoundError:  # gone meanwhile (its writer finished or cleaned up)
                continue
            removed.append(candidate)
        if not recursive:
            break
    return sorted(removed)
