"""``cifarlab serve`` (web page + API) and ``cifarlab app`` (desktop window).

Both list the same models: the shipped default, finished runs from the registry, and
checkpoints named with ``--checkpoint NAME=PATH``.
"""

from __future__ import annotations

import argparse
import sys

_GRACE_S = 5  # seconds
LOOPBACK = {"127.0.0.1", "localhost", "::1"}  # the only hosts served without a token


def register(subparsers) -> None:
    _register_serve(subparsers)
    _register_app(subparsers)


def _add_catalog_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help="also offer this checkpoint (file or run folder) under NAME (repeatable)")
    p.add_argument("--no-runs", dest="runs", action="store_false",
                   help="do not list finished runs from the run registry")
    p.add_argument("--all-runs", action="store_true",
                   help="also list the runs of studies, searches and training subsets (left out by default)")


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
    p.add_argument("--max-request-mpixels", type=float, default=d.max_request_pixels / 1e6,
                   help="pixels of all pictures in one request together, in millions (default %(default)s)")
    p.add_argument("--decode-budget-mb", type=float, default=d.decode_budget_bytes / 2**20,
                   help="estimated memory of the pictures decoding at once; others wait (default %(default)s)")
    p.add_argument("--max-inflight", type=int, default=d.max_inflight,
                   help="requests served at once; more get 429 (default %(default)s)")
    p.add_argument("--max-inflight-mb", type=float, default=d.max_inflight_bytes / 2**20,
                   help="their upload sizes together; more get 429 (default %(default)s)")
    p.add_argument("--body-timeout", type=float, default=d.body_timeout_s,
                   help="seconds for a whole upload to arrive; slower gets 408 (default %(default)s)")
    p.add_argument("--work-timeout", type=float, default=d.work_timeout_s,
                   help="seconds for decoding and the model per request; longer gets 503 (default %(default)s)")
    p.add_argument("--token", default=None,
                   help="API token clients must send (Authorization: Bearer TOKEN); required unless --host is "
                        "loopback; default: $CIFARLAB_TOKEN (safer: not shown in the process list)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for the model (default: torch's own choice less one, at least 1: "
                        "the event loop and the picture decoders keep a core)")
    p.set_defaults(func=run_serve)


def _register_app(subparsers) -> None:
    p = subparsers.add_parser("app", help="desktop window for classifying pictures (needs the desktop extra)")
    p.add_argument("image", nargs="?", help="picture to open at start")
    _add_catalog_flags(p)
    p.set_defaults(func=run_app)


def _catalog(args):
    from cifarlab.catalog import Catalog, parse_named
    catalog = Catalog(parse_named(args.checkpoint), runs=args.runs, all_runs=args.all_runs)
    catalog.first()  # no model at all: say so now, not on the first request
    return catalog


def _limits(args):
    from cifarlab.errors import ConfigError
    from cifarlab.web import ServeLimits
    values = (args.max_upload_mb, args.max_pixels, args.max_files, args.max_batch, args.max_request_mpixels,
              args.decode_budget_mb, args.max_inflight, args.max_inflight_mb, args.body_timeout, args.work_timeout)
    if min(values) <= 0:
        raise ConfigError("--max-*, --decode-budget-mb and the timeouts must be positive")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads} must be at least 1 (leave it out for all cores but one)")
    if args.max_inflight_mb < args.max_upload_mb:  # else every upload of the largest size gets 429
        raise ConfigError(f"--max-inflight-mb ({args.max_inflight_mb:g}) must be at least --max-upload-mb "
                          f"({args.max_upload_mb:g})")
    return ServeLimits(max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels,
                       max_files=args.max_files, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                       max_request_pixels=int(args.max_request_mpixels * 1e6),
                       decode_budget_bytes=int(args.decode_budget_mb * 2**20), max_inflight=args.max_inflight,
                       max_inflight_bytes=int(args.max_inflight_mb * 2**20), body_timeout_s=args.body_timeout,
                       work_timeout_s=args.work_timeout)


def _token(args) -> str | None:
    """The API token; refuses to serve beyond loopback without one."""
    import os

    from cifarlab.errors import ConfigError
    token = args.token or os.environ.get("CIFARLAB_TOKEN") or None
    if token is None and args.host not in LOOPBACK:
        raise ConfigError(f"serving on {args.host} (beyond this machine) needs an API token: pass --token or set "
                          f"CIFARLAB_TOKEN (127.0.0.1 needs none)")
    return token


def _check_listen(host: str, port: int) -> None:
    """One line when ``host:port`` cannot be listened on (range, privilege, in use, unknown host)."""
    import errno
    import socket

    from cifarlab.errors import ConfigError
    if not 0 <= port <= 65535:  # 0: any free port
        raise ConfigError(f"--port {port} must be between 0 and 65535")
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind(address)
    except OSError as exc:
        hint = {errno.EACCES: "; ports below 1024 need administrator rights: pick another --port, e.g. 8000",
                errno.EADDRINUSE: "; another program listens there: stop it or pick another --port"}
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint.get(exc.errno, '')}") from None


def run_serve(args: argparse.Namespace) -> int:
    from cifarlab.errors import CifarlabError
    try:
        import uvicorn
    except ImportError:
        raise CifarlabError("cifarlab serve needs uvicorn and FastAPI: pip install 'cifarlab[web]'") from None
    from cifarlab.web import create_app
    from cifarlab.web.app import release_freed_memory
    limits, token = _limits(args), _token(args)
    _check_listen(args.host, args.port)  # before any work, and before the URL is printed
    release_freed_memory()  # else decoded pictures' memory lingers past the decode budget
    import torch
    # the forward passes get every core but one: the event loop (/health, the uploads) and the
    # decoders keep one to themselves (the --threads 1 rows of results/serve_load.csv, on 2 cores)
    torch.set_num_threads(args.threads or max(1, torch.get_num_threads() - 1))
    catalog = _catalog(args)
    if args.host not in LOOPBACK:
        print(f"cifarlab: warning: listening on {args.host}, reachable from other machines", file=sys.stderr)
    for e in catalog.entries():
        acc = "not measured" if e.accuracy is None else f"{e.accuracy:.2%}"
        print(f"model {e.name}: {e.model}, test accuracy {acc} ({e.source})", file=sys.stderr)
    print(f"cifarlab: page at http://{args.host}:{args.port}/  API docs at /docs", file=sys.stderr)
    if token:
        print(f"cifarlab: API token required: clients send 'Authorization: Bearer <token>'; "
              f"the page: http://{args.host}:{args.port}/#token=<token>", file=sys.stderr)
    # a decode or forward pass holding the GIL gives it back to the event loop within 1 ms, not
    # Python's 5: /health and small requests answer while big ones are being worked on
    sys.setswitchinterval(0.001)
    # on Ctrl-C or SIGTERM, requests still running (a slow upload, say) get at most _GRACE_S
    uvicorn.run(create_app(catalog, limits, token=token), host=args.host, port=args.port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=_GRACE_S)
    return 0


def run_app(args: argparse.Namespace) -> int:
    import os

    from cifarlab.desktop import run_window
    from cifarlab.errors import CifarlabError
    headless = not any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))
    if sys.platform.startswith("linux") and headless:  # Qt would abort the process, not raise
        raise CifarlabError("no display to open a window on: set DISPLAY (or run `cifarlab serve` and use "
                            "the web page); QT_QPA_PLATFORM=offscreen runs it without a screen")
    missing = missing_qt_libraries() if sys.platform.startswith("linux") else []
    if missing:  # else Qt aborts (exit 134) with a message about its "xcb" plugin
        raise CifarlabError(f"the desktop window needs system libraries that are missing: {', '.join(missing)}; "
                            f"install them with `sudo bash scripts/sysdeps.sh` (Debian/Ubuntu: apt-get install "
                            f"{' '.join(debian_package(lib) for lib in missing)}), or use `cifarlab serve`")
    return run_window(_catalog(args), args.image)


# Qt 6.5+ opens this one itself at start (dlopen), so ldd does not list it
_QT_DLOPENED = ("libxcb-cursor.so.0",)


def missing_qt_libraries() -> list[str]:
    """Shared libraries Qt's X11 platform plugin needs and this system lacks (``ldd``); [] where
    the plugin is not the one in use (QT_QPA_PLATFORM=offscreen, wayland) or cannot be checked."""
    import ctypes
    import os
    import shutil
    import subprocess
    from pathlib import Path

    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith("xcb"):
        return []
    try:
        import PySide6
    except ImportError:
        return []  # run_window says how to install the desktop extra
    qt = Path(PySide6.__file__).parent / "Qt"
    files = [qt / "plugins" / "platforms" / "libqxcb.so", *sorted((qt / "lib").glob("libQt6XcbQpa.so*"))[:1]]
    if not shutil.which("ldd") or not files[0].is_file():
        return []
    missing: list[str] = []
    for f in files:
        out = subprocess.run(["ldd", str(f)], capture_output=True, text=True, timeout=20).stdout
        missing += [line.split()[0] for line in out.splitlines() if "not found" in line]
    for lib in _QT_DLOPENED:
        try:
            ctypes.CDLL(lib)
        except OSError:
            missing.append(lib)
    return list(dict.fromkeys(missing))


def debian_package(soname: str) -> str:
    """The Debian package of a shared library: libxcb-icccm.so.4 -> libxcb-icccm4,
    libxkbcommon-x11.so.0 -> libxkbcommon-x11-0."""
    stem, _, version = soname.partition(".so.")
    version = version.split(".")[0]
    return f"{stem}-{version}" if stem[-1:].isdigit() else f"{stem}{version}"
