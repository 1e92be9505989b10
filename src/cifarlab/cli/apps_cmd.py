"""``cifarlab serve`` (web page + API) and ``cifarlab app`` (desktop window).

Both list the same models: the shipped default, finished runs from the registry, and
checkpoints named with ``--checkpoint NAME=PATH``.
"""

from __future__ import annotations

import argparse
import sys

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def register(subparsers) -> None:
    _register_serve(subparsers)
    _register_app(subparsers)


def _add_catalog_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help="also offer this checkpoint (file or run folder) under NAME (repeatable)")
    p.add_argument("--no-runs", dest="runs", action="store_false",
                   help="do not list finished runs from the run registry")


def _register_serve(subparsers) -> None:
    from cifarlab.web.limits import ServeLimits
    d = ServeLimits()
    p = subparsers.add_parser("serve", help="web page and JSON API for classifying pictures",
                              description="Serve the page at / and the API at /api (docs at /docs).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    p.add_argument("--port", type=int, default=8000, help="(default %(default)s)")
    _add_catalog_flags(p)
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_bytes / 2**20, help="request body limit (default %(default)s)")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="pixels per picture (decompression-bomb guard) (default %(default)s)")
    p.add_argument("--max-files", type=int, default=d.max_files, help="pictures per request (default %(default)s)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="pictures per forward pass across requests (default %(default)s)")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms, help="how long a batch waits for more requests (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.set_defaults(func=run_serve)


def _register_app(subparsers) -> None:
    p = subparsers.add_parser("app", help="desktop window for classifying pictures (needs the desktop extra)")
    p.add_argument("image", nargs="?", help="picture to open at start")
    _add_catalog_flags(p)
    p.set_defaults(func=run_app)


def _catalog(args):
    from cifarlab.catalog import Catalog, parse_named
    catalog = Catalog(parse_named(args.checkpoint), runs=args.runs)
    catalog.first()  # no model at all: say so now, not on the first request
    return catalog


def run_serve(args: argparse.Namespace) -> int:
    from cifarlab.errors import CifarlabError, ConfigError
    try:
        import uvicorn
    except ImportError:
        raise CifarlabError("cifarlab serve needs uvicorn and FastAPI: pip install 'cifarlab[web]'") from None
    from cifarlab.web import ServeLimits, create_app
    if min(args.max_upload_mb, args.max_pixels, args.max_files, args.max_batch) <= 0:
        raise ConfigError("--max-upload-mb, --max-pixels, --max-files and --max-batch must be positive")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    limits = ServeLimits(int(args.max_upload_mb * 2**20), args.max_pixels, args.max_files, args.max_batch,
                         args.max_wait_ms)
    catalog = _catalog(args)
    if args.host not in LOOPBACK:
        print(f"cifarlab: warning: listening on {args.host}, reachable from other machines", file=sys.stderr)
    for e in catalog.entries():
        acc = "not measured" if e.accuracy is None else f"{e.accuracy:.2%}"
        print(f"model {e.name}: {e.model}, test accuracy {acc} ({e.source})", file=sys.stderr)
    print(f"cifarlab: page at http://{args.host}:{args.port}/  API docs at /docs", file=sys.stderr)
    uvicorn.run(create_app(catalog, limits), host=args.host, port=args.port, log_level="warning",
                access_log=False)
    return 0


def run_app(args: argparse.Namespace) -> int:
    import os

    from cifarlab.desktop import run_window
    from cifarlab.errors import CifarlabError
    headless = not any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))
    if sys.platform.startswith("linux") and headless:  # Qt would abort the process, not raise
        raise CifarlabError("no display to open a window on: set DISPLAY (or run `cifarlab serve` and use "
                            "the web page); QT_QPA_PLATFORM=offscreen runs it without a screen")
    return run_window(_catalog(args), args.image)
