"""Run and comparison reports: metrics → PNG plots, a GIF, and a report.md linking them.

The layout (header, footer, the comparison table's frame) is common; what a run's report
and a comparison show is its task's (:meth:`~fernn.experiments.tasks.Task.report`,
:meth:`~fernn.experiments.tasks.Task.compare`)."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import torch

from .tasks import get_task

__all__ = ["write_run_report", "write_compare_report", "read_learning_curves", "load_metrics",
           "headline", "learning_figure", "save_figure", "fmt_mse", "fmt_fraction", "report_link", "file_slugs"]


def save_figure(fig, path: Path) -> str:
    """Write a matplotlib figure as a PNG, close it, and return the file's name."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def read_learning_curves(run_dir: Path) -> dict:
    """``{"train": (steps, losses), "val": (steps, values)}`` from the CSV log (the
    validation MSE, or loss for classifiers)."""
    path = Path(run_dir) / "logs" / "csv" / "metrics.csv"
    curves: dict = {"train": ([], []), "val": ([], [])}
    if not path.is_file():
        return curves
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            step = int(row["step"])
            val = "val_loss" if "val_loss" in row else "val_mse"
            for key, column in (("train", "train_loss"), ("val", val)):
                if row.get(column):
                    curves[key][0].append(step)
                    curves[key][1].append(float(row[column]))
    return curves


def learning_figure(run_dir: Path, val_label: str = "val MSE", ylabel: str = "MSE") -> str | None:
    """``learning_curves.png`` of the run's CSV log (train loss and the validation figure);
    its file name, or ``None`` when nothing was logged."""
    from ._plots import learning_curves

    curves = read_learning_curves(run_dir)
    labelled = {name: c for name, c in (("train loss", curves["train"]),
                                         (val_label, curves["val"])) if c[0]}
    if not labelled:
        return None
    return save_figure(learning_curves(labelled, ylabel=ylabel), Path(run_dir) / "learning_curves.png")


def load_metrics(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a finished fernn run?")
    try:
        metrics = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a fernn metrics file ({exc})") from None
    if not isinstance(metrics, dict) or "task" not in metrics:
        raise ValueError(f"{path} is not a fernn metrics file (it names no task)")
    return metrics


def fmt_mse(x) -> str:
    return "n/a" if x is None else f"{x:.3e}"


def fmt_fraction(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def report_link(run_dir: Path, out_dir: Path) -> str:
    return os.path.relpath(Path(run_dir) / "report.md", out_dir)


def file_slugs(labels: list[str]) -> list[str]:
    """A distinct file-name part for each label (runs labelled by their directory)."""
    slugs: list[str] = []
    for label in labels:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_.") or "run"
        base, n = slug, 2
        while slug in slugs:
            slug, n = f"{base}_{n}", n + 1
        slugs.append(slug)
    return slugs


def _header(cfg, metrics: dict) -> list[str]:
    return [
        f"# {cfg.name}",
        "",
        f"Model `{cfg.model}` {json.dumps(cfg.model_options)} — {metrics['parameters']} "
        f"parameters; data: **{metrics['data']}**; {metrics['steps']} steps "
        f"({metrics['epochs']} epochs × {metrics['steps_per_epoch']}), global batch "
        f"{metrics['global_batch']}, {metrics['train_seconds']:.0f} s on {metrics['hardware']}; "
        f"fernn {metrics['fernn_version']}.",
        "",
    ]


def headline(metrics: dict) -> str:
    """The run's main figure in words (its task's headline: test MSE, test accuracy, ...)."""
    return get_task(metrics["task"]).headline(metrics)


@torch.no_grad()
def write_run_report(run_dir, metrics: dict, cfg, data, model, device) -> Path:
    """The run's plots and ``report.md``: a common header, the task's section, the list
    of files. ``data``: what the task's ``load_data`` returned."""
    run_dir = Path(run_dir)
    lines = _header(cfg, metrics) + cfg.task_spec.report(run_dir, metrics, cfg, data, model,
                                                         device)
    lines += ["", "Files: `config.toml` (resolved config), `metrics.json`, "
              "`model.safetensors` + `model.json`, `checkpoints/last.ckpt` (resume), "
              "`logs/` (CSV, TensorBoard)."]
    report = run_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _labels(run_dirs: list[Path], names: list[str]) -> list[str]:
    """One label per run: its name, or — where names repeat — its directory (as given,
    else its resolved path), so that no two runs share a curve or a file."""
    labels = list(names)
    for candidates in ([str(d) for d in run_dirs], [str(d.resolve()) for d in run_dirs]):
        repeated = {n for n in labels if labels.count(n) > 1}
        labels = [c if n in repeated else n for n, c in zip(labels, candidates)]
    if len(set(labels)) < len(labels):
        raise ValueError("the same run directory is given twice: "
                         + ", ".join(sorted({str(d) for d in run_dirs})))
    return labels


def write_compare_report(run_dirs: list, out_dir, title: str = "Comparison",
                         intro: list[str] | None = None) -> Path:
    """One report across runs of one task: a table, overlaid curves, the task's figures.
    Runs are told apart by their directory: runs that share a name are labelled by it."""
    out_dir = Path(out_dir)
    dirs = [Path(d) for d in run_dirs]
    metrics = [load_metrics(d) for d in dirs]
    tasks = sorted({m["task"] for m in metrics})
    if len(tasks) > 1:
        by_task = "; ".join(f"{t}: " + ", ".join(str(d) for d, m in zip(dirs, metrics)
                                                 if m["task"] == t) for t in tasks)
        raise ValueError(f"cannot compare runs of different tasks in one report ({by_task}); "
                         "compare each task's runs separately")
    task = get_task(tasks[0])
    labels = _labels(dirs, [m["name"] for m in metrics])
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""] + (intro or []) + task.compare(list(zip(labels, dirs, metrics)),
                                                              out_dir)
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
