"""Data: MNIST (read, checksummed, downloaded), offline digits, Flowing MNIST, KTH
actions under camera motion, and MNIST World (the world-model benchmark).

    >>> from fernn.data import load_mnist, FlowingMNIST
    >>> images, labels = load_mnist(root, split="test")        # uint8 (N, 28, 28), int64 (N,)
    >>> ds = FlowingMNIST(images, flow=fernn.TranslationFlow2D(max_speed=2),
    ...                   num_digits=2, seq_len=20, size=28, seed=0)
    >>> ds[0]["frames"].shape                                   # (T, 1, H, W)
    >>> ds.batch(range(128))["frames"].shape                    # (B, T, 1, H, W), vectorised
"""

from ._flowing import FlowingMNIST
from ._font_digits import render_font_digits
from ._kth import (
    KTH_ACTIONS,
    KTH_MIRRORS,
    KTH_SPLITS,
    KTHClips,
    KTHSequences,
    decode_video,
    download_kth,
    kth_dir,
    load_kth,
    parse_sequences_file,
)
from ._mnist import MNIST_FILES, MNIST_MD5, MNIST_MIRRORS, download_mnist, load_mnist, mnist_dir
from ._random import hashed_uniform
from ._sources import DIGIT_SOURCES, DigitBank, load_digits
from ._world import WORLD_PRESETS, MNISTWorld

# The datasets `fernn download NAME` fetches: name -> download(root) -> its directory.
DATASETS = {"mnist": download_mnist, "kth": download_kth}

__all__ = [
    "DATASETS",
    "DIGIT_SOURCES",
    "DigitBank",
    "FlowingMNIST",
    "KTHClips",
    "KTHSequences",
    "KTH_ACTIONS",
    "KTH_MIRRORS",
    "KTH_SPLITS",
    "MNISTWorld",
    "WORLD_PRESETS",
    "decode_video",
    "download_mnist",
    "download_kth",
    "kth_dir",
    "load_kth",
    "parse_sequences_file",
    "MNIST_FILES",
    "MNIST_MD5",
    "MNIST_MIRRORS",
    "hashed_uniform",
    "load_digits",
    "load_mnist",
    "mnist_dir",
    "render_font_digits",
]
