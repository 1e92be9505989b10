"""Losses by name. The model always outputs logits; each loss decides what it compares.

- ``ce``: cross-entropy on logits (softmax inside), with optional label smoothing.
- ``bce``: binary cross-entropy between the *softmax probabilities* and one-hot targets,
  averaged over the classes, with Keras' clipping (eps 1e-7). This is what the reference
  notebook (colab-inception-v1) computed: a softmax output layer fed to Keras'
  ``binary_crossentropy``. Sigmoid-per-class (BCEWithLogits) would be a different model.
- ``mse``: mean squared error between softmax probabilities and one-hot targets, as Keras'
  ``mean_squared_error`` on a softmax output.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from cifarlab.errors import ConfigError

_EPS = 1e-7  # Keras backend epsilon: probabilities are clipped to [eps, 1 - eps]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def build_loss(name: str, num_classes: int, label_smoothing: float = 0.0) -> LossFn:
    if name == "ce":
        return lambda logits, y: F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    if name == "bce":
        return lambda logits, y: softmax_bce(logits, y, num_classes)
    if name == "mse":
        return lambda logits, y: softmax_mse(logits, y, num_classes)
    raise ConfigError(f"loss={name!r} is not one of: ce, bce, mse")


def softmax_bce(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Keras ``binary_crossentropy(one_hot, softmax(logits))``, mean over classes and batch."""
    logp = F.log_softmax(logits.float(), dim=1).clamp(math.log(_EPS), math.log1p(-_EPS))
    log1mp = torch.log1p(-logp.exp())  # log(1 - p), p already clipped below 1 - eps
    target = F.one_hot(y, num_classes).float()
    return -(target * logp + (1 - target) * log1mp).mean()


def softmax_mse(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    probs = F.softmax(logits.float(), dim=1)
    return F.mse_loss(probs, F.one_hot(y, num_classes).float())
