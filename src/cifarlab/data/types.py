"""The in-memory form of a data set: uint8 images and int64 labels per split."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass
class Split:
    images: np.ndarray  # uint8 [N, 32, 32, 3], HWC as stored by CIFAR
    labels: np.ndarray  # int64 [N]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N,H,W,C], got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.labels = np.asarray(self.labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> "Split":
        return Split(self.images[index], self.labels[index])

    @classmethod
    def empty(cls, shape: tuple[int, int, int] = (32, 32, 3)) -> "Split":
        return cls(np.zeros((0, *shape), np.uint8), np.zeros(0, np.int64))


@dataclass
class DataInfo:
    format: str  # "cifar10-python", "cifar10-binary", "cifar100-python", "imagefolder", "memory"
    source: str  # path it was read from
    checksum: str = ""  # sha256 of the source file, or of a directory's listing and contents
    cache_path: str | None = None
    conversions: list[str] = field(default_factory=list)  # e.g. "12 images converted L->RGB"
    counts: dict = field(default_factory=dict)  # {"train": {class: n}, "test": {class: n}}


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Pick ``n`` indices with every class represented in proportion, reproducibly."""
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / counts.sum() * n).astype(int)
    # hand the remainder to the classes with the largest fractional share
    remainder = n - quota.sum()
    order = np.argsort(-(counts / counts.sum() * n - quota), kind="stable")
    quota[order[:remainder]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


@dataclass
class CifarData:
    train: Split
    val: Split  # carved from the training set; empty when val=0
    test: Split
    classes: list[str]
    info: DataInfo

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, train: int | None = None, val: int | None = None,
               test: int | None = None, seed: int = 0) -> "CifarData":
        """A smaller copy with each split cut to the given size, stratified by class."""
        def cut(split: Split, n: int | None) -> Split:
            return split if n is None else split.take(stratified_indices(split.labels, n, seed))
        return replace(self, train=cut(self.train, train), val=cut(self.val, val), test=cut(self.test, test))
