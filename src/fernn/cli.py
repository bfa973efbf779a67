"""The ``fernn`` command line."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from .showcase import write_equivariance_report

    print(f"fernn demo: measuring flow equivariance of FERNN-V1/V2, G-RNN and G-RNN+ "
          f"(rnn, gru, lstm cells) ...", flush=True)
    report = write_equivariance_report(args.out)
    print(report.read_text(encoding="utf-8"))
    print(f"report written to {report}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from .models import list_models, model_options

    for name in list_models():
        options = ", ".join(sorted(model_options(name)))
        print(f"{name}: {options}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="fernn", description="Flow-equivariant recurrent networks (FERNN)."
    )
    parser.add_argument("--version", action="version", version=f"fernn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="measure and report the equivariance of FERNN vs baselines")
    demo.add_argument("--out", default="demo", help="output directory (default: ./demo)")
    demo.set_defaults(func=_demo)
    models = sub.add_parser("models", help="list the registered models and their options")
    models.set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
