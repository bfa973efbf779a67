"""KTH human actions (Schüldt, Laptev & Caputo 2004): read, decode, cache, split, clip.

The dataset as distributed: six action folders (``boxing/``, ``handclapping/``, ...)
of ``personXX_action_dY_uncomp.avi`` files (25 persons × 6 actions × 4 scenarios; the
official archive lacks ``person13_handclapping_d3``, so 599 videos), and
``00sequences.txt``, which splits each video into its repetitions of the action::

    person01_boxing_d1		frames	1-95, 96-185, 186-245, 246-360

Each such frame range (1-based, inclusive) is one *sequence* here. Videos are decoded
with PyAV (``pip install fernn[video]``), converted to grayscale, resized to
``size × size`` with antialiasing, and the frames of every sequence are cached as one
``uint8`` array file (``.npz``, written atomically, read without pickle) after the first
pass. Persons 1–16 train, 17–20 validate, 21–25 test (FERNN.md §5).

Clips (:class:`KTHClips`) take ``clip_frames`` frames every ``frame_step``-th frame of a
sequence and are moved by a translation flow — the camera pans at a constant integer
velocity drawn per clip, the frame at clip time ``t`` shifted by ``t·v`` on the torus —
with random horizontal flips for training. Item draws are counter-based (a pure function
of seed, epoch and item), so runs are reproducible and resumable.
"""

from __future__ import annotations

import io
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._atomic import atomic_open
from .._flows import TranslationFlow2D
from ._download import cache_dir, download_file, md5sum
from ._random import hashed_uniform

__all__ = [
    "KTH_ACTIONS",
    "KTH_SPLITS",
    "KTH_MIRRORS",
    "KTHSequences",
    "KTHClips",
    "decode_video",
    "download_kth",
    "kth_dir",
    "load_kth",
    "parse_sequences_file",
]

KTH_ACTIONS = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
KTH_SPLITS = {"train": range(1, 17), "val": range(17, 21), "test": range(21, 26)}
KTH_MIRRORS = ("http://www.csc.kth.se/cvap/actions/",)
SEQUENCES_FILE = "00sequences.txt"
# Listed in 00sequences.txt or expected by name but absent from the official archive.
KNOWN_MISSING = frozenset({"person13_handclapping_d3"})
_CACHE_VERSION = 1
_NAME = r"person(\d\d)_([a-z]+)_d([1-4])"
_LINE = re.compile(rf"^({_NAME})\s+frames\s+(.*)$")
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def kth_dir(root: str | os.PathLike | None = None) -> Path:
    """Where KTH is looked for: ``root``, else ``$FERNN_DATA/kth``, else the cache
    ``~/.cache/fernn/kth`` (also where :func:`download_kth` puts it by default)."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("FERNN_DATA")
    if env and (Path(env).expanduser() / "kth").is_dir():
        return Path(env).expanduser() / "kth"
    return cache_dir("kth")


def parse_sequences_file(path: str | os.PathLike) -> dict[str, list[tuple[int, int]]]:
    """``00sequences.txt`` → video name → ``[(first, last), ...]`` (1-based, inclusive).

    Header and blank lines are skipped; a line that names a video but cannot be read
    raises ``ValueError`` naming the file and line.
    """
    path = Path(path)
    table: dict[str, list[tuple[int, int]]] = {}
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = raw.strip()
        if not line.startswith("person"):
            continue
        where = f"{path}:{number}"
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"{where}: cannot read {line!r}; expected "
                             "'personXX_action_dY  frames  a-b, c-d, ...'")
        name, action = match.group(1), match.group(3)
        if action not in KTH_ACTIONS:
            raise ValueError(f"{where}: unknown action {action!r}; KTH has {KTH_ACTIONS}")
        ranges = []
        for part in filter(None, (p.strip() for p in match.group(5).split(","))):
            span = _RANGE.match(part)
            if span is None:
                raise ValueError(f"{where}: {part!r} is not a frame range 'first-last'")
            first, last = int(span.group(1)), int(span.group(2))
            if not 1 <= first <= last:
                raise ValueError(f"{where}: frame range {part!r} is empty or starts before 1")
            ranges.append((first, last))
        if not ranges:
            raise ValueError(f"{where}: {name} lists no frame ranges")
        if name in table:
            raise ValueError(f"{where}: {name} is listed twice")
        table[name] = ranges
    if not table:
        raise ValueError(f"{path} lists no KTH videos; is it the dataset's {SEQUENCES_FILE}?")
    return table


def decode_video(path: str | os.PathLike, size: int = 32) -> Tensor:
    """All frames of a video, grayscale, resized (antialiased) to ``size × size``:
    ``uint8 (T, size, size)``."""
    try:
        import av
    except ImportError:
        raise ImportError("decoding KTH videos needs PyAV: pip install 'fernn[video]'") from None
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise ValueError(f"cannot decode {path}: {exc}") from exc
    if not frames:
        raise ValueError(f"{path} holds no video frames")
    x = torch.from_numpy(np.stack(frames)).float()[:, None]  # (T, 1, h, w)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[:, 0].round().clamp(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class KTHSequences:
    """The frames of KTH's action sequences, concatenated.

    ``frames`` ``uint8 (N, S, S)``; per sequence ``m``: its frames are
    ``frames[offsets[m] : offsets[m] + lengths[m]]``, class ``labels[m]`` (index into
    :data:`KTH_ACTIONS`), ``persons[m]``, ``scenarios[m]``.
    """

    frames: Tensor
    offsets: Tensor
    lengths: Tensor
    labels: Tensor
    persons: Tensor
    scenarios: Tensor

    def __len__(self) -> int:
        return len(self.offsets)

    def select(self, mask: Tensor) -> "KTHSequences":
        """The sequences where ``mask`` holds (frames are shared, not copied)."""
        return KTHSequences(self.frames, self.offsets[mask], self.lengths[mask],
                            self.labels[mask], self.persons[mask], self.scenarios[mask])

    def split(self, part: str) -> "KTHSequences":
        """``"train"`` (persons 1–16), ``"val"`` (17–20) or ``"test"`` (21–25)."""
        if part not in KTH_SPLITS:
            raise ValueError(f"part must be one of {sorted(KTH_SPLITS)}, got {part!r}")
        persons = torch.tensor(list(KTH_SPLITS[part]))
        return self.select(torch.isin(self.persons, persons))


def _video_path(directory: Path, name: str) -> Path | None:
    action = name.split("_")[1]
    for candidate in (directory / action / f"{name}_uncomp.avi", directory / f"{name}_uncomp.avi"):
        if candidate.is_file():
            return candidate
    return None


def _build(directory: Path, size: int, progress: bool) -> dict[str, np.ndarray]:
    table = parse_sequences_file(directory / SEQUENCES_FILE)
    paths = {name: _video_path(directory, name) for name in table}
    missing = [n for n, path in paths.items() if path is None and n not in KNOWN_MISSING]
    if missing:
        shown = ", ".join(f"{n}_uncomp.avi" for n in missing[:5])
        raise FileNotFoundError(
            f"{len(missing)} video(s) listed in {directory / SEQUENCES_FILE} are missing from "
            f"{directory}/<action>/: {shown}{' ...' if len(missing) > 5 else ''}. Unpack the six "
            "action archives there (`fernn download kth` fetches them)."
        )
    names = [n for n, path in paths.items() if path is not None]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(names), desc=f"decoding KTH to {size}×{size}", unit="video")
    chunks, lengths, labels, persons, scenarios = [], [], [], [], []
    clipped = 0
    for name in names:
        video = decode_video(paths[name], size)
        person, action, scenario = re.fullmatch(_NAME, name).groups()
        for first, last in table[name]:
            if first > len(video):
                raise ValueError(f"{directory / SEQUENCES_FILE}: {name} range {first}-{last} "
                                 f"starts after the video's last frame ({len(video)})")
            clipped += last > len(video)
            part = video[first - 1 : min(last, len(video))]
            chunks.append(part)
            lengths.append(len(part))
            labels.append(KTH_ACTIONS.index(action))
            persons.append(int(person))
            scenarios.append(int(scenario))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if clipped:
        warnings.warn(f"KTH: {clipped} frame range(s) of {SEQUENCES_FILE} end past their video; "
                      "they were cut at the video's last frame", stacklevel=3)
    lengths_np = np.asarray(lengths, dtype=np.int64)
    return {
        "frames": torch.cat(chunks).numpy(),
        "offsets": np.concatenate([[0], np.cumsum(lengths_np)[:-1]]).astype(np.int64),
        "lengths": lengths_np,
        "labels": np.asarray(labels, dtype=np.int64),
        "persons": np.asarray(persons, dtype=np.int64),
        "scenarios": np.asarray(scenarios, dtype=np.int64),
    }


def load_kth(
    root: str | os.PathLike | None = None,
    size: int = 32,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> KTHSequences:
    """Load KTH's action sequences at ``size × size``, decoding the videos on the first
    call and reading the cached array file after.

    Args:
        root: the dataset directory (``00sequences.txt`` and the action folders); default
            :func:`kth_dir`.
        size: frame height and width.
        cache: the cache file (default ``<root>/fernn_kth_<size>px.npz``, or the user cache
            if ``root`` is read-only). It records the checksum of ``00sequences.txt`` and is
            rebuilt when that changes.

    Raises:
        FileNotFoundError: no ``00sequences.txt``, or listed videos missing (names them).
        ValueError: a malformed sequences file or an undecodable video (names the file).
    """
    directory = kth_dir(root)
    sequences = directory / SEQUENCES_FILE
    if not sequences.is_file():
        raise FileNotFoundError(
            f"{sequences} not found: KTH is not in {directory}. Download it with "
            "`fernn download kth` (or download_kth()), or point FERNN_DATA at a directory "
            "holding kth/ (or give root=) with 00sequences.txt and the six action folders."
        )
    digest = md5sum(sequences)
    if cache is None:
        cache = directory / f"fernn_kth_{size}px.npz"
        if not os.access(directory, os.W_OK):
            cache = cache_dir("kth") / f"{directory.name}_{digest[:8]}_{size}px.npz"
    cache = Path(cache)
    arrays = None
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if (int(data["version"]) == _CACHE_VERSION and str(data["sequences_md5"]) == digest
                    and data["frames"].shape[1:] == (size, size)):
                arrays = {k: data[k] for k in data.files}
    if arrays is None:
        arrays = _build(directory, size, progress)
        buffer = io.BytesIO()
        np.savez(buffer, version=np.int64(_CACHE_VERSION), sequences_md5=np.str_(digest), **arrays)
        with atomic_open(cache) as fh:
            fh.write(buffer.getbuffer())
    return KTHSequences(**{k: torch.from_numpy(np.asarray(arrays[k])) for k in
                           ("frames", "offsets", "lengths", "labels", "persons", "scenarios")})


def download_kth(
    root: str | os.PathLike | None = None, mirrors: Sequence[str] = KTH_MIRRORS,
    progress: bool = True,
) -> Path:
    """Download the official KTH archives (six action zips, about 1 GB, and
    ``00sequences.txt``) into ``root`` (default: the cache) and unpack each zip into its
    action folder. Files already present are kept. Returns the dataset directory."""
    directory = Path(root).expanduser() if root is not None else cache_dir("kth")
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / SEQUENCES_FILE).is_file():
        download_file(SEQUENCES_FILE, directory / SEQUENCES_FILE, mirrors, progress=progress)
    for action in KTH_ACTIONS:
        folder = directory / action
        if folder.is_dir() and any(folder.glob("*.avi")):
            continue
        archive = directory / f"{action}.zip"
        if not archive.is_file():
            download_file(archive.name, archive, mirrors, progress=progress)
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.infolist():
                    name = Path(member.filename).name  # flat: no paths from the archive
                    if member.is_dir() or not name.endswith(".avi"):
                        continue
                    with zf.open(member) as src, atomic_open(folder / name) as dst:
                        while block := src.read(1 << 20):
                            dst.write(block)
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{archive} is not a valid zip archive ({exc}); delete it and "
                             "download again") from exc
        archive.unlink()
    return directory


class KTHClips:
    """Clips of KTH sequences moved by a constant camera flow.

    Args:
        sequences: the sequences (one split of :func:`load_kth`).
        clip_frames: frames per clip (16).
        frame_step: take every ``frame_step``-th frame (2).
        max_speed: velocities are drawn uniformly from the integer grid ``{-r..r}²``, one
            per clip; frame ``t`` of the clip is circularly shifted by ``t·v``.
        train: one clip per sequence at a random start, with a random velocity (fresh each
            epoch, see :meth:`set_epoch`); else fixed clips: every non-overlapping window of
            every sequence, each with its own fixed velocity.
        flip: random horizontal flips (training only).
        seed: changes every draw.

    Sequences shorter than a clip's span (``(clip_frames - 1)·frame_step + 1``) are left
    out (``skipped`` says how many). :meth:`batch` returns ``"frames"`` float32
    ``(B, T, 1, S, S)`` in [0, 1], ``"labels"`` ``(B,)``, ``"velocities"`` ``(B, 2)`` as
    ``(v_y, v_x)``.
    """

    _STREAMS = 4  # clip start, velocity, flip, spare

    def __init__(self, sequences: KTHSequences, clip_frames: int = 16, frame_step: int = 2,
                 max_speed: int = 2, train: bool = False, flip: bool = True, seed: int = 0):
        if clip_frames < 1 or frame_step < 1 or max_speed < 0:
            raise ValueError("clip_frames and frame_step must be ≥ 1 and max_speed ≥ 0")
        self.sequences = sequences
        self.clip_frames = clip_frames
        self.frame_step = frame_step
        self.span = (clip_frames - 1) * frame_step + 1
        self.flow = TranslationFlow2D(max_speed=max_speed)
        self.train = train
        self.flip = flip and train
        self.seed = seed
        self.epoch = 0
        usable = torch.nonzero(sequences.lengths >= self.span).flatten()
        self.skipped = len(sequences) - len(usable)
        if len(usable) == 0:
            raise ValueError(f"no sequence holds a clip of {clip_frames} frames every "
                             f"{frame_step}: all are shorter than {self.span} frames")
        if train:
            self._seq, self._start = usable, None
        else:  # every non-overlapping window, in order
            counts = sequences.lengths[usable] // self.span
            self._seq = usable.repeat_interleave(counts)
            first = torch.cumsum(counts, 0) - counts
            window = torch.arange(len(self._seq)) - first.repeat_interleave(counts)
            self._start = window * self.span

    def __len__(self) -> int:
        return len(self._seq)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def labels(self) -> Tensor:
        """The class of every item, ``(len,)``."""
        return self.sequences.labels[self._seq]

    def batch(self, items: Sequence[int] | Tensor, device=None) -> dict[str, Tensor]:
        items = torch.as_tensor(items, dtype=torch.int64).flatten()
        if len(items) and (items.min() < 0 or items.max() >= len(self)):
            raise IndexError(f"items must lie in [0, {len(self)})")
        seed = self.seed * 1_000_003 + (self.epoch if self.train else 0)
        u = hashed_uniform(seed, items, self._STREAMS)  # (B, 4)
        seq = self._seq[items]
        lengths = self.sequences.lengths[seq]
        if self.train:
            start = (u[:, 0] * (lengths - self.span + 1)).long()
        else:
            start = self._start[items]
        t = torch.arange(self.clip_frames) * self.frame_step
        index = self.sequences.offsets[seq][:, None] + start[:, None] + t[None, :]  # (B, T)
        frames = self.sequences.frames[index].float().div_(255.0)[:, :, None]  # (B, T, 1, S, S)
        if self.flip:
            flip = u[:, 2] < 0.5
            frames = torch.where(flip[:, None, None, None, None], frames.flip(-1), frames)
        velocities = self.flow.velocities[(u[:, 1] * len(self.flow)).long()]  # (B, 2)
        frames = self.flow.move_frames(frames, velocities)
        out = {"frames": frames, "labels": self.sequences.labels[seq], "velocities": velocities}
        if device is not None:
            out = {k: v.to(device) for k, v in out.items()}
        return out
