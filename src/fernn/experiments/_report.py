"""Run and comparison reports: metrics → PNG plots, a GIF, and a report.md linking them."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch

from ._config import Config
from ._data import Banks, flowing
from ._evaluate import LENGTH_SEED_OFFSET
from ._plots import (
    confusion_matrix,
    frame_strip,
    learning_curves,
    length_curves,
    save_gif,
    speed_range_accuracy,
    velocity_curves,
    velocity_heatmap,
)

__all__ = ["write_run_report", "write_compare_report", "read_learning_curves", "load_metrics",
           "headline"]


def _save(fig, path: Path) -> str:
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


def _velocity_figure(velocity: dict, vmin=None, vmax=None):
    """A heat map (translations, one run) or curves (rotations, any runs)."""
    (name, first), = list(velocity.items())[:1]
    if first.get("kind", "translation") == "rotation":
        return velocity_curves({n: (v["velocities"], v["mse"]) for n, v in velocity.items()},
                               trained=first["trained"])
    return velocity_heatmap(first["mse"], first["grid"], title=f"{name}: MSE per velocity",
                            trained=first.get("trained"), vmin=vmin, vmax=vmax)


def load_metrics(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a finished fernn run?")
    return json.loads(path.read_text())


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3e}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _header(cfg: Config, metrics: dict, data: str) -> list[str]:
    return [
        f"# {cfg.name}",
        "",
        f"Model `{cfg.model}` {json.dumps(cfg.model_options)} — {metrics['parameters']} "
        f"parameters; {data}; {metrics['steps']} steps "
        f"({metrics['epochs']} epochs × {metrics['steps_per_epoch']}), global batch "
        f"{metrics['global_batch']}, {metrics['train_seconds']:.0f} s on {metrics['hardware']}; "
        f"fernn {metrics['fernn_version']}.",
        "",
    ]


def _write_report(run_dir: Path, lines: list[str]) -> Path:
    lines = lines + ["", "Files: `config.toml` (resolved config), `metrics.json`, "
                     "`model.safetensors` + `model.json`, `checkpoints/last.ckpt` (resume), "
                     "`logs/` (CSV, TensorBoard)."]
    report = run_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def headline(metrics: dict) -> str:
    """The run's main figure in words: test MSE, or test accuracy."""
    if metrics.get("task") == "kth":
        return f"test accuracy {metrics['test_accuracy']:.3f}"
    return f"test MSE {metrics['test_mse']:.4e}"


def _write_classification_report(run_dir: Path, metrics: dict, cfg: Config) -> Path:
    curves = read_learning_curves(run_dir)
    figures = {}
    labelled = {name: c for name, c in (("train loss", curves["train"]),
                                         ("val loss", curves["val"])) if c[0]}
    if labelled:
        figures["learning"] = _save(learning_curves(labelled, ylabel="cross-entropy"),
                                    run_dir / "learning_curves.png")
    figures["confusion"] = _save(
        confusion_matrix(metrics["confusion"], metrics["classes"],
                         title=f"{cfg.name}: test clips, speeds ≤ {cfg.data_max_speed}"),
        run_dir / "confusion_matrix.png")
    velocity = metrics["velocity"]
    figures["velocity"] = _save(
        speed_range_accuracy({cfg.name: (velocity["ranges"], velocity["accuracy"])},
                             trained=velocity["trained"]),
        run_dir / "velocity_generalisation.png")
    lines = _header(cfg, metrics, f"data: **{metrics['data']}**") + [
        "| metric | value |",
        "|---|---|",
        f"| test accuracy (camera speeds v ∈ {{-{cfg.data_max_speed}..{cfg.data_max_speed}}}², "
        f"{metrics['test_clips']} clips) | {_pct(metrics['test_accuracy'])} |",
        f"| validation accuracy (last) | {_pct(metrics.get('val_accuracy'))} |",
    ]
    lines += [f"| test accuracy, speed range {r} | {_pct(a)} |"
              for r, a in zip(velocity["ranges"], velocity["accuracy"])]
    lines += [""]
    if "learning" in figures:
        lines += [f"![learning curves]({figures['learning']})", ""]
    lines += [
        f"![confusion matrix]({figures['confusion']})",
        "",
        f"![camera-speed generalisation]({figures['velocity']})",
        "",
        f"Clips: {cfg.clip_frames} frames, one in {cfg.frame_step} of the video, {cfg.size}×{cfg.size}; "
        f"test clips are every non-overlapping window of the test persons' sequences "
        f"({metrics['test_sequences_skipped']} sequences too short for one).",
    ]
    return _write_report(run_dir, lines)


@torch.no_grad()
def write_run_report(run_dir, metrics: dict, cfg: Config, data, model, device) -> Path:
    """Plots and ``report.md``. Next-step runs (``data``: the :class:`Banks` or the test
    bank): learning curves, length generalisation, velocity heat map, a frame strip and a
    rollout GIF. KTH runs: learning curves, confusion matrix, camera-speed accuracy."""
    run_dir = Path(run_dir)
    if cfg.task == "kth":
        return _write_classification_report(run_dir, metrics, cfg)
    test_bank = data.test if isinstance(data, Banks) else data
    curves = read_learning_curves(run_dir)
    figures = {}
    labelled = {name: c for name, c in (("train loss", curves["train"]),
                                         ("val MSE", curves["val"])) if c[0]}
    if labelled:
        figures["learning"] = _save(learning_curves(labelled), run_dir / "learning_curves.png")
    length = metrics["length"]
    figures["length"] = _save(
        length_curves({cfg.name: (length["mean"], length["std"])}, cfg.predict_frames),
        run_dir / "length_generalisation.png",
    )
    figures["velocity"] = _save(_velocity_figure({cfg.name: metrics["velocity"]}),
                                run_dir / "velocity_generalisation.png")
    model.eval()
    sample = flowing(cfg, test_bank, seed=cfg.seed + LENGTH_SEED_OFFSET,
                     seq_len=cfg.input_frames + cfg.length_frames, num_sequences=1)
    frames = sample.batch([0], device=device)["frames"]  # (1, T, 1, H, W)
    frames = frames.to(next(model.parameters()).dtype)
    T_in = cfg.input_frames
    pred = model(frames[:, :T_in], cfg.length_frames)[0, :, 0].clamp(0, 1).cpu()
    true = frames[0, :, 0].cpu()
    figures["strip"] = _save(
        frame_strip(true[:T_in], true[T_in : T_in + cfg.predict_frames],
                    pred[: cfg.predict_frames], title=f"{cfg.name}: test sequence 0"),
        run_dir / "frames.png",
    )
    save_gif(run_dir / "rollout.gif", true.numpy(), torch.cat([true[:T_in], pred]).numpy())

    lines = _header(cfg, metrics, f"digits: **{metrics['digits']}**") + [
        "| metric | value |",
        "|---|---|",
        f"| test MSE ({cfg.predict_frames} predicted frames, {cfg.test_sequences} sequences) "
        f"| {_fmt(metrics['test_mse'])} ± {_fmt(metrics['test_mse_std'])} |",
        f"| validation MSE (last) | {_fmt(metrics.get('val_mse'))} |",
        f"| MSE at predicted step {cfg.predict_frames} / {len(length['mean'])} "
        f"| {_fmt(length['mean'][cfg.predict_frames - 1])} / {_fmt(length['mean'][-1])} |",
        "",
    ]
    if "learning" in figures:
        lines += [f"![learning curves]({figures['learning']})", ""]
    lines += [
        f"![length generalisation]({figures['length']})",
        "",
        f"![velocity generalisation]({figures['velocity']})",
        "",
        f"![frames]({figures['strip']})",
        "",
        "Rollout (true | model; the model sees the first "
        f"{T_in} frames): ![rollout](rollout.gif)",
    ]
    return _write_report(run_dir, lines)


def write_compare_report(run_dirs: list, out_dir, title: str = "Comparison",
                         intro: list[str] | None = None) -> Path:
    """One report across runs: a table, then overlaid length curves and velocity heat maps
    (next-step runs) or accuracy against camera speed (KTH runs)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [(Path(d), load_metrics(d)) for d in run_dirs]
    tasks = {m.get("task", "next_step") for _, m in runs}
    if len(tasks) > 1:
        raise ValueError(f"cannot compare runs of different tasks ({sorted(tasks)}) in one report")
    if tasks == {"kth"}:
        return _write_classification_compare(runs, out_dir, title, intro)
    lines = [f"# {title}", ""] + (intro or []) + [
        "| run | model | params | digits | steps | test MSE | MSE at last predicted step | train time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d, m in runs:
        lines.append(
            f"| [{m['name']}]({os.path.relpath(d / 'report.md', out_dir)}) | `{m['model']}` "
            f"| {m['parameters']} | {m['digits']} | {m['steps']} | {_fmt(m['test_mse'])} "
            f"| {_fmt(m['length']['mean'][-1])} | {m['train_seconds']:.0f} s |"
        )
    fig = length_curves({m["name"]: (m["length"]["mean"], m["length"]["std"]) for _, m in runs})
    lines += ["", f"![length generalisation]({_save(fig, out_dir / 'compare_length.png')})", ""]
    if runs[0][1]["velocity"].get("kind", "translation") == "rotation":
        fig = _velocity_figure({m["name"]: m["velocity"] for _, m in runs})
        lines.append(f"![velocity generalisation]({_save(fig, out_dir / 'compare_velocity.png')})")
    else:
        all_values = [v for _, m in runs for row in m["velocity"]["mse"] for v in row]
        for d, m in runs:  # one heat map per run, on one colour scale
            fig = _velocity_figure({m["name"]: m["velocity"]}, min(all_values), max(all_values))
            name = _save(fig, out_dir / f"compare_velocity_{m['name']}.png")
            lines.append(f"![{m['name']} velocity generalisation]({name})")
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _write_classification_compare(runs, out_dir: Path, title: str, intro) -> Path:
    ranges = runs[0][1]["velocity"]["ranges"]
    lines = [f"# {title}", ""] + (intro or []) + [
        "| run | model | params | steps | test accuracy | "
        + " | ".join(f"range {r}" for r in ranges) + " | train time |",
        "|---|---|---|---|---|" + "---|" * len(ranges) + "---|",
    ]
    for d, m in runs:
        by_range = dict(zip(m["velocity"]["ranges"], m["velocity"]["accuracy"]))
        lines.append(
            f"| [{m['name']}]({os.path.relpath(d / 'report.md', out_dir)}) | `{m['model']}` "
            f"| {m['parameters']} | {m['steps']} | {_pct(m['test_accuracy'])} | "
            + " | ".join(_pct(by_range.get(r)) for r in ranges)
            + f" | {m['train_seconds']:.0f} s |"
        )
    fig = speed_range_accuracy({m["name"]: (m["velocity"]["ranges"], m["velocity"]["accuracy"])
                                for _, m in runs})
    lines += ["", f"![camera-speed generalisation]({_save(fig, out_dir / 'compare_velocity.png')})"]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
