"""CIFAR data: loading, caching, splitting, augmentation and device-side batching."""

from __future__ import annotations

from cifarlab.data.augment import Augment, build_augment
from cifarlab.data.load import load_cifar, read_source
from cifarlab.data.loader import DeviceLoader
from cifarlab.data.preprocess import channel_stats, normalize, to_grayscale
from cifarlab.data.synthetic import random_cifar
from cifarlab.data.types import CifarData, DataInfo, Split, stratified_indices

__all__ = ["Augment", "CifarData", "DataInfo", "DeviceLoader", "Split", "build_augment",
           "channel_stats", "load_cifar", "normalize", "random_cifar", "read_source", "stratified_indices",
           "to_grayscale"]
