"""Metrics that measure what their names say.

``accuracy`` is always top-1 categorical accuracy (argmax of the logits equals the
label), whatever the loss. ``binary_accuracy`` is Keras' metric of the same name: each of
the C softmax outputs thresholded at 0.5 and compared with the one-hot target, averaged
over N*C entries. On 10 balanced classes a model that is never confident scores 90%
binary accuracy and 10% top-1 -- the trap Keras' ``'accuracy'`` with
``binary_crossentropy`` falls into. It is reported under its own name, never as accuracy.
"""

from __future__ import annotations

import numpy as np
import torch


def topk_correct(logits: torch.Tensor, y: torch.Tensor, k: int = 1) -> int:
    """How many labels are among the ``k`` highest logits."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return int((top == y[:, None]).any(dim=1).sum())


def binary_correct(logits: torch.Tensor, y: torch.Tensor) -> int:
    """Entries (out of N*C) where softmax >= 0.5 agrees with the one-hot target."""
    predicted = torch.softmax(logits.float(), dim=1) >= 0.5
    target = torch.nn.functional.one_hot(y, logits.shape[1]).bool()
    return int((predicted == target).sum())


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``[true, predicted]`` counts, int64 [C, C]."""
    idx = np.asarray(y_true, np.int64) * num_classes + np.asarray(y_pred, np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class; NaN for a class with no examples."""
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(confusion) / np.maximum(totals, 1), np.nan)


class Accumulator:
    """Running sums over batches: loss, top-1, top-5, binary accuracy, predictions."""

    def __init__(self, keep_predictions: bool = False):
        self.n = 0
        self.loss_sum = 0.0
        self.correct1 = self.correct5 = self.binary = self.entries = 0
        self.keep = keep_predictions
        self.y_true: list[np.ndarray] = []
        self.y_pred: list[np.ndarray] = []

    def update(self, logits: torch.Tensor, y: torch.Tensor, loss: float | None = None) -> None:
        logits = logits.detach().float()
        b = len(y)
        self.n += b
        if loss is not None:
            self.loss_sum += loss * b
        self.correct1 += topk_correct(logits, y, 1)
        self.correct5 += topk_correct(logits, y, 5)
        self.binary += binary_correct(logits, y)
        self.entries += logits.numel()
        if self.keep:
            self.y_true.append(y.cpu().numpy())
            self.y_pred.append(logits.argmax(1).cpu().numpy())

    def summary(self, prefix: str = "", binary: bool = False) -> dict[str, float]:
        n = max(self.n, 1)
        out = {f"{prefix}loss": self.loss_sum / n, f"{prefix}acc": self.correct1 / n}
        if binary:
            out[f"{prefix}binary_acc"] = self.binary / max(self.entries, 1)
        return out

    def predictions(self) -> tuple[np.ndarray, np.ndarray]:
        cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
        return cat(self.y_true), cat(self.y_pred)
