"""Measured numbers as data: one CSV file per kind of measurement under ``results/``.

Every benchmark script appends its rows here (``append_row``); ``cifarlab train
--list-recipes``, ``cifarlab models`` and the README's tables read them back. Source code
holds no measured figure: it asks this module.

A row is a flat dict. The columns every kind shares come first, in this order:

``date``       UTC time the row was written (ISO 8601, to the second), filled in if absent
``commit``     short hash of the checkout that measured it (``+dirty`` when tracked files
               differed), filled in if absent
``machine``    the CPU model (or GPU name) the numbers came from; ``cores``, ``bf16`` (does
               the device compute bf16 natively), ``amx`` and the measured matmul ceilings
               ``ceiling_fp32_gflops`` / ``ceiling_bf16_gflops`` where measured
``command``    the exact command line that produced the row
``seed``       the seed, where the measurement has one
``source``     for rows converted from an older raw output, that file as ``path@commit``
               (``git show COMMIT:PATH`` prints it)
``series``     a name shared by rows that are one set of seeds (see ``seed_groups``)

then the kind's own metrics in the order the first row gave them. Columns a later row
adds are appended to the header (the file is rewritten once, atomically); a row that
lacks a column leaves it empty.

Conventions the readers rely on: ``model`` names the network trained, ``recipe`` the
recipe, ``test_top1_pct`` the test top-1 accuracy in percent, ``budget_s`` a time
budget in seconds, ``train_images`` how many training images (a subset run is not the
model's figure).

The folder is ``$CIFARLAB_RESULTS`` when set, else ``results/`` at the root of the
checkout this module runs from. An installed package without a checkout has none:
readers then see no rows.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from cifarlab.atomic import atomic_path
from cifarlab.errors import ConfigError

COMMON = ("date", "commit", "machine", "cores", "bf16", "amx", "ceiling_fp32_gflops", "ceiling_bf16_gflops",
          "command", "seed", "source", "series")

_KIND = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def results_dir() -> Path:
    """``$CIFARLAB_RESULTS``, else ``results/`` beside ``src/`` in this checkout."""
    env = os.environ.get("CIFARLAB_RESULTS")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "results"


def _path(kind: str, folder: str | Path | None = None) -> Path:
    if not _KIND.match(kind):
        raise ConfigError(f"results kind {kind!r} is not a plain name; use lowercase letters, digits, - and _")
    return Path(folder or results_dir()) / f"{kind}.csv"


def kinds(folder: str | Path | None = None) -> list[str]:
    """The kinds of measurement on file (the CSV names without ``.csv``), sorted."""
    root = Path(folder or results_dir())
    return sorted(p.stem for p in root.glob("*.csv")) if root.is_dir() else []


def commit() -> str:
    """Short hash of HEAD of the checkout holding this file, ``+dirty`` when tracked files
    differ from it; ``unknown`` outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=here, timeout=10)
        if head.returncode:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=here, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head.stdout.strip() + ("+dirty" if dirty else "")) or "unknown"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def machine(device=None, ceilings: dict | None = None) -> dict:
    """The machine columns of a row: ``machine`` (the CPU model, or the GPU's name on CUDA),
    ``cores``, ``bf16`` (native bf16 on ``device``), ``amx``, and the matmul ceilings in GFLOP/s
    where the caller measured them (``ceilings``: {"float32": x, "bf16": y}). ``device``: a
    torch device or its name (default: the one training would pick)."""
    import torch

    from cifarlab.inference.hardware import hardware_info, pick_device
    info = hardware_info(pick_device(device or "auto"))
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    row = {"machine": info["device_name"], "cores": info["cores"], "bf16": bool(info["bf16_native"]),
           "amx": bool(probe()) if probe is not None else False}
    ceilings = ceilings or {}
    if "float32" in ceilings:
        row["ceiling_fp32_gflops"] = round(ceilings["float32"], 1)
    if "bf16" in ceilings:
        row["ceiling_bf16_gflops"] = round(ceilings["bf16"], 1)
    return row


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.0f}"
    return str(value)


def _header(old: list[str], row: dict) -> list[str]:
    keys = list(old) or [k for k in COMMON if k in row]
    keys += [k for k in row if k not in keys]
    return keys


def append_row(kind: str, row: dict, folder: str | Path | None = None) -> Path:
    """Append one measurement to ``results/<kind>.csv`` (created with a header if new) and
    return the file. ``date``, ``commit`` and ``command`` (this process's command line) are
    filled in when the row has none, and the machine columns (``machine()``, this machine)
    when it has no ``machine``.

    Values: numbers, strings, booleans (written yes/no) or None (empty). A string holding
    a comma, quote or newline is quoted as CSV quotes it.
    """
    row = dict(row) if row.get("machine") else {**machine(), **row}
    if not row.get("command"):  # the command line of this process, as typed
        row["command"] = shlex.join([Path(sys.argv[0]).name or "python", *sys.argv[1:]])
    if not row.get("date"):
        row["date"] = now()
    if not row.get("commit"):
        row["commit"] = commit()
    path = _path(kind, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):  # another process's append or header rewrite waits for this one
        return _append(path, kind, row, folder)


def record(kind: str, row: dict) -> Path | None:
    """``append_row`` where a results folder is kept (``$CIFARLAB_RESULTS``, or ``results/`` of
    the checkout the code runs from); None, and nothing written, for an installed package."""
    if not (os.environ.get("CIFARLAB_RESULTS") or results_dir().is_dir()):
        return None
    return append_row(kind, row)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``.<name>.lock`` beside ``path`` (POSIX; elsewhere none)."""
    try:
        import fcntl
    except ImportError:  # Windows: appends are single writes; a header rewrite may race
        yield
        return
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _append(path: Path, kind: str, row: dict, folder) -> Path:
    old_header: list[str] = []
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as f:
            old_header = next(csv.reader(f), [])
    header = _header(old_header, row)
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow([_cell(row.get(k)) for k in header])
    if header == old_header:
        with path.open("a", newline="") as f:  # one write: concurrent appenders do not interleave
            f.write(line.getvalue())
        return path
    rows = read_rows(kind, folder, raw=True) if old_header else []
    with atomic_path(path, ".csv") as tmp:
        with tmp.open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            for old in rows:
                w.writerow([old.get(k, "") for k in header])
            f.write(line.getvalue())
    return path


_TEXT = {"date", "commit", "machine", "command", "source", "series", "recipe", "model", "set", "note"}


def _value(key: str, text: str):
    if text == "":
        return None
    if key in _TEXT:
        return text
    if text in ("yes", "no"):
        return text == "yes"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_rows(kind: str, folder: str | Path | None = None, raw: bool = False) -> list[dict]:
    """The rows of ``results/<kind>.csv`` in file order ([] when there is none). Values come
    back as int, float, bool or str, empty cells as None (``raw=True``: every value the
    string in the file)."""
    path = _path(kind, folder)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if raw:
        return [{k: v or "" for k, v in r.items() if k is not None} for r in rows]
    return [{k: _value(k, v or "") for k, v in r.items() if k is not None} for r in rows]


def _without_seed(command: str) -> str:
    return re.sub(r"\s--(first-)?seeds?[ =]\S+", "", command or "")


def series_key(row: dict):
    """What makes rows one set of seeds: their ``series`` label when they have one (a benchmark
    run, or seeds run one by one and named alike), else the commit and the command without
    its seed flags."""
    return row.get("series") or (row.get("commit"), _without_seed(row.get("command")))


GROUP_KEYS = ("recipe", "set", "model", "budget_s", "machine")


def seed_groups(rows: list[dict], keys: tuple[str, ...] = GROUP_KEYS) -> list[dict]:
    """Rows that differ only in their seed, gathered (same ``keys`` and the same series, see
    ``series_key``): each group is the first row's fields plus ``n`` (seeds), ``test_top1_pct``
    (mean), ``test_top1_std`` (sample standard deviation, None for one seed), ``seeds``,
    ``commits`` (every commit in it, in order) and ``date`` (the latest)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("test_top1_pct") is None:
            continue
        groups.setdefault((*(r.get(k) for k in keys), series_key(r)), []).append(r)
    out = []
    for members in groups.values():
        accs = [m["test_top1_pct"] for m in members]
        commits = list(dict.fromkeys(str(m.get("commit")) for m in members))
        out.append({**members[0], "n": len(members), "seeds": [m.get("seed") for m in members],
                    "test_top1_pct": statistics.mean(accs),
                    "test_top1_std": statistics.stdev(accs) if len(accs) > 1 else None,
                    "commits": commits, "date": max(str(m.get("date") or "") for m in members),
                    "wall_s_range": _range(members, "wall_s")})
    return out


def _range(rows: list[dict], key: str) -> tuple | None:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return (min(values), max(values)) if values else None


# kinds whose rows vary a model's settings on purpose (a study's factors): not a model's measured accuracy
NOT_MODEL_MEASUREMENTS = ("study",)


def _accuracy_rows(folder: str | Path | None = None) -> list[dict]:
    rows = []
    for kind in (k for k in kinds(folder) if k not in NOT_MODEL_MEASUREMENTS):
        for r in read_rows(kind, folder):
            if r.get("model") and r.get("test_top1_pct") is not None:
                rows.append({**r, "kind": kind})
    return rows


def measured_accuracy(model: str, folder: str | Path | None = None) -> dict | None:
    """The best measured test top-1 of ``model`` trained on the full training set, from every
    kind on file, or None when it was never measured (rows with ``train_subset`` set do not
    count).

    Rows that differ only in their seed count as one measurement (``seed_groups``); groups of
    3 seeds or more come before smaller ones, then the highest mean, then the later. The dict
    is a row of the group (``budget_s``, ``epochs``, ``machine``, ``recipe``, ``command``,
    ``kind``...) with ``test_top1_pct`` the group's mean, ``test_top1_std``, ``n``, ``commits``
    and ``date`` the latest.
    """
    return _best_measurement(model, _accuracy_rows(folder))


def _best_measurement(model: str, accuracy_rows: list[dict]) -> dict | None:
    """``measured_accuracy``'s choice among ``accuracy_rows`` (``_accuracy_rows``)."""
    rows = [r for r in accuracy_rows if r["model"] == model and not r.get("train_subset")]
    if not rows:
        return None
    groups = seed_groups(rows, keys=("kind", *GROUP_KEYS))
    return max(groups, key=lambda g: (g["n"] >= 3, g["test_top1_pct"], g["date"]))


def _same(value, wanted) -> bool:
    if str(value) == str(wanted):
        return True
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return False


def matches(row: dict, config: dict | None) -> bool:
    """Whether a cpu_frontier row measured what ``config`` (a recipe's config as a dict) is
    now: every ``--set KEY=VALUE`` of the row holds in it, the row's test views (``tta``) are
    the config's, and so is its time budget (``budget_s``; none for a fixed epoch count).
    Without a config every row without a ``--set`` matches."""
    changes = dict(item.partition("=")[::2] for item in (row.get("set") or "").split())
    if config is None:
        return not changes
    if any(key not in config or not _same(config[key], value) for key, value in changes.items()):
        return False
    if "time_budget" in config and "time_budget" not in changes and \
            not _same(row.get("budget_s") or 0, config["time_budget"] or 0):
        return False
    return row.get("tta") is None or "tta" not in config or row["tta"] == config["tta"]


def recipe_figure(recipe: str, config: dict | None = None, folder: str | Path | None = None) -> dict | None:
    """The latest measurement of ``recipe`` as ``config`` has it (see ``matches``), seeds
    gathered (``seed_groups``), from ``results/cpu_frontier.csv``; None when there is none."""
    rows = [r for r in read_rows("cpu_frontier", folder)
            if r.get("recipe") == recipe and not r.get("train_subset") and matches(r, config)]
    if not rows:
        return None
    return max(seed_groups(rows), key=lambda g: (g["date"], g["n"]))


def format_accuracy(group: dict) -> str:
    """``MEAN ± SD% (N seeds)`` text of a ``seed_groups`` entry (two decimals)."""
    text = f"{group['test_top1_pct']:.2f}"
    if group.get("test_top1_std") is not None:
        text += f" ± {group['test_top1_std']:.2f}"
    n = group.get("n", 1)
    return f"{text}% ({n} seed{'s' if n != 1 else ''})"


def describe(group: dict) -> str:
    """One line for a measured figure: accuracy, seeds, wall time, machine, date and commits."""
    parts = [format_accuracy(group)]
    wall = group.get("wall_s_range")
    if wall:
        parts.append(f"in {wall[0]:.0f} s" if round(wall[0]) == round(wall[1]) else f"in {wall[0]:.0f}-{wall[1]:.0f} s")
    if group.get("budget_s"):
        parts.append(f"budget {group['budget_s']:g} s")
    if group.get("machine"):
        parts.append(f"{group.get('cores') or '?'}-core {group['machine']}")
    date = str(group.get("date") or "")[:10]
    commits = ", ".join(group.get("commits") or [str(group.get("commit"))])
    parts.append(f"{date}, commit {commits}")
    return ", ".join(parts)


def measured_accuracies(models: list[str], folder: str | Path | None = None) -> dict[str, dict | None]:
    """``measured_accuracy`` of each of ``models``, reading results/ once (``cifarlab models``
    asks for 30 models and must answer in well under a second)."""
    rows = _accuracy_rows(folder)
    return {model: _best_measurement(model, rows) for model in models}
