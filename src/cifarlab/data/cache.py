"""Decoded arrays on disk, keyed by the source's checksum, written atomically, verified on read.

An entry is a folder ``<cache>/arrays/<key>/`` holding raw ``.npy`` files and ``meta.json``
(classes, info, and a CRC-32 of every array). It is built in a temporary sibling folder and
renamed into place, so a crash never leaves a half-entry under the real name; a truncated or
altered entry fails its checks on read and is rebuilt rather than trusted. A cache folder that
cannot be written (a full disk) only costs the cache: the caller goes on with the arrays.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

from cifarlab.data.types import Split

_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
_VERSION = 1


def default_home() -> Path:
    return Path(os.environ.get("CIFARLAB_HOME") or Path.home() / ".cache" / "cifarlab")


def entry_path(cache_dir: Path, checksum: str, labels: str) -> Path:
    return Path(cache_dir) / "arrays" / f"{checksum[:32]}-{labels}"


def _crc(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array).data)


def save(path: Path, train: Split, test: Split, classes: list[str], info: dict) -> bool:
    """Write an entry atomically: temp folder beside it, then one rename. A cache folder that
    cannot take it (full disk, read-only, no permission) is not an error: the data loads
    anyway, a warning says it is not cached, and False is returned."""
    try:
        _save(path, train, test, classes, info)
        return True
    except OSError as exc:
        print(f"cifarlab: warning: the decoded data was not cached in {path.parent} "
              f"({exc.strerror or exc}); going on without the cache (free space there, or set CIFARLAB_HOME)",
              file=sys.stderr)
        return False


def _save(path: Path, train: Split, test: Split, classes: list[str], info: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        arrays = dict(zip(_ARRAYS, (train.images, train.labels, test.images, test.labels)))
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        meta = {"version": _VERSION, "classes": classes, "info": info,
                "crc32": {n: _crc(a) for n, a in arrays.items()}}
        (tmp / "meta.json").write_text(json.dumps(meta))
        if path.exists():  # a stale or corrupt entry: replace it
            shutil.rmtree(path, ignore_errors=True)
        try:
            os.replace(tmp, path)
        except OSError:
            if not (path / "meta.json").exists():  # not a concurrent writer winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load(path: Path) -> tuple[Split, Split, list[str], dict] | None:
    """The cached entry, or None when it is missing or fails any check."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("version") != _VERSION:
            return None
        arrays = {n: np.load(path / f"{n}.npy", allow_pickle=False) for n in _ARRAYS}
        if any(_crc(a) != meta["crc32"][n] for n, a in arrays.items()):
            return None
        train = Split(arrays["train_images"], arrays["train_labels"])
        test = Split(arrays["test_images"], arrays["test_labels"])
        return train, test, meta["classes"], meta["info"]
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
