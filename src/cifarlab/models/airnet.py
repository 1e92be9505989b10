"""AirNet: the compact record-speed CIFAR-10 network family (airbench style).

A 2x2 convolution meant to be initialized by patch whitening (``Whiten``; see
``cifarlab.training.fast``), then groups of [conv3 - maxpool2 - BN - GELU - conv3 - BN - GELU],
a final max-pool to 1x1 and a bias-free linear layer whose logits are scaled down.
BatchNorm keeps only its bias (the scale stays 1): with BN after every conv a learnable
scale is redundant, and fewer parameters train faster in very short runs.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cifarlab.models.layers import check_in_chans, make_act
from cifarlab.models.registry import register_model


class Whiten(nn.Conv2d):
    """The first conv: ``2 * in_chans * k * k`` filters, no padding, with a bias.

    Its weights start as PyTorch's default; ``training.fast.WhiteningInit`` overwrites them
    with the ± eigenvectors of the training patches' covariance and freezes them. The
    model alone trains fine without that (every parameter gets a gradient).
    """

    def __init__(self, in_chans: int, kernel: int = 2):
        super().__init__(in_chans, 2 * in_chans * kernel * kernel, kernel, padding=0, bias=True)


class BiasOnlyBN(nn.BatchNorm2d):
    """BatchNorm whose scale is fixed at 1 (no weight parameter) and whose bias trains.

    ``momentum`` is PyTorch's (weight of the new batch): fast-moving running statistics
    keep up with weights that change a lot per step in 10-epoch runs.
    """

    def __init__(self, channels: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(channels, eps=eps, momentum=momentum, affine=True)
        self.register_parameter("weight", None)  # F.batch_norm accepts weight=None: scale 1


class ConvGroup(nn.Module):
    """conv3 -> maxpool2 -> BN -> act, then (depth - 1) x [conv3 -> BN -> act]."""

    def __init__(self, cin: int, cout: int, depth: int = 2, act: str = "gelu", bn_momentum: float = 0.4):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2),
                                   BiasOnlyBN(cout, bn_momentum), make_act(act)]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(cout, cout, 3, padding=1, bias=False), BiasOnlyBN(cout, bn_momentum),
                       make_act(act)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class AirNet(nn.Module):
    """Whiten -> act -> conv groups (each halves the resolution) -> global max-pool -> linear."""

    def __init__(self, widths: tuple[int, ...] = (64, 256, 256), depth: int = 2, num_classes: int = 10,
                 in_chans: int = 3, act: str = "gelu", bn_momentum: float = 0.4,
                 logit_scale: float = 1 / 9, whiten_kernel: int = 2):
        super().__init__()
        self.whiten = Whiten(check_in_chans(in_chans), whiten_kernel)
        self.act = make_act(act)
        cin, groups = self.whiten.out_channels, []
        for width in widths:
            groups.append(ConvGroup(cin, width, depth, act, bn_momentum))
            cin = width
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(cin, num_classes, bias=False)
        self.logit_scale = logit_scale  # small logits early: the loss starts near log(classes)
        _dirac_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.act(self.whiten(x)))
        return self.head(self.pool(x).flatten(1)) * self.logit_scale


def _dirac_init(model: nn.Module) -> None:
    """Each 3x3 conv starts as identity on its first min(cin, cout) channels plus its random
    init elsewhere: signals pass through the untrained net (airbench's 'dirac' init)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and not isinstance(m, Whiten) and m.kernel_size == (3, 3):
            n = min(m.in_channels, m.out_channels)
            with torch.no_grad():
                nn.init.dirac_(m.weight[:n])


_INFO = dict(faithful=False, ref_params=None, ref_accuracy=None)


@register_model(reproduces="modern record-speed net in the style of airbench94 (Jordan 2024)",
                notes="~2.0M params; trained by `cifarlab train --recipe fast` (GPU) and `cpu-45min` (whitening init, "
                      "lookahead, TTA); 94% is airbench's figure on the original data", **_INFO)
def airnet94(num_classes=10, in_chans=3, act="gelu", widths=(64, 256, 256)):
    return AirNet(tuple(widths), 2, num_classes, in_chans, act)


@register_model(reproduces="modern wider airnet in the style of airbench95 (widths 128/384/384)",
                notes="~4.6M params; trained by `cifarlab train --recipe fast-wide`", **_INFO)
def airnet95(num_classes=10, in_chans=3, act="gelu", widths=(128, 384, 384)):
    return AirNet(tuple(widths), 2, num_classes, in_chans, act)


@register_model(reproduces="modern airnet sized for a 2-core CPU: a quarter of airnet94's compute per "
                           "channel group (widths 64/128/256)",
                notes="~1.2M params, 65M MACs; trained by `--recipe cpu-5min` and `cpu-15min`", **_INFO)
def airnet_medium(num_classes=10, in_chans=3, act="gelu", widths=(64, 128, 256)):
    return AirNet(tuple(widths), 2, num_classes, in_chans, act)


@register_model(reproduces="modern airnet sized for minutes on a 2-core CPU (widths 32/64/128)",
                notes="~0.29M params, 20M MACs; trained by `--recipe cpu-2min`", **_INFO)
def airnet_small(num_classes=10, in_chans=3, act="gelu", widths=(32, 64, 128)):
    return AirNet(tuple(widths), 2, num_classes, in_chans, act)


@register_model(reproduces="modern airnet, tiny: for tests and CPU smoke runs", **_INFO)
def airnet_tiny(num_classes=10, in_chans=3, act="gelu", widths=(16, 32, 32)):
    return AirNet(tuple(widths), 2, num_classes, in_chans, act)
