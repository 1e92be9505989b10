"""CIFAR data: loading, caching, splitting, augmentation and device-side batching."""

from __future__ import annotations

from cifarlab.data.synthetic import random_cifar
from cifarlab.data.types import CifarData, DataInfo, Split, stratified_indices

__all__ = ["CifarData", "DataInfo", "Split", "stratified_indices", "random_cifar"]
