"""Reading and writing a run folder's JSON files (``summary.json``, ``config.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from cifarlab.atomic import atomic_write_text


def read_summary(run_dir: str | Path) -> dict | None:
    """A run's summary.json (the run finished and was tested); None when there is none or it
    cannot be read. The one reader of that file: reports, the run registry, the catalogue."""
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(Path(path), json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")
