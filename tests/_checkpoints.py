"""Checkpoints for the tests of the faces (catalogue, web, desktop): no training needed."""

from __future__ import annotations

import torch

from cifarlab.data.synthetic import CIFAR10_CLASSES
from cifarlab.inference.checkpoint import FORMAT, save_checkpoint
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


class RunsCode:
    """Unpickling this calls os.system: what a hostile .pt file does to a full-pickle loader."""

    def __init__(self, marker):
        self.command = f"touch {marker}"

    def __reduce__(self):
        import os
        return os.system, (self.command,)


def write_hostile_checkpoint(path, marker, model="lenet5_modern"):
    """A file that looks like a checkpoint of this version but creates ``marker`` when unpickled."""
    torch.manual_seed(0)
    torch.save({"format": FORMAT, "model": {"name": model, "kwargs": {}, "num_classes": 10},
                "state_dict": create_model(model).state_dict(), "classes": list(CIFAR10_CLASSES),
                "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3, "grayscale": None},
                "config": RunsCode(marker), "test": {"top1": 0.99, "top5": 1.0, "n": 100}}, path)
    return path


def hostile_run(folder, marker, name="evil-run"):
    """A run folder whose best.pt is hostile, recorded as finished in the default run registry
    (under $CIFARLAB_HOME), so catalogues list it by ``name``; returns the registry."""
    from cifarlab.runlog import Registry
    run = folder / name
    run.mkdir(parents=True)
    write_hostile_checkpoint(run / "best.pt", marker)
    registry = Registry()
    registry.start(run, {"model": "lenet5_modern"})
    registry.finish(run, "finished", {"test_top1": 0.99})
    return registry
