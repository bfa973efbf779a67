"""``fernn demo``: train a G-RNN and a FERNN-V1 on Flowing MNIST on a CPU, compare them.

Digits: the full MNIST when it can be found or downloaded (``$FERNN_DATA``, the cache, the
mirrors); else, if only the official test split is present, disjoint sets carved from it
(``mnist-test-split``); else the offline font digits. It says which.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..data import load_mnist
from ._config import load_config
from ._engine import train
from ._report import write_compare_report

__all__ = ["run_demo", "demo_digit_source", "DEMO_CONFIGS"]

DEMO_CONFIGS = ("cpu_grnn", "cpu_fernn_v1")


def demo_digit_source(root=None) -> tuple[str, str]:
    """The best digit source available here, and why."""
    try:
        load_mnist(root, "train", download=True, progress=True)
        load_mnist(root, "test", download=True, progress=True)
        return "mnist", "MNIST train and test splits found"
    except (FileNotFoundError, ValueError) as exc:
        reason = str(exc).split(". ")[0]
    try:
        load_mnist(root, "test", download=False)
        return "mnist-test-split", (
            "only the MNIST test split is available (" + reason + "); train/val/test digits "
            "are disjoint sets carved from it"
        )
    except (FileNotFoundError, ValueError):
        return "font", f"no MNIST available ({reason}); using offline font digits"


def run_demo(out_dir="demo", overrides: list[str] | None = None) -> Path:
    """Train the demo models into ``out_dir/<config>`` and write ``out_dir/report.md``."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    source, why = demo_digit_source()
    print(f"fernn demo: digits = {source}: {why}", flush=True)
    runs = []
    for name in DEMO_CONFIGS:
        cfg = load_config(name, [f"digits={source!r}".replace("'", '"')] + list(overrides or []))
        print(f"fernn demo: training {name} ({cfg.model}, {cfg.model_options}) ...", flush=True)
        metrics = train(cfg, out_dir / name)
        runs.append((out_dir / name, metrics))
    (g_dir, g), (f_dir, f) = runs
    elapsed = time.perf_counter() - started
    ratio = f["test_mse"] / g["test_mse"]
    intro = [
        f"Flowing MNIST next-step prediction, 2 digits moving at velocities in {{-1..1}}², "
        f"10 observed → 10 predicted frames; hidden 16, batch 16, {g['steps']} steps each; "
        f"digits: **{source}** ({why}). Hardware: {g['hardware']}. Total time "
        f"{elapsed / 60:.1f} min.",
        "",
        f"**FERNN-V1 test MSE / G-RNN test MSE = {ratio:.2f}** "
        f"({f['test_mse']:.3e} vs {g['test_mse']:.3e}).",
        "",
    ]
    report = write_compare_report([g_dir, f_dir], out_dir, title="fernn demo: FERNN-V1 vs G-RNN",
                                  intro=intro)
    print(f"fernn demo: FERNN-V1/G-RNN test MSE ratio {ratio:.2f}; report: {report} "
          f"({elapsed / 60:.1f} min)", flush=True)
    return report
