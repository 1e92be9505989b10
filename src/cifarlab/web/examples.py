"""Example pictures for the page's "Try an example": test pictures of the cached data.

When the data has been loaded once on this machine (``cifarlab train``, ``cifarlab data
info``), its decoded arrays sit in the cache (``cifarlab.data.cache``). A few of its test
pictures, the first ``per_class`` of each class, are offered as examples. Only the
pictures used are read (the arrays are memory-mapped), and nothing is written. Without a
cache there are no examples, and the page hides its button.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Example:
    name: str  # e.g. "test-00042-cat.png"
    label: str  # the class the data set gives it
    png: bytes  # the 32x32 picture


def find_examples(home: Path, classes: list[str] | None = None, per_class: int = 2) -> list[Example]:
    """Examples from the first cache entry under ``home`` whose classes are ``classes`` (any
    entry when None); [] when there is none or it cannot be read."""
    for meta_path in sorted(Path(home).glob("arrays/*/meta.json")):
        try:
            found = _from_entry(meta_path.parent, json.loads(meta_path.read_text()), classes, per_class)
        except (OSError, ValueError, KeyError, TypeError):  # a broken entry: the next one, or none
            continue
        if found:
            return found
    return []


def _from_entry(folder: Path, meta: dict, classes: list[str] | None, per_class: int) -> list[Example]:
    names = list(meta["classes"])
    if classes is not None and names != list(classes):
        return []
    images = np.load(folder / "test_images.npy", mmap_mode="r", allow_pickle=False)
    labels = np.load(folder / "test_labels.npy", mmap_mode="r", allow_pickle=False)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or len(labels) != len(images):
        return []
    labels = np.asarray(labels[:20_000])  # enough to find every class; the rest is not read
    picked = sorted(i for c in range(len(names)) for i in np.flatnonzero(labels == c)[:per_class])
    return [Example(f"test-{i:05d}-{names[labels[i]]}.png", names[labels[i]], _png(np.asarray(images[i])))
            for i in picked]


def _png(array: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def favicon_ico() -> bytes:
    """The page's icon: a 3x3 mosaic of the page's blues (as static/favicon.svg), 16 and 32 px."""
    from PIL import Image, ImageDraw
    img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    colours = ["#1d4ed8", "#60a5fa", "#93c5fd", "#60a5fa", "#2563eb", "#60a5fa", "#93c5fd", "#60a5fa", "#1d4ed8"]
    for k, colour in enumerate(colours):
        x, y = 1 + (k % 3) * 10, 1 + (k // 3) * 10
        draw.rounded_rectangle((x, y, x + 9, y + 9), radius=2, fill=colour)
    buf = io.BytesIO()
    img.save(buf, "ICO", sizes=[(16, 16), (32, 32)])
    return buf.getvalue()
