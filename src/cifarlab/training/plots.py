"""Figures of a run: training curves and the confusion matrix (matplotlib, optional)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cifarlab.atomic import atomic_path, atomic_write_text
from cifarlab.errors import CifarlabError


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend; one line naming the extra when missing."""
    try:
        import matplotlib
    except ImportError:
        raise CifarlabError("plots need matplotlib: pip install 'cifarlab[plots]'") from None
    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt
    return plt


def save_png(fig, path: Path, dpi: int = 110) -> None:
    """Written atomically: a reader never sees half a figure."""
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=dpi)


def save_curves(history: list[dict], path: str | Path) -> None:
    """Two panels like the reference repository: accuracy and loss, train vs validation."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, what in zip(axes, ("acc", "loss")):
        ax.plot(epochs, [h[f"train_{what}"] for h in history], "o-", label="train")
        if history and f"val_{what}" in history[0]:
            ax.plot(epochs, [h[f"val_{what}"] for h in history], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("top-1 accuracy" if what == "acc" else "loss")
        ax.set_title("accuracy" if what == "acc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_png(fig, Path(path))
    plt.close(fig)


def save_confusion(confusion: np.ndarray, classes: list[str], path: str | Path, title: str = "") -> None:
    """Counts per (true, predicted) pair, rows normalised for the colour."""
    plt = pyplot()
    rows = confusion.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(confusion / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right")
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    if len(classes) <= 20:
        for i in ticks:
            for j in ticks:
                ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if confusion[i, j] > 0.5 * max(rows[i, 0], 1) else "black")
    fig.tight_layout()
    save_png(fig, Path(path))
    plt.close(fig)


def save_confusion_csv(confusion: np.ndarray, classes: list[str], path: str | Path) -> None:
    lines = ["true\\predicted," + ",".join(classes)]
    lines += [f"{c}," + ",".join(str(int(v)) for v in row) for c, row in zip(classes, confusion)]
    atomic_write_text(path, "\n".join(lines) + "\n")
