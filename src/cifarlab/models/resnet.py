"""ResNets for 32x32: ResNet-18 (five-classic-cnns, kuangliu form) and He et al.'s CIFAR
ResNet-20/32/56/110 (option A shortcuts)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cifarlab.models.layers import check_in_chans, init_he, make_act, pool_head
from cifarlab.models.registry import register_model


class _PadShortcut(nn.Module):
    """Option A: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, extra: int):
        super().__init__()
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """conv3-BN-act-conv3-BN + shortcut, then act."""

    diagram_block = True

    def __init__(self, cin: int, cout: int, stride: int = 1, act: str = "relu", shortcut: str = "B"):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = make_act(act)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = make_act(act)
        self.shortcut = self._shortcut(cin, cout, stride, shortcut)

    @staticmethod
    def _shortcut(cin: int, cout: int, stride: int, kind: str) -> nn.Module:
        if stride == 1 and cin == cout:
            return nn.Identity()
        if kind == "A":
            return _PadShortcut(cout - cin)
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 stem conv-BN-act (no max-pool), stages of basic blocks, GAP, linear.

    The first block of each later stage halves the resolution.
    """

    def __init__(self, blocks: tuple[int, ...], widths: tuple[int, ...], num_classes: int = 10,
                 in_chans: int = 3, act: str = "relu", shortcut: str = "B"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(check_in_chans(in_chans), widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), make_act(act))
        layers, cin = [], widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(BasicBlock(cin, width, stride, act, shortcut))
                cin = width
        self.blocks = nn.Sequential(*layers)
        self.head = pool_head(cin, num_classes)
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


@register_model(reproduces="five-classic-cnns: ResNet-18 (CIFAR form: 3x3 stem, no max-pool)",
                faithful=True, ref_params=11_183_562, ref_nontrainable=9_600, ref_accuracy=0.80,
                notes="already the modern CIFAR form (kuangliu): 1x1 conv-BN projection shortcuts; "
                      "Kaiming init instead of Keras Glorot; the dense layer's L2 0.01 is a training setting")
def resnet18(num_classes=10, in_chans=3, act="relu"):
    return ResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, in_chans, act)


def _cifar_resnet(depth: int, num_classes: int, in_chans: int, act: str) -> ResNet:
    n = (depth - 2) // 6  # 6n+2 layers: three stages of n blocks, widths 16/32/64
    return ResNet((n, n, n), (16, 32, 64), num_classes, in_chans, act, shortcut="A")


def _he_info(depth: int, acc: float) -> dict:
    return dict(reproduces=f"modern CIFAR ResNet-{depth} (He et al. 2016, option A shortcuts)",
                faithful=False, ref_accuracy=None,
                notes=f"paper reports {acc:.2%} test accuracy with its own recipe (not a write-up here); "
                      "option A = parameter-free zero-padded identity shortcuts")


@register_model(**_he_info(20, 0.9125))
def resnet20(num_classes=10, in_chans=3, act="relu"):
    return _cifar_resnet(20, num_classes, in_chans, act)


@register_model(**_he_info(32, 0.9249))
def resnet32(num_classes=10, in_chans=3, act="relu"):
    return _cifar_resnet(32, num_classes, in_chans, act)


@register_model(**_he_info(56, 0.9303))
def resnet56(num_classes=10, in_chans=3, act="relu"):
    return _cifar_resnet(56, num_classes, in_chans, act)


@register_model(**_he_info(110, 0.9357))
def resnet110(num_classes=10, in_chans=3, act="relu"):
    return _cifar_resnet(110, num_classes, in_chans, act)
