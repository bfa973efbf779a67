"""Run and comparison reports: metrics → PNG plots, a GIF, and a report.md linking them."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch

from ._config import Config
from ._data import flowing
from ._evaluate import LENGTH_SEED_OFFSET
from ._plots import (
    frame_strip,
    learning_curves,
    length_curves,
    save_gif,
    velocity_curves,
    velocity_heatmap,
)

__all__ = ["write_run_report", "write_compare_report", "read_learning_curves", "load_metrics"]


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def read_learning_curves(run_dir: Path) -> dict:
    """``{"train": (steps, losses), "val": (steps, mses)}`` from the CSV log."""
    path = Path(run_dir) / "logs" / "csv" / "metrics.csv"
    curves: dict = {"train": ([], []), "val": ([], [])}
    if not path.is_file():
        return curves
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            step = int(row["step"])
            for key, column in (("train", "train_loss"), ("val", "val_mse")):
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


@torch.no_grad()
def write_run_report(run_dir, metrics: dict, cfg: Config, test_bank, model, device) -> Path:
    """Plots (learning curves, length generalisation, velocity heat map, a frame strip),
    a rollout GIF, and ``report.md`` linking them."""
    run_dir = Path(run_dir)
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

    lines = [
        f"# {cfg.name}",
        "",
        f"Model `{cfg.model}` {json.dumps(cfg.model_options)} — {metrics['parameters']} "
        f"parameters; digits: **{metrics['digits']}**; {metrics['steps']} steps "
        f"({metrics['epochs']} epochs × {metrics['steps_per_epoch']}), global batch "
        f"{metrics['global_batch']}, {metrics['train_seconds']:.0f} s on {metrics['hardware']}; "
        f"fernn {metrics['fernn_version']}.",
        "",
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
        "",
        "Files: `config.toml` (resolved config), `metrics.json`, `model.safetensors` + "
        "`model.json`, `checkpoints/last.ckpt` (resume), `logs/` (CSV, TensorBoard).",
    ]
    report = run_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def write_compare_report(run_dirs: list, out_dir, title: str = "Comparison",
                         intro: list[str] | None = None) -> Path:
    """One report across runs: a table, overlaid length curves, heat maps side by side."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [(Path(d), load_metrics(d)) for d in run_dirs]
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
