"""The ``cifarlab`` command line: a thin face over the library.

Each sub-command lives in its own module in this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cifarlab import __version__
from cifarlab.errors import CifarlabError

# module names in cifarlab.cli, in the order their commands appear in --help
_COMMAND_MODULES = [
    "data_cmd",
    "models_cmd",
    "train_cmd",
    "export_cmd",
    "convert_cmd",
    "study_cmd",
    "compare_cmd",
    "runs_cmd",
    "apps_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cifarlab",
        description="Train, compare and use small-image classifiers on CIFAR-10.",
    )
    parser.add_argument("--version", action="version", version=f"cifarlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"cifarlab.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CifarlabError as exc:
        print(f"cifarlab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cifarlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
