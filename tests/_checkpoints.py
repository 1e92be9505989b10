"""Checkpoints for the tests of the faces (catalogue, web, desktop): no training needed."""

from __future__ import annotations

import torch

from cifarlab.data.synthetic import CIFAR10_CLASSES
from cifarlab.engine.checkpoint import FORMAT, save_checkpoint
from cifarlab.models import create_model


def write_checkpoint(path, model="resnet20", top1=0.42, seed=0):
    """A randomly initialised model in the engine's checkpoint format, with a stated test accuracy."""
    torch.manual_seed(seed)
    net = create_model(model)
    save_checkpoint({"format": FORMAT, "model": {"name": model, "kwargs": {}, "num_classes": 10},
                     "state_dict": net.state_dict(), "classes": list(CIFAR10_CLASSES),
                     "normalize": {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26], "grayscale": None},
                     "config": {}, "test": {"top1": top1, "top5": 0.9, "n": 100}}, path)
    return path
