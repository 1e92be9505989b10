"""Small data sets for tests: in memory (`random_cifar`) or written to disk in every format.

The in-memory set has learnable structure (a class colour and a class stripe pattern under
noise), so a tiny model beats chance within a few steps. The on-disk writers produce real
files of the real formats, so loaders are tested on the bytes they will meet.
"""

from __future__ import annotations

import numpy as np

from cifarlab.data.types import CifarData, DataInfo, Split, stratified_indices

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]


def _class_images(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Images whose mean colour and stripe direction/frequency depend on the label."""
    n = len(labels)
    palette = np.random.default_rng(12345).integers(40, 216, size=(num_classes, 3))
    yy, xx = np.mgrid[0:32, 0:32]
    freq = 1 + labels % 4  # stripes repeat 1..4 times across the image
    vertical = (labels // 4) % 2 == 0
    coord = np.where(vertical[:, None, None], xx[None], yy[None])
    stripes = np.sin(2 * np.pi * freq[:, None, None] * coord / 32.0) * 40
    img = palette[labels][:, None, None, :] + stripes[..., None]
    img = img + rng.normal(0, 20, size=(n, 32, 32, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def random_cifar(n_train: int = 500, n_test: int = 100, num_classes: int = 10, seed: int = 0,
                 val: int = 0) -> CifarData:
    """An in-memory CifarData with class-dependent colour and stripes (learnable quickly).

    ``val`` images are carved from the ``n_train`` training images, stratified, as
    ``load_cifar`` does.
    """
    rng = np.random.default_rng(seed)
    classes = CIFAR10_CLASSES[:num_classes] if num_classes <= 10 else [f"class{i}" for i in range(num_classes)]
    y_train = np.arange(n_train) % num_classes
    y_test = np.arange(n_test) % num_classes
    train = Split(_class_images(y_train, num_classes, rng), y_train)
    test = Split(_class_images(y_test, num_classes, rng), y_test)
    train, val_split = _carve(train, val, seed)
    counts = {"train": _counts(train.labels, classes), "test": _counts(test.labels, classes)}
    info = DataInfo(format="memory", source=f"random_cifar(seed={seed})", counts=counts)
    return CifarData(train=train, val=val_split, test=test, classes=list(classes), info=info)


def _carve(train: Split, val: int, seed: int) -> tuple[Split, Split]:
    if val <= 0:
        return train, Split.empty(train.images.shape[1:])
    val_idx = stratified_indices(train.labels, val, seed)
    keep = np.ones(len(train), bool)
    keep[val_idx] = False
    return train.take(np.flatnonzero(keep)), train.take(val_idx)


def _counts(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    hist = np.bincount(labels, minlength=len(classes))
    return {c: int(n) for c, n in zip(classes, hist)}
