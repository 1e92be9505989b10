"""``cifarlab data info PATH`` and ``cifarlab data prepare [PATH]``: inspect and cache a data set."""

from __future__ import annotations

import argparse

from cifarlab.cli._help import Defaults


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect and prepare CIFAR data sets")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="format, counts per split and class, checksum, cache, conversions",
                          formatter_class=Defaults)
    info.add_argument("path", nargs="?", default=None,
                      help="archive or folder (official python/binary batches or image folder); "
                           "default: $CIFARLAB_DATA")
    _common(info)
    info.set_defaults(func=run_info)
    prep = sub.add_parser("prepare", help="decode a data set once and cache the arrays",
                          formatter_class=Defaults)
    prep.add_argument("path", nargs="?", default=None,
                      help="archive or folder; default: $CIFARLAB_DATA, the cache folder, then download")
    prep.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100"])
    prep.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    _common(prep)
    prep.set_defaults(func=run_prepare)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", default="fine", choices=["fine", "coarse"], help="CIFAR-100 label set")
    parser.add_argument("--cache-dir", default=None,
                        help="where decoded arrays are kept; none given: $CIFARLAB_HOME (~/.cache/cifarlab)")


def run_info(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cifarlab.data.load import read_source

    import os

    from cifarlab.errors import DataError
    path = args.path or os.environ.get("CIFARLAB_DATA")
    if not path:
        raise DataError("no data set named: give `cifarlab data info PATH` or set CIFARLAB_DATA to an archive "
                        "or folder")
    _, _, classes, info = read_source(Path(path).expanduser(), labels=args.labels,
                                      cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    _render(info, classes)
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from cifarlab.data import load_cifar

    data = load_cifar(args.path, val=0, dataset=args.dataset, labels=args.labels,
                      cache_dir=args.cache_dir, download=not args.no_download)
    _render(data.info, data.classes)
    return 0


def _render(info, classes: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table(show_header=False, box=None)
    summary.add_column(no_wrap=True)
    summary.add_column(overflow="fold")
    train_n, test_n = (sum(info.counts.get(s, {}).values()) for s in ("train", "test"))
    for key, value in (("format", info.format), ("source", info.source), ("sha256", info.checksum),
                       ("cache", info.cache_path or "-"), ("classes", str(len(classes))),
                       ("train images", f"{train_n:,}"), ("test images", f"{test_n:,}")):
        summary.add_row(f"[bold]{key}[/]", value)
    console.print(summary)
    counts = Table(title="images per class")
    for col in ("label", "class", "train", "test"):
        counts.add_column(col, justify="right" if col != "class" else "left")
    for i, name in enumerate(classes):
        counts.add_row(str(i), name, f"{info.counts['train'].get(name, 0):,}", f"{info.counts['test'].get(name, 0):,}")
    console.print(counts)
    console.print("conversions: " + ("; ".join(info.conversions) if info.conversions else "none"))
