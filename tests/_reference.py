"""Reference computations for the tests of what the user sees (tests/test_reference_*.py).

Nothing here calls cifarlab's preprocessing or prediction code: pictures are converted and
resized with Pillow as ``inference/predict.py`` documents, normalized in numpy with the
checkpoint's saved mean/std and run through a bare ``nn.Module`` the test built itself.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cifarlab.data.synthetic import CIFAR10_CLASSES
from cifarlab.inference.checkpoint import FORMAT, save_checkpoint
from cifarlab.models import create_model

MEAN = [0.4914, 0.4822, 0.4465]
STD = [0.2470, 0.2435, 0.2616]
# classes in a scrambled order, so that an index-to-name slip cannot pass by accident
CLASSES = [CIFAR10_CLASSES[i] for i in (3, 7, 0, 9, 5, 1, 8, 2, 6, 4)]


def save_ref_checkpoint(path, net, name, kwargs=None, classes=CLASSES, mean=MEAN, std=STD, top1=0.61):
    save_checkpoint({"format": FORMAT, "model": {"name": name, "kwargs": kwargs or {}, "num_classes": 10},
                     "state_dict": net.state_dict(), "classes": list(classes),
                     "normalize": {"mean": list(mean), "std": list(std), "grayscale": None},
                     "config": {"model": name}, "epoch": 1, "test": {"top1": top1, "top5": 0.93, "n": 1000}}, path)
    return path


def random_lenet(seed=0) -> torch.nn.Module:
    """lenet5_modern with random weights AND random BatchNorm statistics (eval mode matters)."""
    torch.manual_seed(seed)
    net = create_model("lenet5_modern")
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    with torch.no_grad():  # larger logits: probabilities far from uniform, rankings well apart
        net.head[-1].weight.mul_(8.0)
    return net.eval()


def reference_input(img: Image.Image, mean=MEAN, std=STD) -> np.ndarray:
    """float32 [3, 32, 32]: RGB, 32x32 bilinear (as documented), /255, (x - mean) / std in numpy."""
    img = img.convert("RGB")
    if img.size != (32, 32):
        img = img.resize((32, 32), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float64) / 255.0  # H, W, C
    x = (x - np.asarray(mean)) / np.asarray(std)
    return x.transpose(2, 0, 1).astype(np.float32)


def softmax64(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@torch.no_grad()
def reference_probs(net, inputs: list[np.ndarray]) -> np.ndarray:
    return softmax64(net(torch.from_numpy(np.stack(inputs))).numpy())


def reference_for(net, paths) -> np.ndarray:
    return reference_probs(net, [reference_input(Image.open(p)) for p in paths])
