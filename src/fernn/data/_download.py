"""Downloads and the cache directory, shared by every dataset.

A file is fetched from the first mirror that serves it whole (and, where a checksum is
known, intact) through a temporary file beside the target, renamed into place only then:
a failed or interrupted download never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path
from typing import Sequence

from .._atomic import atomic_open, remove_stale_temporaries

__all__ = ["cache_dir", "download_file", "md5sum", "mirror_url"]

STALE_DOWNLOAD_SECONDS = 24 * 3600
"""Temporary files of downloads into the target's directory untouched for this long are
left over from interrupted downloads, and removed at the next download there."""


def cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/fernn/<name>`` (``~/.cache/fernn/<name>``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fernn" / name


def md5sum(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mirror_url(mirror: str, name: str) -> str:
    """``mirror`` joined with the file ``name``: ``https://host/mnist`` and
    ``https://host/mnist/`` both give ``https://host/mnist/<name>``."""
    return mirror + name if mirror.endswith("/") else f"{mirror}/{name}"


def download_file(
    name: str,
    target: str | os.PathLike,
    mirrors: Sequence[str],
    md5: str | None = None,
    progress: bool = True,
) -> Path:
    """Fetch ``mirror/name`` into ``target`` from the first mirror that serves it (whole,
    and matching ``md5`` when given); ``file://`` mirrors work too.

    Raises:
        RuntimeError: every mirror failed; the message lists each URL and its error.
    """
    target = Path(target)
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    # What earlier interrupted downloads left here (a day untouched: none is in progress).
    remove_stale_temporaries(target.parent, recursive=False, older_than=STALE_DOWNLOAD_SECONDS)
    failures = []
    for mirror in mirrors:
        url = mirror_url(mirror, name)
        try:
            with atomic_open(target) as out, urllib.request.urlopen(url, timeout=60) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                digest = hashlib.md5()
                bar = None
                if progress:
                    from tqdm.auto import tqdm

                    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {name}")
                received = 0
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    if bar is not None:
                        bar.update(len(block))
                if bar is not None:
                    bar.close()
                if total is not None and received != total:
                    raise ValueError(f"truncated: {received} of {total} bytes")
                if md5 is not None and digest.hexdigest() != md5:
                    raise ValueError(f"checksum mismatch (md5 {digest.hexdigest()}, expected {md5})")
            return target
        except Exception as exc:  # any failure: next mirror; nothing is left behind
            failures.append(f"{url}: {exc}")
    raise RuntimeError(f"could not download {name} into {target.parent}:\n  " + "\n  ".join(failures))
