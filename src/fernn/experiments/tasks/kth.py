"""Task ``kth``: action recognition on KTH under camera motion — Table 2 (FERNN.md §5).

Clips of ``clip_frames`` frames (one in ``frame_step``) of the KTH videos, each moved by a
constant camera velocity drawn from ``{-r..r}²`` (``r = data_max_speed``); classify the
six actions. Loss: cross-entropy; test metric: clip accuracy, with the confusion matrix,
and the accuracy at every camera-speed range of ``test_speeds`` (velocity
generalisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data import KTH_ACTIONS, KTHClips, KTHSequences, load_kth
from ...models import CNN3DClassifier, SequenceClassifier
from .._data import VAL_SEED_OFFSET, BatchData, SequenceBatches
from .._evaluate import TEST_SEED_OFFSET
from .._modules import TaskModule
from .._plots import confusion_matrix, speed_range_accuracy
from .._report import fmt_fraction, learning_figure, report_link, save_figure
from . import Task, TaskOptions, register_task

__all__ = ["KTHOptions", "KTHTask", "ClassifierModule", "KTHData", "kth_clips", "classify_clips",
           "evaluate_classifier"]


@dataclass
class KTHOptions(TaskOptions):
    """The ``[task_options]`` of a KTH run."""

    kth_root: str | None = None  # the dataset directory (default: $FERNN_DATA/kth or the cache)
    size: int = 32  # frames resized to size × size
    clip_frames: int = 16  # frames per clip
    frame_step: int = 2  # take every frame_step-th frame
    data_max_speed: int = 2  # camera velocities {-r..r}^2 in training
    flip: bool = True  # random horizontal flips in training
    test_speeds: list = field(default_factory=lambda: [0, 1, 2])  # camera speed ranges tested

    nullable = frozenset({"kth_root"})

    def validate(self) -> None:
        if (not isinstance(self.test_speeds, list) or not self.test_speeds
                or any(not isinstance(r, int) or isinstance(r, bool) or r < 0
                       for r in self.test_speeds)):
            raise ValueError(f"test_speeds must be non-negative integers, got {self.test_speeds}")
        if self.clip_frames < 1 or self.frame_step < 1:
            raise ValueError("clip_frames and frame_step must be at least 1")
        if self.size < 1:
            raise ValueError(f"size must be at least 1, got {self.size}")
        if self.data_max_speed < 0:
            raise ValueError(f"data_max_speed must be non-negative, got {self.data_max_speed}")

    @classmethod
    def legacy_defaults(cls) -> dict:
        # fernn 0.1.0's flat Config shared `size` with Flowing MNIST: 28 when left out.
        return {**cls.defaults(), "size": 28}


# -- data ------------------------------------------------------------------------------
def kth_clips(cfg, sequences: KTHSequences, *, train: bool, seed: int,
              max_speed: int | None = None) -> KTHClips:
    """KTH clips of the config's geometry; camera speeds from its training range by
    default."""
    opts = cfg.task_options
    return KTHClips(sequences, clip_frames=opts.clip_frames, frame_step=opts.frame_step,
                    max_speed=opts.data_max_speed if max_speed is None else max_speed,
                    train=train, flip=opts.flip, seed=seed)


class KTHData(BatchData):
    """Train/val batches of KTH clips (``data``: the loaded :class:`KTHSequences`)."""

    def setup(self, stage=None):
        cfg, B, world = self.cfg, self.cfg.batch_size, self.world_size
        train = kth_clips(cfg, self.data.split("train"), train=True, seed=cfg.seed)
        steps = cfg.steps_per_epoch or max(1, len(train) // (B * world))
        self.steps_per_epoch = steps
        if steps * world * B > len(train):  # more steps than one pass: items recur
            raise ValueError(f"steps_per_epoch={steps} needs {steps * world * B} training clips "
                             f"per epoch; the KTH train split holds {len(train)} sequences")
        self.train_set = SequenceBatches(train, B, steps * world, keys=("frames", "labels"),
                                         shuffle=True, seed=cfg.seed)
        val = kth_clips(cfg, self.data.split("val"), train=False,
                        seed=cfg.seed + VAL_SEED_OFFSET)
        self.val_set = SequenceBatches(val, B, -(-len(val) // B), num_items=len(val),
                                       keys=("frames", "labels"))


# -- training --------------------------------------------------------------------------
class ClassifierModule(TaskModule):
    """Clip classification (KTH): cross-entropy on the logits; validation accuracy.
    Batches: ``{"frames": (B, T, 1, H, W), "labels": (B,)}``."""

    def training_step(self, batch, batch_idx):
        logits = self.train_forward(batch["frames"].to(self.dtype))
        loss = F.cross_entropy(logits, batch["labels"])
        self._check_finite(loss)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self.model(batch["frames"].to(self.dtype))
        labels = batch["labels"]
        self.log("val_loss", F.cross_entropy(logits, labels), sync_dist=True, on_epoch=True)
        self.log("val_accuracy", (logits.argmax(-1) == labels).float().mean(), prog_bar=True,
                 sync_dist=True, on_epoch=True)


# -- evaluation ------------------------------------------------------------------------
@torch.no_grad()
def classify_clips(model: nn.Module, clips: KTHClips, batch_size: int, device: torch.device,
                   progress=None) -> tuple[Tensor, Tensor]:
    """Predicted and true class of every clip: two ``(len(clips),)`` int64 tensors."""
    model.eval()
    dtype = next(model.parameters()).dtype
    predicted, labels = [], []
    for start in range(0, len(clips), batch_size):
        stop = min(len(clips), start + batch_size)
        batch = clips.batch(range(start, stop), device=device)
        predicted.append(model(batch["frames"].to(dtype)).argmax(-1).cpu())
        labels.append(batch["labels"].cpu())
        if progress is not None:
            progress.update(stop - start)
    return torch.cat(predicted), torch.cat(labels)


def evaluate_classifier(model: nn.Module, cfg, test: KTHSequences, device: torch.device,
                        progress=True) -> dict:
    """Clip accuracy on the test persons: at the training camera-speed range (with the
    confusion matrix, rows true class, columns predicted) and at each of ``test_speeds``
    (velocity generalisation). Clips: every non-overlapping window of every test
    sequence, each moved by its own fixed velocity from the range."""
    opts = cfg.task_options
    trained = opts.data_max_speed
    ranges = sorted(set(opts.test_speeds) | {trained})
    sets = {r: kth_clips(cfg, test, train=False, seed=cfg.seed + TEST_SEED_OFFSET + r,
                         max_speed=r) for r in ranges}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(c) for c in sets.values()), desc="evaluating", unit="clip",
                   leave=False)
    accuracy, confusion = {}, None
    for r, clips in sets.items():
        predicted, labels = classify_clips(model, clips, cfg.eval_batch_size, device, bar)
        accuracy[r] = float((predicted == labels).double().mean())
        if r == trained:
            k = len(KTH_ACTIONS)
            confusion = torch.bincount(labels * k + predicted, minlength=k * k).view(k, k)
    if bar is not None:
        bar.close()
    clips = sets[trained]
    return {
        "test_accuracy": accuracy[trained],
        "test_clips": len(clips),
        "test_sequences_skipped": clips.skipped,
        "classes": list(KTH_ACTIONS),
        "confusion": confusion.tolist(),
        "velocity": {"kind": "speed_range", "trained": trained, "ranges": opts.test_speeds,
                     "accuracy": [accuracy[r] for r in opts.test_speeds]},
    }


@register_task
class KTHTask(Task):
    name = "kth"
    Options = KTHOptions
    DataModule = KTHData
    Module = ClassifierModule
    model_types = (SequenceClassifier, CNN3DClassifier)
    model_hint = "a classifier (e.g. fernn_classifier)"
    resumable = frozenset({"test_speeds", "kth_root"})
    summary = "KTH action recognition under camera motion (Table 2)"

    def validate(self, cfg) -> None:
        if cfg.model_options.get("num_classes", len(KTH_ACTIONS)) != len(KTH_ACTIONS):
            raise ValueError(f"KTH has {len(KTH_ACTIONS)} classes: "
                             f"model_options.num_classes={len(KTH_ACTIONS)}")
        if cfg.model_options.get("in_channels", 1) != 1:
            raise ValueError("the frames have one channel: model_options.in_channels=1")
        flow_keys = sorted({"angular_velocities", "order"} & set(cfg.model_options))
        if flow_keys:
            raise ValueError(f"KTH's camera motion is a translation flow: remove model_options "
                             f"{flow_keys}")

    def load_data(self, cfg, progress: bool = True) -> KTHSequences:
        opts = cfg.task_options
        return load_kth(opts.kth_root, size=opts.size, progress=progress)

    def describe_data(self, cfg, data: KTHSequences) -> str:
        size = cfg.task_options.size
        return (f"KTH {size}×{size}, {len(data)} sequences "
                f"({len(data.split('train'))} train / {len(data.split('val'))} val / "
                f"{len(data.split('test'))} test)")

    def evaluate(self, model, cfg, data: KTHSequences, device, progress=True) -> dict:
        return evaluate_classifier(model, cfg, data.split("test"), device, progress)

    def headline(self, metrics: dict) -> str:
        return f"test accuracy {metrics['test_accuracy']:.3f}"

    def eval_summary(self, metrics: dict) -> str:
        return ", ".join(f"range {r}: {a:.3f}" for r, a in
                         zip(metrics["velocity"]["ranges"], metrics["velocity"]["accuracy"]))

    def report(self, run_dir: Path, metrics: dict, cfg, data, model, device) -> list[str]:
        """Learning curves, the confusion matrix, accuracy against camera-speed range."""
        opts = cfg.task_options
        figures = {}
        learning = learning_figure(run_dir, "val loss", ylabel="cross-entropy")
        if learning:
            figures["learning"] = learning
        figures["confusion"] = save_figure(
            confusion_matrix(metrics["confusion"], metrics["classes"],
                             title=f"{cfg.name}: test clips, speeds ≤ {opts.data_max_speed}"),
            run_dir / "confusion_matrix.png")
        velocity = metrics["velocity"]
        figures["velocity"] = save_figure(
            speed_range_accuracy({cfg.name: (velocity["ranges"], velocity["accuracy"])},
                                 trained=velocity["trained"]),
            run_dir / "velocity_generalisation.png")
        r = opts.data_max_speed
        lines = [
            "| metric | value |",
            "|---|---|",
            f"| test accuracy (camera speeds v ∈ {{-{r}..{r}}}², {metrics['test_clips']} clips) "
            f"| {fmt_fraction(metrics['test_accuracy'])} |",
            f"| validation accuracy (last) | {fmt_fraction(metrics.get('val_accuracy'))} |",
        ]
        lines += [f"| test accuracy, speed range {s} | {fmt_fraction(a)} |"
                  for s, a in zip(velocity["ranges"], velocity["accuracy"])]
        lines += [""]
        if "learning" in figures:
            lines += [f"![learning curves]({figures['learning']})", ""]
        lines += [
            f"![confusion matrix]({figures['confusion']})",
            "",
            f"![camera-speed generalisation]({figures['velocity']})",
            "",
            f"Clips: {opts.clip_frames} frames, one in {opts.frame_step} of the video, "
            f"{opts.size}×{opts.size}; test clips are every non-overlapping window of the test "
            f"persons' sequences ({metrics['test_sequences_skipped']} sequences too short for "
            "one).",
        ]
        return lines

    def compare(self, runs, out_dir: Path) -> list[str]:
        """A table of accuracy per camera-speed range, and the accuracy curves overlaid."""
        ranges = runs[0][2]["velocity"]["ranges"]
        lines = [
            "| run | model | params | steps | test accuracy | "
            + " | ".join(f"range {r}" for r in ranges) + " | train time |",
            "|---|---|---|---|---|" + "---|" * len(ranges) + "---|",
        ]
        for label, d, m in runs:
            by_range = dict(zip(m["velocity"]["ranges"], m["velocity"]["accuracy"]))
            lines.append(
                f"| [{label}]({report_link(d, out_dir)}) | `{m['model']}` "
                f"| {m['parameters']} | {m['steps']} | {fmt_fraction(m['test_accuracy'])} | "
                + " | ".join(fmt_fraction(by_range.get(r)) for r in ranges)
                + f" | {m['train_seconds']:.0f} s |")
        fig = speed_range_accuracy({label: (m["velocity"]["ranges"], m["velocity"]["accuracy"])
                                    for label, _, m in runs})
        lines += ["", "![camera-speed generalisation]"
                  f"({save_figure(fig, out_dir / 'compare_velocity.png')})"]
        return lines
