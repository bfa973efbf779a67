"""The ``fernn`` command line: train, eval, compare, download, demo, configs, models,
equivariance."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _tune_allocator(args, memory_mode: bool = False) -> None:
    """Reuse freed tensor memory (fernn.tune_cpu_allocator) unless ``--system-allocator``,
    or the run is in memory mode (``checkpoint_every``): heap-held memory fragments, and
    there the resident peak is what matters (docs/benchmarks.md: 0.62 against 0.44 GiB)."""
    if not (args.system_allocator or memory_mode):
        from ._allocator import tune_cpu_allocator

        tune_cpu_allocator()


def _train(args) -> int:
    from .experiments import NonFiniteLossError, headline, load_config, train

    cfg = load_config(args.config, args.overrides)
    _tune_allocator(args, memory_mode=bool(cfg.model_options.get("checkpoint_every")))
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    try:
        metrics = train(cfg, out, resume=not args.no_resume)
    except NonFiniteLossError as exc:
        print(f"fernn train: stopped: {exc}", file=sys.stderr)
        return 3
    if metrics:
        print(f"fernn train: {cfg.name}: {headline(metrics)}; report {out / 'report.md'}")
    return 0


def _device(name: str):
    """``--device``: a torch device that exists here."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r} is not a device; give cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is visible here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def _eval(args) -> int:
    from .experiments import apply_overrides, evaluate_task, load_model
    from .experiments._config import changed_settings

    _tune_allocator(args)
    device = _device(args.device)
    model, trained = load_model(args.run)
    cfg = apply_overrides(trained, args.overrides)
    task = cfg.task_spec
    # Only evaluation settings change an evaluation: the model is trained already.
    allowed = {"eval_batch_size", "progress"} | {f"task_options.{k}" for k in task.resumable}
    ignored = [k for k in changed_settings(trained, cfg) if k not in allowed]
    if ignored:
        raise ValueError(f"{', '.join(ignored)} cannot change the evaluation of a trained model; "
                         f"eval takes {', '.join(sorted(allowed))} (train a new run to change "
                         "the others)")
    metrics = {"task": cfg.task,
               **evaluate_task(model.to(device), cfg, task.load_data(cfg), device)}
    text = json.dumps(metrics, indent=2)
    if args.out:
        Path(args.out).write_text(text)
        print(f"fernn eval: wrote {args.out}")
    detail = task.eval_summary(metrics)
    print(f"fernn eval: {cfg.name}: {task.headline(metrics)}" + (f", {detail}" if detail else ""))
    return 0


def _download(args) -> int:
    from .data import DATASETS

    directory = DATASETS[args.dataset](args.root)
    print(f"fernn download: {args.dataset} is in {directory}")
    return 0


def _compare(args) -> int:
    from .experiments import write_compare_report

    report = write_compare_report(args.runs, args.out, title=args.title)
    print(f"fernn compare: report {report}")
    return 0


def _demo(args) -> int:
    from .experiments._demo import run_demo

    _tune_allocator(args)
    run_demo(args.out, args.overrides)
    return 0


def _equivariance(args) -> int:
    from .showcase import write_equivariance_report

    _tune_allocator(args)
    report = write_equivariance_report(args.out)
    print(report.read_text(encoding="utf-8"))
    print(f"report written to {report}")
    return 0


def _configs(args) -> int:
    from .experiments import shipped_configs

    for name, path in sorted(shipped_configs().items()):
        first = path.read_text().splitlines()[0].lstrip("# ")
        print(f"{name:24s} {first}")
    return 0


def _models(args) -> int:
    from .models import list_models, model_options

    for name in list_models():
        print(f"{name}: {', '.join(sorted(model_options(name)))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="fernn", description="Flow-equivariant recurrent networks (FERNN)."
    )
    parser.add_argument("--version", action="version", version=f"fernn {__version__}")
    parser.add_argument(
        "--system-allocator", action="store_true",
        help="leave glibc's malloc thresholds alone (by default train, eval, demo and "
             "equivariance raise them so that freed tensor memory is reused, not page-faulted "
             "in again; not for a run in memory mode: see fernn.tune_cpu_allocator)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train, evaluate and report one experiment")
    p.add_argument("config", help="a TOML file, a shipped config name (see `fernn configs`), "
                                  "or a run directory")
    p.add_argument("overrides", nargs="*", help="key=value (model_options.KEY=value)")
    p.add_argument("--out", help="run directory (default: runs/<name>); resumes if it holds a "
                                 "checkpoint of the same config")
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="evaluate a trained model (run dir, .safetensors or .ckpt)")
    p.add_argument("run")
    p.add_argument("overrides", nargs="*", help="evaluation settings, e.g. length_frames=70")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="write the metrics JSON here")
    p.set_defaults(func=_eval)

    from .data import DATASETS

    p = sub.add_parser("download", help="download a dataset (MNIST, or KTH: about 1 GB)")
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("--root", help="target directory (default: ~/.cache/fernn/<dataset>)")
    p.set_defaults(func=_download)

    p = sub.add_parser("compare", help="one report across several runs")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default="compare")
    p.add_argument("--title", default="Comparison")
    p.set_defaults(func=_compare)

    p = sub.add_parser("demo", help="train a G-RNN and a FERNN-V1 on CPU and compare (~3-7 min on 2 cores)")
    p.add_argument("--out", default="demo")
    p.add_argument("overrides", nargs="*", help="key=value applied to both demo configs")
    p.set_defaults(func=_demo)

    p = sub.add_parser("equivariance", help="measure the flow equivariance of FERNN vs baselines")
    p.add_argument("--out", default="equivariance")
    p.set_defaults(func=_equivariance)

    sub.add_parser("configs", help="list the shipped configs").set_defaults(func=_configs)
    sub.add_parser("models", help="list the registered models").set_defaults(func=_models)
    return parser


# A user's mistake (a bad value, a missing or unreadable file, a busy run directory, a
# machine without the asked-for device) is one line and exit status 2; anything else is a
# bug in fernn, shown with its traceback and a request to report it (exit status 1).
# (A TypeError is a bug: bad types in a config are reported as ValueErrors before they
# reach any code.)
_USER_ERRORS = (ValueError, OSError, RuntimeError, ImportError)


def _user_message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        target = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
        return f"{exc.strerror}: {target}"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0] if len(text) > 2000 else text


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 fine, 2 a user's mistake, 3 a
    training run stopped on a non-finite loss, 1 a bug in fernn, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `fernn models | head -1`: the reader has gone; not an error
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        print(f"fernn {args.command}: interrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as exc:
        if _is_bug(exc):
            return _report_bug(args.command)
        print(f"fernn {args.command}: error: {_user_message(exc)}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - a bug: say so, with the traceback
        return _report_bug(args.command)


def _is_bug(exc: BaseException) -> bool:
    """RuntimeErrors of Python's own machinery are bugs, not a user's input."""
    return isinstance(exc, (NotImplementedError, RecursionError))


def _report_bug(command: str) -> int:
    import traceback

    traceback.print_exc()
    print(f"fernn {command}: internal error: this is a bug in fernn, not in your input. "
          "Please report it with the command line and the traceback above.", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
