"""An image-folder tree ``train/<class>/*`` and ``test/<class>/*``, decoded on all cores.

Decoding is the slow part of a cold load (60,000 JPEGs), so the encoded bytes are cut into
chunks and decoded by a process pool; each worker returns a uint8 block plus the
conversions it made and any file it could not read.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

from cifarlab.data.types import Split
from cifarlab.errors import DataError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
SPLITS = ("train", "test")
_PARALLEL_MIN = 2000  # below this, starting worker processes costs more than it saves
_CHUNK = 2500


def _is_hidden(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def strip_wrapper(names: list[str]) -> str:
    """The single top-level folder wrapping train/ and test/, or "" when there is none."""
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    if tops & set(SPLITS) or len(tops) != 1:
        return ""
    return tops.pop() + "/"


def looks_like_imagefolder(names: list[str]) -> bool:
    prefix = strip_wrapper(names)
    return any(n.startswith(prefix + s + "/") for n in names for s in SPLITS)


def class_order(names: set[str]) -> list[str]:
    """The standard CIFAR-10 label order for its ten classes; sorted names otherwise."""
    return list(CIFAR10_CLASSES) if names == set(CIFAR10_CLASSES) else sorted(names)


def plan(files: list[tuple[str, bytes]], dirs: list[str], source: str
         ) -> tuple[dict[str, list[tuple[str, str, bytes]]], list[str]]:
    """Group files by split and class, check both splits hold the same classes."""
    visible = [(n, b) for n, b in files if not _is_hidden(n)]
    prefix = strip_wrapper([n for n, _ in visible] + dirs)
    groups: dict[str, list[tuple[str, str, bytes]]] = {s: [] for s in SPLITS}
    folders: dict[str, set[str]] = {s: set() for s in SPLITS}
    for d in dirs:
        parts = d.removeprefix(prefix).split("/")
        if len(parts) == 2 and parts[0] in SPLITS and not _is_hidden(d):
            folders[parts[0]].add(parts[1])
    for name, blob in visible:
        parts = name.removeprefix(prefix).split("/")
        if len(parts) == 3 and parts[0] in SPLITS:
            groups[parts[0]].append((parts[1], name, blob))
            folders[parts[0]].add(parts[1])
    _check_tree(groups, folders, source)
    return groups, class_order(folders["train"])


def _check_tree(groups, folders, source: str) -> None:
    for split in SPLITS:
        if not folders[split]:
            raise DataError(f"{source}: no class folders under {split}/; expected {split}/<class>/<image>")
    for a, b in (("train", "test"), ("test", "train")):
        extra = sorted(folders[a] - folders[b])
        if extra:
            raise DataError(f"{source}: class folder {a}/{extra[0]} has no matching {b}/{extra[0]}; "
                            "train/ and test/ must hold the same classes")
    for split in SPLITS:
        filled = {c for c, _, _ in groups[split]}
        empty = sorted(folders[split] - filled)
        if empty:
            raise DataError(f"{source}: class folder {split}/{empty[0]} is empty; add images or remove it")


def decode(items: list[tuple[str, str, bytes]], classes: list[str], workers: int | None = None
           ) -> tuple[Split, Counter, dict[str, str]]:
    """Decode (class, name, bytes) items in name order; return the split and conversions made."""
    items = sorted(items, key=lambda it: (classes.index(it[0]), it[1]))
    labels = np.array([classes.index(c) for c, _, _ in items], np.int64)
    blobs = [b for _, _, b in items]
    images, notes, examples = _decode_all(blobs, workers)
    first = {kind: items[i][1] for kind, i in examples.items()}
    return Split(images, labels), notes, first


def _decode_all(blobs: list[bytes], workers: int | None):
    workers = workers or os.cpu_count() or 1
    chunks = [(start, blobs[start:start + _CHUNK]) for start in range(0, len(blobs), _CHUNK)]
    if workers == 1 or len(blobs) < _PARALLEL_MIN:
        results = [_decode_chunk(c) for c in chunks]
    else:
        with ProcessPoolExecutor(workers, mp_context=_context()) as pool:
            results = list(pool.map(_decode_chunk, chunks))
    images = np.concatenate([r[0] for r in results]) if results else np.zeros((0, 32, 32, 3), np.uint8)
    notes, examples = Counter(), {}
    for _, chunk_notes, chunk_examples, bad in results:
        if bad is not None:
            raise _BadImage(*bad)
        notes.update(chunk_notes)
        for kind, i in chunk_examples.items():
            examples.setdefault(kind, i)
    return images, notes, examples


class _BadImage(Exception):
    """Carries (index, reason) of an unreadable image up to the caller that knows its name."""


def _context():
    # fork starts workers in milliseconds and shares the bytes copy-on-write
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _decode_chunk(chunk: tuple[int, list[bytes]]):
    start, blobs = chunk
    out = np.empty((len(blobs), 32, 32, 3), np.uint8)
    notes, examples = Counter(), {}
    for i, blob in enumerate(blobs):
        try:
            out[i], kinds = _decode_one(blob)
        except Exception as exc:  # Pillow raises many types for bad bytes
            return out, notes, examples, (start + i, " ".join(str(exc).split()) or type(exc).__name__)
        for kind in kinds:
            notes[kind] += 1
            examples.setdefault(kind, start + i)
    return out, notes, examples, None


def _decode_one(blob: bytes) -> tuple[np.ndarray, list[str]]:
    im = Image.open(io.BytesIO(blob))
    kinds = []
    if im.mode != "RGB":
        kinds.append(f"converted {im.mode}->RGB")
        im = im.convert("RGB")
    if im.size != (32, 32):
        kinds.append(f"resized {im.size[0]}x{im.size[1]}->32x32 (bilinear, antialiased)")
        im = im.resize((32, 32), Image.Resampling.BILINEAR)  # Pillow widens the filter when shrinking
    return np.asarray(im), kinds


def read_imagefolder(files: list[tuple[str, bytes]], dirs: list[str], source: str,
                     workers: int | None = None) -> tuple[Split, Split, list[str], list[str]]:
    """Decode both splits; returns (train, test, classes, conversion notes)."""
    groups, classes = plan(files, dirs, source)
    splits, conversions = [], []
    for split in SPLITS:
        try:
            data, notes, first = decode(groups[split], classes, workers)
        except _BadImage as bad:
            index, reason = bad.args
            items = sorted(groups[split], key=lambda it: (classes.index(it[0]), it[1]))
            raise DataError(f"{source}: cannot read image {items[index][1]} ({reason}); "
                            "replace or remove the file") from None
        splits.append(data)
        conversions += [f"{n} {split} image{'s' if n > 1 else ''} {kind} (e.g. {first[kind]})"
                        for kind, n in sorted(notes.items())]
    return splits[0], splits[1], classes, conversions
