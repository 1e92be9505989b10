"""The record-speed recipes ``fast`` and ``fast-wide``: airnet trained in about ten epochs.

What ``TrainConfig`` already expresses (SGD-Nesterov, one-cycle lr, label smoothing,
batch size, the ``altflip,translate:2`` augmentation, bf16, channels-last) is in each
recipe's values. The three behaviours it has no field for are callbacks, added through
``DEFAULT_CALLBACKS`` to every run whose ``recipe`` is one of ``FAST_SETTINGS``:

- ``WhiteningInit``: the first conv becomes a patch-whitening filter bank computed from
  training images, then is frozen (its bias trains for a few epochs first);
- ``BiasLRScale``: BatchNorm biases learn ``bias_lr_scale`` times faster;
- ``WeightAverage``: lookahead (or plain EMA) of the weights every few steps.

Techniques from the public write-ups: Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a
single GPU" (airbench, 2024) and David Page, "How to train your ResNet" (2018).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cifarlab.engine.api import DEFAULT_CALLBACKS
from cifarlab.engine.callbacks import ORDER_SAVE, ORDER_SCHEDULE, Callback
from cifarlab.engine.checkpoint import unwrap
from cifarlab.engine.config import TrainConfig
from cifarlab.engine.recipes import register_recipe
from cifarlab.errors import ConfigError


@dataclass(frozen=True)
class FastSettings:
    """The recipe's settings that TrainConfig has no field for (yet)."""

    whiten_images: int = 5000  # training images (seeded random pick) whose patches give the covariance
    whiten_eps: float = 5e-4  # added to each eigenvalue (normalized-pixel^2): caps the gain of flat directions
    whiten_bias_epochs: int = 3  # epochs the whitening bias trains before it is frozen too
    bias_lr_scale: float = 64.0  # BN biases step this many times farther (decay per step unchanged)
    average: str = "lookahead"  # "lookahead": weights reset to the average | "ema": average used for eval only
    average_decay: float = 0.95  # per-step decay of the weight average, reached at the end of training
    average_every: int = 5  # optimizer steps between two averaging updates
    average_power: float = 3.0  # decay ramps up as progress**power: almost no averaging early on
    tta: str = "flip-translate"  # test-time views for the final evaluation (engine.evaluate.TTA_MODES)

    def __post_init__(self) -> None:
        if self.average not in ("lookahead", "ema"):
            raise ConfigError(f"average={self.average!r} must be lookahead or ema")
        if self.average_every < 1 or not 0 <= self.average_decay <= 1:
            raise ConfigError(f"average_every={self.average_every} must be >= 1 and "
                              f"average_decay={self.average_decay} in [0, 1]")


FAST_SETTINGS: dict[str, FastSettings] = {}


def fast_settings(cfg: TrainConfig) -> FastSettings | None:
    """The extra settings of ``cfg``'s recipe, or None when it is not a fast recipe."""
    return FAST_SETTINGS.get(cfg.recipe or "")


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
    from cifarlab.data import to_grayscale
    n = len(loader.images)
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(loader.seed))[:count]
    x = loader.images[pick.to(loader.images.device)].float().div_(255.0)
    if loader.grayscale:
        x = to_grayscale(x, loader.grayscale)
    return (x - loader.mean) / loader.std


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


# ---------------------------------------------------------------- BN bias learning rate
class BiasLRScale(Callback):
    """Multiplies the gradients of BatchNorm biases by ``scale`` before each step.

    With SGD (momentum is linear) this is a learning rate ``scale`` times larger for those
    biases, while the coupled weight decay, added inside ``step``, keeps the same per-step
    shrinkage as every other parameter -- airbench's separate parameter group, kept in one
    group so the engine's lr schedule and checkpoints need no change.
    """

    order = ORDER_SCHEDULE + 1

    def __init__(self, scale: float = 64.0):
        self.scale = scale
        self.biases: list[nn.Parameter] = []

    def before_fit(self, learn) -> None:
        norms = (m for m in unwrap(learn.model).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
        self.biases = [m.bias for m in norms if m.bias is not None]

    def after_backward(self, learn) -> None:
        grads = [p.grad for p in self.biases if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, self.scale)  # one fused launch, no host sync


# ---------------------------------------------------------------- weight averaging
def _float_state(model: nn.Module) -> list[torch.Tensor]:
    """Parameters and float buffers (BN running statistics), sharing the model's storage."""
    return [t for t in model.state_dict().values() if t.is_floating_point()]


class WeightAverage(Callback):
    """Every ``every`` steps: ``avg <- decay * avg + (1 - decay) * weights``.

    ``lookahead=True`` (airbench, from hlb-cifar10) then resets the weights to ``avg``; at
    each epoch's end one more update makes the evaluated and checkpointed weights the
    average, and after the last epoch the weights become ``avg`` itself. ``lookahead=False``
    is a plain EMA: training never sees it; it is swapped in for validation and the epoch's
    checkpoints and swapped out before the next epoch trains.

    ``decay`` ramps as ``decay**every * progress**power``: early weights are soon forgotten,
    so averaging starts in earnest only when the lr comes down. Covers BN running stats too.
    """

    order = ORDER_SAVE - 1  # before_validate and after_epoch before the Checkpointer saves

    def __init__(self, decay: float = 0.95, every: int = 5, power: float = 3.0, lookahead: bool = True):
        self.decay, self.every, self.power, self.lookahead = decay, every, power, lookahead
        self.live: list[torch.Tensor] = []
        self.avg: list[torch.Tensor] | None = None
        self.swapped = False  # ema mode: the model currently holds the average
        self.total = 1

    def decay_at(self, step: int) -> float:
        return self.decay ** self.every * min(1.0, step / self.total) ** self.power

    def before_fit(self, learn) -> None:
        self.total = max(1, learn.epochs * len(learn.train_loader))
        self.live = _float_state(unwrap(learn.model))
        if self.avg is None:  # fresh (or lookahead resume, where avg == weights at epoch ends)
            self.avg = [t.detach().clone() for t in self.live]
        else:
            self.avg = [a.to(t.device, t.dtype) for a, t in zip(self.avg, self.live)]

    def before_epoch(self, learn) -> None:
        if self.swapped:
            self._swap()

    def after_batch(self, learn) -> None:
        if learn.step % self.every == 0:
            self.update(self.decay_at(learn.step))

    def before_validate(self, learn) -> None:
        last = learn.epoch + 1 >= learn.epochs
        self.update(1.0 if last and self.lookahead else self.decay_at(learn.step))
        if not self.lookahead:
            self._swap()

    @torch.no_grad()
    def update(self, decay: float) -> None:
        torch._foreach_lerp_(self.avg, self.live, 1.0 - decay)
        if self.lookahead:
            torch._foreach_copy_(self.live, self.avg)

    @torch.no_grad()
    def _swap(self) -> None:
        held = [t.clone() for t in self.live]
        torch._foreach_copy_(self.live, self.avg)
        self.avg = held
        self.swapped = not self.swapped

    def state_dict(self) -> dict:
        if self.lookahead or self.avg is None:
            return {}  # lookahead: the average equals the checkpointed weights at epoch ends
        return {"held": [t.detach().cpu().clone() for t in self.avg], "swapped": self.swapped}

    def load_state_dict(self, state: dict) -> None:
        if "held" in state:
            self.avg, self.swapped = list(state["held"]), bool(state["swapped"])


# ---------------------------------------------------------------- wiring into train()
def fast_callbacks(settings: FastSettings) -> list[Callback]:
    return [WhiteningInit(settings.whiten_images, settings.whiten_eps, settings.whiten_bias_epochs),
            BiasLRScale(settings.bias_lr_scale),
            WeightAverage(settings.average_decay, settings.average_every, settings.average_power,
                          lookahead=settings.average == "lookahead")]


def _factory(index: int):
    """A DEFAULT_CALLBACKS entry returning the recipe's ``index``-th callback (or None)."""
    def make(cfg: TrainConfig, run_dir: Path) -> Callback | None:
        settings = fast_settings(cfg)
        return fast_callbacks(settings)[index] if settings else None
    make.__name__ = f"fast_callback_{index}"
    return make


if not any(getattr(f, "__name__", "").startswith("fast_callback_") for f in DEFAULT_CALLBACKS):
    DEFAULT_CALLBACKS.extend(_factory(i) for i in range(3))


# ---------------------------------------------------------------- the recipes
def sgd_values(lr_per_1024: float, decay_per_1024: float, momentum: float, batch_size: int) -> dict:
    """airbench's units -> TrainConfig's (mean loss over the batch, coupled weight decay).

    airbench sums the loss and quotes lr "per 1024 examples", divided by 1 + 1/(1-momentum)
    (the gain of heavy-ball momentum) and weight decay as the fraction of each weight removed
    per 1024 examples at peak lr; PyTorch SGD here sees a batch-mean loss.
    """
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    lr = lr_per_1024 / kilostep * batch_size  # summed loss -> mean loss over the batch
    shrink = decay_per_1024 * batch_size / kilostep  # weight fraction removed per step at peak lr
    return {"lr": lr, "weight_decay": shrink / lr, "momentum": momentum}


def _recipe(model: str, epochs: int, lr_per_1024: float, batch_size: int = 1000) -> dict:
    values = {
        "model": model, "epochs": epochs,
        "batch_size": batch_size,  # 1000 divides 50k: no ragged last batch, one compiled shape
        "optimizer": "sgd", "nesterov": True, **sgd_values(lr_per_1024, 0.0153, 0.85, batch_size),
        "loss": "ce", "label_smoothing": 0.2,
        "schedule": "onecycle", "warmup": 0.23,  # lr/10 -> lr over 23% of the steps, then -> 0
        "augment": "altflip,translate:2",  # each image mirrored every other epoch; +-2 px reflect shift
        "val": 0,  # all 50k images train; the test split is evaluated once at the end
        "amp": True, "channels_last": True,  # bf16 autocast and NHWC convs on CUDA
    }
    if "tta" in TrainConfig.field_names():  # once the engine evaluates the final test with TTA
        values["tta"] = FastSettings.tta
    return values


def register_fast_recipe(name: str, values: dict, settings: FastSettings, description: str) -> None:
    register_recipe(name, values, description)
    FAST_SETTINGS[name] = settings


register_fast_recipe(
    "fast", _recipe("airnet94", 10, 11.5), FastSettings(),
    "record-speed airnet94: whitening init, SGD-Nesterov lr 11.5/1024 ex, BN-bias lr x64, lookahead, "
    "alternating flip + 2px translate, label smoothing 0.2, batch 1000, 10 epochs, TTA (target 94%)")
register_fast_recipe(
    "fast-wide", _recipe("airnet95", 15, 10.0), FastSettings(),
    "wider airnet95 for ~95%: the fast recipe at lr 10/1024 ex for 15 epochs")
