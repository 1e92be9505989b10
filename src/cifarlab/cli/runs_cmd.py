"""``cifarlab runs``: list, filter and compare the runs recorded in the run registry (``cifarlab.runlog``)."""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("runs", help="list, filter and compare recorded runs "
                                           "(SQLite file, or $CIFARLAB_REGISTRY=postgresql://...)")
    p.add_argument("--model")
    p.add_argument("--status", help="running | finished | failed | interrupted")
    p.add_argument("--study")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="runs_action", metavar="ACTION")
    c = sub.add_parser("compare", help="configs side by side and curves overlaid")
    c.add_argument("refs", nargs="+", metavar="ID|PATH")
    c.add_argument("-o", "--output", help="PNG with the runs' curves overlaid")
    c.add_argument("--all", action="store_true", help="show every config key, not only differing ones")
    c.add_argument("--json", action="store_true")
    p.set_defaults(func=run_runs_cmd)


def run_runs_cmd(args) -> int:
    from cifarlab.runlog import Registry
    reg = Registry()
    reg.refresh()
    if args.runs_action == "compare":
        return _compare(reg, args)
    rows = reg.list(model=args.model, status=args.status, study=args.study, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    _print_runs(rows, reg)
    return 0


def _print_runs(rows: list[dict], path) -> None:
    import time
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"runs in {path}")
    for col in ("id", "name", "model", "status", "created", "test top1", "val best", "time (s)", "study"):
        table.add_column(col, justify="right" if col in ("id", "test top1", "val best", "time (s)") else "left")
    for r in rows:
        m = r["metrics"]
        table.add_row(str(r["id"]), r["name"], r["model"] or "", _status(r["status"]),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"])),
                      _f(m.get("test_top1")), _f(m.get("val_best_acc")), _f(m.get("time_s"), 1), r["study"] or "")
    Console().print(table)


def _status(status: str) -> str:
    color = {"finished": "green", "running": "cyan", "failed": "red", "interrupted": "yellow"}.get(status, "white")
    return f"[{color}]{status}[/{color}]"


def _f(x, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _compare(reg, args) -> int:
    from pathlib import Path
    from rich.console import Console
    from rich.table import Table
    from cifarlab.studies.report import compare_figure, config_diff
    rows = [reg.get(ref) for ref in args.refs]
    keys, differing = config_diff([r["config"] for r in rows])
    if args.json:
        print(json.dumps({"runs": rows, "differing": sorted(differing)}, indent=2))
    else:
        table = Table(title=f"{len(rows)} runs: {len(differing)} config keys differ (highlighted)")
        table.add_column("key")
        for r in rows:
            table.add_column(f"{r['id'] or ''} {r['name']}")
        for key in keys:
            if key in differing or args.all:
                style = "bold yellow" if key in differing else ""
                table.add_row(key, *[json.dumps(r["config"].get(key)) for r in rows], style=style)
        for key in ("test_top1", "val_best_acc", "time_s"):
            table.add_row(f"= {key}", *[_f(r["metrics"].get(key)) for r in rows], style="cyan")
        Console().print(table)
    if args.output:
        compare_figure([Path(r["path"]) for r in rows], [f"{r['id'] or ''} {r['name']}" for r in rows], args.output)
        print(f"curves: {args.output}", file=sys.stderr)
    return 0
