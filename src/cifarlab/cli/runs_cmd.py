"""``cifarlab runs``: list, filter and compare the runs recorded in the run registry (``cifarlab.runlog``)."""

from __future__ import annotations

import argparse
import json
import sys

from cifarlab.cli._help import Defaults


def register(subparsers) -> None:
    p = subparsers.add_parser("runs", help="list, filter, compare and remove recorded runs "
                                           "(SQLite file, or $CIFARLAB_REGISTRY=postgresql://...)",
                              formatter_class=Defaults)
    p.add_argument("--model", help="only runs of this architecture")
    p.add_argument("--status", help="only runs in this state: running | finished | failed | interrupted")
    p.add_argument("--study", help="only the runs of this study or search, one by one")
    p.add_argument("--limit", type=int, default=50, help="at most this many runs (newest first)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="runs_action", metavar="ACTION")
    c = sub.add_parser("compare", help="configs side by side and curves overlaid")
    c.add_argument("refs", nargs="+", metavar="ID|PATH")
    c.add_argument("-o", "--output", help="PNG with the runs' curves overlaid")
    c.add_argument("--all", action="store_true", help="show every config key, not only differing ones")
    c.add_argument("--json", action="store_true")
    r = sub.add_parser("rm", help="remove runs from the registry (and, with --delete-folder, their folders)")
    r.add_argument("refs", nargs="+", metavar="ID|NAME|PATH", help="a run's id, name (NAME-ID when shared) or folder")
    r.add_argument("--delete-folder", action="store_true", help="also delete each run's folder from disk")
    r = sub.add_parser("prune", help="remove failed and interrupted runs from the registry")
    r.add_argument("--delete-folder", action="store_true", help="also delete their folders from disk")
    r.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.add_argument("--all", dest="flat", action="store_true",
                   help="list the runs of studies and searches one by one instead of one line per study")
    p.set_defaults(func=run_runs_cmd)


def run_runs_cmd(args) -> int:
    from cifarlab.runlog import Registry
    reg = Registry()
    reg.refresh()
    if args.runs_action == "compare":
        return _compare(reg, args)
    if args.runs_action == "rm":
        return _remove(reg, [find_run(reg, ref) for ref in args.refs], args.delete_folder)
    if args.runs_action == "prune":
        return _prune(reg, args)
    if args.json:
        rows = reg.list(model=args.model, status=args.status, study=args.study, limit=args.limit)
        print(json.dumps(rows, indent=2))
        return 0
    if args.flat or args.study:
        _print_runs(reg.list(model=args.model, status=args.status, study=args.study, limit=args.limit), reg)
        return 0
    rows = reg.list(model=args.model, status=args.status)
    own = [r for r in rows if not r["study"]][:args.limit] if args.limit else [r for r in rows if not r["study"]]
    if own:
        _print_runs(own, reg)
    else:
        print(f"No runs of your own in {reg} yet: `cifarlab train` makes one.")
    _print_studies([r for r in rows if r["study"]])
    return 0


def _print_runs(rows: list[dict], path) -> None:
    import time
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"runs in {path}", caption="subset: trained on that many images only, so its accuracy "
                  "is not the model's" if any(_subset(r) for r in rows) else None)
    for col in ("id", "name", "model", "status", "created", "test top1", "val best", "time (s)", "study"):
        table.add_column(col, justify="right" if col in ("id", "test top1", "val best", "time (s)") else "left")
    for r in rows:
        m = r["metrics"]
        top1 = _f(m.get("test_top1"))
        if top1 and _subset(r):
            top1 += f" (subset {_subset(r):,})"
        table.add_row(str(r["id"]), r["name"], r["model"] or "", _status(r["status"]),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"])),
                      top1, _f(m.get("val_best_acc")), _f(m.get("time_s"), 1), r["study"] or "")
    Console().print(table)


def _print_studies(rows: list[dict]) -> None:
    """One line per study or search: how many runs, how many finished, how to see them."""
    if not rows:
        return
    studies: dict[str, list[dict]] = {}
    for r in rows:
        studies.setdefault(r["study"], []).append(r)
    from rich.console import Console
    console = Console(highlight=False, soft_wrap=True)
    console.print("Runs of studies and searches (left out of the apps' menus):")
    for study, members in studies.items():
        done = sum(r["status"] == "finished" for r in members)
        console.print(f"  {study}: {_plural(len(members), 'run')}, {done} finished "
                      f"(`cifarlab runs --study {study}`)", markup=False)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _subset(row: dict) -> int | None:
    n = (row.get("config") or {}).get("train_subset")
    return int(n) if n else None


def find_run(reg, ref: str) -> dict:
    """The registry row ``ref`` names: an id, a folder, a name, or NAME-ID; several: an error listing them."""
    from pathlib import Path

    from cifarlab.errors import ConfigError
    text = str(ref).strip()
    if Path(text).is_dir():
        rows = [r for r in reg.list() if r["path"] == str(Path(text).resolve())]
    else:
        rows = [r for r in reg.list() if text in (str(r["id"]), r["name"], f"{r['name']}-{r['id']}")]
    if len(rows) == 1:
        return rows[0]
    if not rows:
        raise ConfigError(f"no run {text!r} in the registry {reg}; list them with `cifarlab runs`")
    listed = "; ".join(f"run {r['id']} ({r['status']}, {r['path']})" for r in rows)
    raise ConfigError(f"{text!r} names {len(rows)} runs: {listed}. Give the run id instead")


def _remove(reg, rows: list[dict], delete_folder: bool) -> int:
    import shutil
    import socket
    from pathlib import Path

    from cifarlab.errors import ConfigError
    from cifarlab.runlog import pid_alive
    for r in rows:  # check them all before removing any
        if r["status"] == "running" and r.get("host") == socket.gethostname() and pid_alive(r.get("pid")):
            raise ConfigError(f"run {r['id']} ({r['name']}) is still training (process {r['pid']}); stop it first")
    for r in rows:
        folder = Path(r["path"])
        reg.remove(r["id"])
        if delete_folder and folder.is_dir():
            if not (folder / "config.json").is_file():  # only ever a run folder
                print(f"cifarlab: warning: {folder} holds no config.json; not deleted", file=sys.stderr)
            else:
                shutil.rmtree(folder)
                print(f"removed run {r['id']} ({r['name']}) and deleted {folder}")
                continue
        print(f"removed run {r['id']} ({r['name']}) from the registry"
              + ("" if delete_folder else f"; its folder stays: {folder}"))
    return 0


def _prune(reg, args) -> int:
    rows = [r for r in reg.list() if r["status"] in ("failed", "interrupted")]
    if not rows:
        print("no failed or interrupted runs")
        return 0
    if args.dry_run:
        for r in rows:
            print(f"would remove run {r['id']} ({r['name']}, {r['status']}): {r['path']}")
        return 0
    return _remove(reg, rows, args.delete_folder)


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
