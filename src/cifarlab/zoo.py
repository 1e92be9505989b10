"""The model zoo's facts (parameters, MACs, descriptions) without importing torch.

``cifarlab models`` must answer in well under a second, and importing torch alone takes
1-7 s on a busy 2-core machine. The facts only change when a model's code changes, so they
are computed once (``compute_facts``: each model built on the ``meta`` device, one shape
pass for the MACs) and kept as JSON, keyed by a hash of the model sources:

- ``cifarlab/assets/zoo.json``, shipped with the package (regenerate with
  ``python -m cifarlab.zoo --write`` after changing a model; tests/test_models_cli.py checks
  it is current);
- else ``$CIFARLAB_HOME/zoo.json``, written the first time the shipped copy does not match
  (a checkout whose models were edited).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib import resources
from pathlib import Path

PACKAGED = "zoo.json"
FIELDS = ("name", "family", "summary", "faithful", "reproduces", "params", "keras_total", "keras_nontrainable",
          "macs", "ref_params", "ref_nontrainable", "keras_total_matches", "ref_accuracy", "notes",
          "default_kwargs")


from cifarlab.words import WRITE_UPS, plain_words  # noqa: E402,F401 (re-exported: one home for the words)


def _package_dir() -> Path:
    return Path(str(resources.files("cifarlab")))


def source_key() -> str:
    """sha256 of the model sources (``cifarlab/models/*.py``), the facts' version."""
    digest = hashlib.sha256()
    for path in sorted((_package_dir() / "models").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def packaged_path() -> Path:
    return _package_dir() / "assets" / PACKAGED


def cache_path() -> Path:
    home = os.environ.get("CIFARLAB_HOME") or Path.home() / ".cache" / "cifarlab"
    return Path(home) / PACKAGED


def facts() -> list[dict]:
    """One dict per model (FIELDS), in the zoo's order; computed (seconds) only when no stored
    copy matches the sources."""
    key = source_key()
    for path in (packaged_path(), cache_path()):
        stored = _read(path)
        if stored is not None and stored.get("key") == key:
            return stored["models"]
    rows = compute_facts()
    try:
        _write(cache_path(), key, rows)
    except OSError as exc:  # a read-only or full home: answer anyway, slower next time
        print(f"cifarlab: warning: could not keep the model facts in {cache_path()}: {exc.strerror or exc}",
              file=sys.stderr)
    return rows


def compute_facts() -> list[dict]:
    """The facts of every registered model, measured now (imports torch)."""
    import torch

    from cifarlab.models import count_params, create_model, list_models, model_info
    from cifarlab.models.inspect import macs
    rows = []
    for name in list_models():
        info = model_info(name)
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            model = create_model(name)
        pc = count_params(model)
        rows.append({
            "name": name, "family": info.family, "summary": info.summary, "faithful": info.faithful,
            "reproduces": info.reproduces, "params": pc.trainable, "keras_total": pc.keras_total,
            "keras_nontrainable": pc.keras_nontrainable, "macs": macs(model), "ref_params": info.ref_params,
            "ref_nontrainable": info.ref_nontrainable,
            "keras_total_matches": None if info.ref_params is None else pc.keras_total == info.ref_params,
            "ref_accuracy": info.ref_accuracy, "notes": info.notes,
            "default_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in info.default_kwargs.items()},
        })
    return rows


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("models"), list) else None


def _write(path: Path, key: str, rows: list[dict]) -> None:
    from cifarlab.atomic import atomic_write_text
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"key": key, "models": rows}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m cifarlab.zoo --write``: regenerate the packaged facts."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m cifarlab.zoo", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite cifarlab/assets/{PACKAGED}")
    args = parser.parse_args(argv)
    rows = compute_facts()
    if args.write:
        _write(packaged_path(), source_key(), rows)
        print(f"wrote {packaged_path()} ({len(rows)} models)")
    else:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
