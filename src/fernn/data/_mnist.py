"""MNIST: the standard IDX files, checksummed, found locally or downloaded atomically.

Where files are looked for: the ``root`` argument if given; else ``$FERNN_DATA`` and then
the cache ``$XDG_CACHE_HOME/fernn/mnist`` (``~/.cache/fernn/mnist``); in each, the
directory itself and its ``mnist/`` subdirectory. Missing files are downloaded into
``root`` if given, else into the cache (``$FERNN_DATA`` is only read). Gzipped files are verified against the official
MD5 sums; raw (uncompressed) files are verified by their IDX header and size. Missing
files are downloaded (when allowed) from the usual public mirrors into the directory,
through a temporary file that is checked before it is renamed into place, so nothing
half-written is ever left behind; a mirror that fails or serves a corrupt file is
skipped for the next.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._download import cache_dir, download_file, md5sum

__all__ = ["load_mnist", "mnist_dir", "MNIST_FILES", "MNIST_MD5", "MNIST_MIRRORS"]

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_SIZES = {"train": 60000, "test": 10000}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_IDX_MAGIC = {3: 2051, 1: 2049}  # images (N, rows, cols), labels (N,)


def mnist_dir(root: str | os.PathLike | None = None) -> Path:
    """The directory MNIST is downloaded into: ``root`` if given, else the cache."""
    if root is not None:
        return Path(root).expanduser()
    return cache_dir("mnist")


def _search_dirs(root) -> list[Path]:
    if root is not None:
        return [Path(root).expanduser()]
    env = os.environ.get("FERNN_DATA")
    return ([Path(env).expanduser()] if env else []) + [mnist_dir()]


def _find(directories: list[Path], name: str) -> Path | None:
    """The gzipped file or its raw form, in a directory or its ``mnist/`` subdirectory."""
    for directory in directories:
        for folder in (directory, directory / "mnist"):
            for candidate in (folder / name, folder / name[: -len(".gz")]):
                if candidate.is_file():
                    return candidate
    return None


def _read_idx(path: Path, ndim: int, count: int) -> np.ndarray:
    """Parse an IDX file of ``count`` items with ``ndim`` dimensions; ``ValueError`` if malformed."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path} is corrupt or truncated ({exc}); delete it and retry") from None
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path} is truncated: {len(data)} bytes, no IDX header")
    magic, *dims = struct.unpack(f">{1 + ndim}i", data[:header])
    if magic != _IDX_MAGIC[ndim]:
        raise ValueError(f"{path} is not an IDX file of {ndim}-D items (magic {magic})")
    if dims[0] != count:
        raise ValueError(f"{path} holds {dims[0]} items; the MNIST split has {count}")
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise ValueError(f"{path} is truncated or padded: {len(data)} bytes, expected {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _verify(path: Path) -> None:
    if path.suffix == ".gz":
        actual = md5sum(path)
        if actual != MNIST_MD5[path.name]:
            raise ValueError(
                f"{path} fails its checksum (md5 {actual}, official {MNIST_MD5[path.name]}); "
                "the file is corrupt or not the official one: delete it and retry"
            )


def _download(name: str, directory: Path, mirrors, progress: bool) -> Path:
    """Fetch ``name`` into ``directory`` from the first mirror that serves it intact."""
    return download_file(name, directory / name, mirrors, md5=MNIST_MD5[name], progress=progress)


def load_mnist(
    root: str | os.PathLike | None = None,
    split: str = "test",
    download: bool = True,
    mirrors=MNIST_MIRRORS,
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """Load an MNIST split as ``uint8 (N, 28, 28)`` images and ``int64 (N,)`` labels.

    Args:
        root: directory of the IDX files (default: ``$FERNN_DATA`` or the cache).
        split: ``"train"`` (60000) or ``"test"`` (10000); only that split's two files are needed.
        download: fetch missing files from ``mirrors`` into the directory.
        mirrors: base URLs tried in order (``file://`` URLs work too).
        progress: show a progress bar while downloading.

    Raises:
        FileNotFoundError: files missing and not downloadable (names the directory and files).
        ValueError: a file fails its checksum or is malformed (names the file).
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_FILES)}, got {split!r}")
    searched = _search_dirs(root)
    directory = mnist_dir(root)  # where downloads go
    where = " or ".join(str(d) for d in searched)
    paths = {name: _find(searched, name) for name in MNIST_FILES[split]}
    missing = [name for name, path in paths.items() if path is None]
    if missing and download:
        errors = []
        for name in missing:
            try:
                paths[name] = _download(name, directory, mirrors, progress)
            except RuntimeError as exc:
                errors.append(str(exc))
        missing = [name for name, path in paths.items() if path is None]
        if missing:
            raise FileNotFoundError(
                f"MNIST {split} files {missing} are not in {where} and could not be "
                f"downloaded into {directory} (offline?). Put the files there, or point "
                "FERNN_DATA (or root=) at a directory that holds them. Download errors:\n"
                + "\n".join(errors)
            )
    elif missing:
        raise FileNotFoundError(
            f"MNIST {split} files {missing} are not in {where} (nor their mnist/ "
            "subdirectories); put them there, point FERNN_DATA (or root=) at a directory that "
            "holds them, or allow download=True."
        )
    image_path, label_path = (paths[name] for name in MNIST_FILES[split])
    for path in (image_path, label_path):
        _verify(path)
    count = MNIST_SIZES[split]
    images = _read_idx(image_path, 3, count)
    labels = _read_idx(label_path, 1, count)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def download_mnist(root: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Download (or verify) both MNIST splits into ``root`` (default: the cache); returns
    the directory."""
    for split in ("train", "test"):
        load_mnist(root, split=split, download=True, progress=progress)
    return mnist_dir(root)
