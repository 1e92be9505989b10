"""What every benchmark prints first: versions, hardware, machine load and commit; and the
machine columns of the rows it appends to ``results/`` (``machine(...)``, ``record(...)``).

Numbers without their environment cannot be compared, so each script in this folder
starts its output with ``environment(...)`` and writes ``machine(...)`` into every row.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from pathlib import Path

import torch

from cifarlab import results
from cifarlab.inference.hardware import describe, hardware_info


def commit() -> str:
    """Short hash of HEAD, with ``+dirty`` when tracked files differ from it."""
    return results.commit()


def machine(device: torch.device | None = None, ceilings: dict | None = None) -> dict:
    """The machine columns of a results row (``cifarlab.results.machine``)."""
    return results.machine(device or torch.device("cpu"), ceilings)


def command() -> str:
    """The command line this script was started with, as a shell would take it."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path(__file__).resolve().parents[1])
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def add_results_args(parser) -> None:
    """``--results FOLDER`` and ``--no-results``, for every script that appends rows."""
    parser.add_argument("--results", default=None, metavar="FOLDER",
                        help="append the measured rows to FOLDER/<kind>.csv (default: $CIFARLAB_RESULTS, "
                             "else results/ in this checkout)")
    parser.add_argument("--no-results", action="store_true",
                        help="print only; append no rows (smoke tests, runs on a busy machine)")


def record(kind: str, row: dict, device: torch.device | None = None, ceilings: dict | None = None,
           folder: str | None = None, args=None) -> Path | None:
    """Append ``row`` to ``results/<kind>.csv`` with this machine's columns and the command
    line in front (``folder``, or ``args.results`` from ``add_results_args``, picks another
    folder; ``args.no_results`` appends nothing)."""
    if args is not None:
        if getattr(args, "no_results", False):
            return None
        folder = folder or getattr(args, "results", None)
    return results.append_row(kind, {**machine(device, ceilings), "command": command(), **row}, folder)


def series_name(script: str) -> str:
    """The ``series`` of the rows one invocation writes: the script and its start time."""
    return f"{script} {results.now()}"


def environment(device: torch.device | None = None, packages: tuple[str, ...] = ()) -> str:
    """Device and CPU, library versions (``packages`` are importable names), load, commit."""
    lines = [describe(hardware_info(device))]
    versions = [f"{name} {_version(name)}" for name in packages]
    if device is not None and device.type == "cuda":
        versions += [f"cuda {torch.version.cuda}", f"cudnn {torch.backends.cudnn.version()}",
                     f"{torch.cuda.device_count()} visible GPUs"]
    if versions:
        lines.append(" | ".join(versions))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines.append(f"load average {load} (at start; other work on the machine slows every number) | "
                 f"commit {commit()}")
    return "\n".join(lines)


def _version(name: str) -> str:
    try:
        return getattr(importlib.import_module(name), "__version__", "?")
    except ImportError:
        return "not installed"
