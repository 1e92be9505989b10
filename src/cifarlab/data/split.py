"""Carving the validation split from the training set: stratified and seeded."""

from __future__ import annotations

import numpy as np

from cifarlab.data.types import Split, stratified_indices
from cifarlab.errors import ConfigError


def carve_val(train: Split, val: int, seed: int) -> tuple[Split, Split]:
    """(train minus val, val): ``val`` images drawn per class in proportion, by ``seed``."""
    if val < 0 or val >= len(train):
        raise ConfigError(f"val={val} is out of range; use 0 <= val < {len(train)} (the training set size)")
    if val == 0:
        return train, Split.empty(train.images.shape[1:])
    val_idx = stratified_indices(train.labels, val, seed)
    keep = np.ones(len(train), bool)
    keep[val_idx] = False
    return train.take(np.flatnonzero(keep)), train.take(val_idx)


def class_counts(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    hist = np.bincount(labels, minlength=len(classes))
    return {c: int(n) for c, n in zip(classes, hist)}
