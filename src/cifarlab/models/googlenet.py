"""Inception-v1 family: five-classic-cnns' small "GoogLeNet" and a real 22-layer GoogLeNet.

The Inception block here also serves the colab notebook's net (inception_colab.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cifarlab.models.layers import check_in_chans, conv_bn_act, init_he, init_keras, pool_head
from cifarlab.models.registry import register_model


class InceptionBlock(nn.Module):
    """Four branches [1x1 | 1x1->3x3 | 1x1->5x5 | maxpool 3 -> 1x1], concatenated.

    cfg = (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj). ``stride`` goes on each
    branch's first layer. ``bn`` is "torch", "keras" or None (conv -> act only).
    """

    diagram_block = True  # drawn as one box by cifarlab.models.diagram

    def __init__(self, cin: int, cfg: tuple[int, ...], *, stride: int = 1, act: str = "relu",
                 bias: bool = False, bn: str | None = "torch"):
        super().__init__()
        c1, r3, c3, r5, c5, pp = cfg
        unit = dict(act=act, bias=bias, bn=bn)
        self.branch1 = conv_bn_act(cin, c1, 1, stride=stride, **unit)
        self.branch3 = nn.Sequential(conv_bn_act(cin, r3, 1, stride=stride, **unit),
                                     conv_bn_act(r3, c3, 3, **unit))
        self.branch5 = nn.Sequential(conv_bn_act(cin, r5, 1, stride=stride, **unit),
                                     conv_bn_act(r5, c5, 5, **unit))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride, padding=1),
                                         conv_bn_act(cin, pp, 1, **unit))
        self.out_channels = c1 + c3 + c5 + pp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch3, self.branch5, self.branch_pool)
        return torch.cat([b(x) for b in branches], dim=1)


class SmallGoogLeNet(nn.Module):
    """Stem conv 16@3x3, four equal-width Inception blocks (16/2, 16, 32/2, 32), GAP, linear.

    Every conv keeps Keras' bias before BN (121,418 Keras params at 3 channels).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, act: str = "relu",
                 blocks: tuple[tuple[int, int], ...] = ((16, 2), (16, 1), (32, 2), (32, 1)),
                 stem: int = 16):
        super().__init__()
        unit = dict(act=act, bias=True, bn="keras")
        self.stem = conv_bn_act(check_in_chans(in_chans), stem, 3, **unit)
        layers, cin = [], stem
        for ch, stride in blocks:
            layers.append(InceptionBlock(cin, (ch,) * 6, stride=stride, **unit))
            cin = layers[-1].out_channels
        self.blocks = nn.Sequential(*layers)
        self.head = pool_head(cin, num_classes)
        init_keras(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


# Szegedy et al. 2014, Table 1: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj)
_V1_STAGES = (
    (("3a", (64, 96, 128, 16, 32, 32)), ("3b", (128, 128, 192, 32, 96, 64))),
    (("4a", (192, 96, 208, 16, 48, 64)), ("4b", (160, 112, 224, 24, 64, 64)),
     ("4c", (128, 128, 256, 24, 64, 64)), ("4d", (112, 144, 288, 32, 64, 64)),
     ("4e", (256, 160, 320, 32, 128, 128))),
    (("5a", (256, 160, 320, 32, 128, 128)), ("5b", (384, 192, 384, 48, 128, 128))),
)


class GoogLeNet(nn.Module):
    """The 22-layer Inception-v1 adapted to 32x32 (as in kuangliu's pytorch-cifar).

    The ImageNet stem (7x7/2, pools, LRN) becomes one 3x3 conv-BN-act with 192 channels;
    every conv is conv-BN-act without bias; max-pools 3/2 between stages (32 -> 16 -> 8);
    no auxiliary classifiers; global average pool -> dropout 0.2 -> linear.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, act: str = "relu"):
        super().__init__()
        self.stem = conv_bn_act(check_in_chans(in_chans), 192, 3, act=act)
        layers: list[nn.Module] = []
        cin = 192
        for i, stage in enumerate(_V1_STAGES):
            if i:
                layers.append(nn.MaxPool2d(3, 2, padding=1))
            for _, cfg in stage:
                layers.append(InceptionBlock(cin, cfg, act=act))
                cin = layers[-1].out_channels
        self.blocks = nn.Sequential(*layers)
        self.head = pool_head(cin, num_classes, dropout=0.2)
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


@register_model(reproduces="five-classic-cnns: small \"GoogLeNet\" (4 Inception blocks)",
                faithful=True, ref_params=121_418, ref_nontrainable=1_184, ref_accuracy=0.73,
                notes="the reference's Keras code ran its BN layers in inference mode during "
                      "training (a bug); here BN trains normally. The one-factor study varied act "
                      "(sigmoid 0.518, tanh 0.717, relu 0.730 val acc)")
def googlenet_small(num_classes=10, in_chans=3, act="relu"):
    return SmallGoogLeNet(num_classes, in_chans, act)


@register_model(reproduces="modern form of five-classic-cnns GoogLeNet: real 22-layer Inception-v1 for 32x32",
                faithful=False, notes="kuangliu-style CIFAR stem; true 5x5 branches; BN, Kaiming init")
def googlenet(num_classes=10, in_chans=3, act="relu"):
    return GoogLeNet(num_classes, in_chans, act)
