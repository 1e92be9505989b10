"""What every benchmark prints first: versions, hardware, machine load and commit.

Numbers without their environment cannot be compared, so each script in this folder
starts its output with ``environment(...)``.
"""

from __future__ import annotations

import importlib
import os
import subprocess
from pathlib import Path

import torch

from cifarlab.engine.hardware import describe, hardware_info


def commit() -> str:
    """Short hash of HEAD, with ``+dirty`` when tracked files differ from it."""
    here = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=here).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=here).stdout.strip()
    except OSError:
        return "unknown"
    return (head + ("+dirty" if dirty else "")) or "unknown"


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
