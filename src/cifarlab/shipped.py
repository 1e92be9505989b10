"""The models shipped inside the package (``assets/*.pt``), found without importing torch."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

DEFAULT_NAME = "default"
# the rows of results/ that measured the shipped files, packaged beside them (scripts/gen_tables.py
# writes it): an installed package has no results/ folder, and its model cards still need them
MEASURED_FILE = "measured.json"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".onnx")


def default_checkpoint() -> Path:
    """The shipped model's file (it may be absent in a source checkout that never packaged one)."""
    return Path(str(resources.files("cifarlab") / "assets" / "default.pt"))


def shipped_models() -> dict[str, Path]:
    """Shipped name -> checkpoint file, for the files present in this installation: ``default``
    (assets/default.pt) first, then any other ``assets/NAME.pt`` under its own name."""
    path = default_checkpoint()
    out = {DEFAULT_NAME: path} if path.is_file() else {}
    for other in sorted(path.parent.glob("*.pt")):
        out.setdefault(other.stem, other)
    return out


def looks_like_path(ref: str) -> bool:
    """A reference written as a path: a separator, a checkpoint suffix, or a leading dot."""
    return (os.sep in ref or "/" in ref or ref.startswith(".") or ref.startswith("~")
            or ref.lower().endswith(CHECKPOINT_SUFFIXES))


def measured_rows(kind: str) -> list[dict]:
    """The packaged rows of ``results/<kind>.csv`` that measured the shipped files (the last row
    per file, as ``modelcard`` picks them); [] when none were packaged or the file is unreadable."""
    path = default_checkpoint().parent / MEASURED_FILE
    try:
        rows = json.loads(path.read_text()).get(kind, [])
    except (OSError, ValueError, AttributeError):
        return []
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
