"""The record-speed techniques as callbacks: patch-whitening init and weight averaging.

``training.api.callbacks_for`` adds them when the config asks (``whiten``, ``average``);
the ``fast`` and ``fast-wide`` recipes (training.recipes) turn both on, together with the
BN-bias learning rate, which is a parameter group (``optim.build_optimizer``).

- ``WhiteningInit``: the first conv becomes a patch-whitening filter bank computed from
  training images, then is frozen (its bias trains for a few epochs first);
- ``WeightAverage``: lookahead (or plain EMA) of the weights every few steps.

Techniques from the public write-ups: Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a
single GPU" (airbench, 2024) and David Page, "How to train your ResNet" (2018).
"""

from __future__ import annotations

import torch
from torch import nn

from cifarlab.training.callbacks import ORDER_SAVE, ORDER_SCHEDULE, Callback
from cifarlab.inference.checkpoint import unwrap


# ---------------------------------------------------------------- patch whitening
def patch_matrix(images: torch.Tensor, kernel: int = 2) -> torch.Tensor:
    """Every kxk patch of NCHW ``images`` as a row, laid out (channel, row, col) like conv weights."""
    n, c = images.shape[:2]
    patches = images.unfold(2, kernel, 1).unfold(3, kernel, 1)  # n, c, h', w', k, k
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel * kernel)


def whitening_filters(images: torch.Tensor, kernel: int = 2, eps: float = 5e-4
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weight [2d, c, k, k], bias [2d], eigenvalues [d]) of a conv that whitens kxk patches.

    Row i of W is eigenvector i of the patches' covariance divided by sqrt(eigenvalue + eps),
    so W(x - mean) has (near-)identity covariance; W and -W both appear, so a following
    GELU/ReLU keeps each direction's positive and negative half. Largest eigenvalues first.
    """
    x = patch_matrix(images.float(), kernel)
    mean = x.mean(0)
    centered = x - mean
    cov = (centered.T @ centered / max(len(x) - 1, 1)).double().cpu()  # d x d, d = c*k*k
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    eigvals, eigvecs = eigvals.flip(0), eigvecs.flip(1)
    w = (eigvecs.T / (eigvals.clamp_min(0) + eps).sqrt()[:, None]).float().to(images.device)
    bias = -(w @ mean)
    c = images.shape[1]
    weight = torch.cat([w, -w]).reshape(-1, c, kernel, kernel)
    return weight, torch.cat([bias, -bias]), eigvals.float()


def find_whitening_layer(model: nn.Module) -> nn.Conv2d | None:
    from cifarlab.models.airnet import Whiten
    return next((m for m in model.modules() if isinstance(m, Whiten)), None)


def _normalized_images(loader, count: int) -> torch.Tensor:
    """``count`` training images picked at random (seeded), preprocessed as the loader does."""
    from cifarlab.data import normalize
    n = len(loader.images)
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(loader.seed))[:count]
    return normalize(loader.images[pick.to(loader.images.device)], loader.mean, loader.std, loader.grayscale)


class WhiteningInit(Callback):
    """Sets the ``Whiten`` conv from training patches and freezes it; its bias trains for
    ``bias_epochs`` epochs, then freezes as well. A model without one is left alone."""

    order = ORDER_SCHEDULE - 1

    def __init__(self, images: int = 5000, eps: float = 5e-4, bias_epochs: int = 3):
        self.images, self.eps, self.bias_epochs = images, eps, bias_epochs
        self.layer: nn.Conv2d | None = None

    def before_fit(self, learn) -> None:
        self.layer = find_whitening_layer(unwrap(learn.model))
        if self.layer is None:
            return
        if not learn.resumed:  # a resumed run has the weights from its checkpoint
            x = _normalized_images(learn.train_loader, self.images)
            weight, bias, _ = whitening_filters(x, self.layer.kernel_size[0], self.eps)
            with torch.no_grad():
                self.layer.weight.copy_(weight)
                self.layer.bias.copy_(bias)
        self.layer.weight.requires_grad_(False)  # SGD skips parameters without a gradient

    def before_epoch(self, learn) -> None:
        if self.layer is not None and learn.epoch >= self.bias_epochs:
            self.layer.bias.requires_grad_(False)
            self.layer.bias.grad = None


# ---------------------------------------------------------------- weight averaging
def _float_state(model: nn.Module) -> list[torch.Tensor]:
    """Parameters and float buffers (BN running statistics), sharing the model's storage."""
    return [t for t in model.state_dict().values() if t.is_floating_point()]


class WeightAverage(Callback):
    """Every ``every`` steps: ``avg <- decay * avg + (1 - decay) * weights``.

    Lookahead (airbench, from hlb-cifar10): the weights are then reset to ``avg``; at each
    epoch's end one more update makes the evaluated and checkpointed weights the average, and
    after the last epoch the weights become ``avg`` itself.

    ``decay`` ramps as ``decay**every * progress**power``: early weights are soon forgotten,
    so averaging starts in earnest only when the lr comes down. Covers BN running stats too.
    """

    order = ORDER_SAVE - 1  # before_validate and after_epoch before the Checkpointer saves

    def __init__(self, decay: float = 0.95, every: int = 5, power: float = 3.0):
        self.decay, self.every, self.power = decay, every, power
        self.live: list[torch.Tensor] = []
        self.avg: list[torch.Tensor] | None = None
        self.total = 1

    def decay_at(self, step: int) -> float:
        return self.decay ** self.every * min(1.0, step / self.total) ** self.power

    def before_fit(self, learn) -> None:
        self._set_total(learn)
        self.live = _float_state(unwrap(learn.model))
        if self.avg is None:  # fresh, or resumed: the average equals the weights at epoch ends
            self.avg = [t.detach().clone() for t in self.live]
        else:
            self.avg = [a.to(t.device, t.dtype) for a, t in zip(self.avg, self.live)]

    def _set_total(self, learn) -> None:
        self.total = max(1, learn.total_steps)

    def before_epoch(self, learn) -> None:
        self._set_total(learn)  # a time budget may re-plan the epochs between two of them

    def after_batch(self, learn) -> None:
        if learn.step % self.every == 0:
            self._set_total(learn)  # a time budget may move the last epoch's end while it runs
            self.update(self.decay_at(learn.step))

    def before_validate(self, learn) -> None:
        last = learn.epoch + 1 >= learn.epochs
        self.update(1.0 if last else self.decay_at(learn.step))

    @torch.no_grad()
    def update(self, decay: float) -> None:
        torch._foreach_lerp_(self.avg, self.live, 1.0 - decay)
        torch._foreach_copy_(self.live, self.avg)
