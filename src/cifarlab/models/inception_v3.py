"""Inception-v3 on CIFAR-10 (inception-v3-cifar.md) and the write-up's three variants.

As in that Keras code: the module convs written with ``Conv2D`` keep a bias before BN,
the factorized 1xn / nx1 convs (its ``conv_block``) have none; every conv is followed by
BN (momentum 0.9, eps 1e-5 = torch defaults) and ReLU; 'same' padding throughout.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cifarlab.models.layers import check_in_chans, conv_bn_act, init_he, pool_head
from cifarlab.models.registry import register_model


def _avg_pool() -> nn.Module:
    return nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)  # Keras 'same' average pool


class InceptionModule(nn.Module):
    """Run branches on one input and concatenate; a branch may end in a split pair."""

    diagram_block = True

    def __init__(self, *branches: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([t for b in self.branches for t in _as_list(b(x))], dim=1)


def _as_list(y) -> list[torch.Tensor]:
    return list(y) if isinstance(y, (list, tuple)) else [y]


class _Split(nn.Module):
    """1x3 and 3x1 convs on the same input (Inception-v3 figure 7), returned as a pair."""

    def __init__(self, cin: int, a: int, b: int, act: str):
        super().__init__()
        self.conv1x3 = conv_bn_act(cin, a, (1, 3), act=act)
        self.conv3x1 = conv_bn_act(cin, b, (3, 1), act=act)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv1x3(x), self.conv3x1(x)


def _conv(cin: int, cout: int, k, act: str, stride: int = 1, bias: bool = True) -> nn.Sequential:
    return conv_bn_act(cin, cout, k, stride=stride, act=act, bias=bias)


def module_a(cin: int, cfg, act: str) -> tuple[nn.Module, int]:
    """Inception module 1: 1x1 | 1x1->3x3 | 1x1->3x3->3x3 | avgpool->1x1."""
    (c1,), (r3, c3), (r33, c33), (pp,) = cfg
    return InceptionModule(
        _conv(cin, c1, 1, act),
        nn.Sequential(_conv(cin, r3, 1, act), _conv(r3, c3, 3, act)),
        nn.Sequential(_conv(cin, r33, 1, act), _conv(r33, c33, 3, act), _conv(c33, c33, 3, act)),
        nn.Sequential(_avg_pool(), _conv(cin, pp, 1, act))), c1 + c3 + c33 + pp


def reduce_a(cin: int, cfg, act: str) -> tuple[nn.Module, int]:
    """Reduction 1: 3x3/2 | 1x1->3x3->3x3/2 | maxpool 3/2."""
    (c1,), (r, c) = cfg
    return InceptionModule(
        _conv(cin, c1, 3, act, stride=2),
        nn.Sequential(_conv(cin, r, 1, act), _conv(r, c, 3, act), _conv(c, c, 3, act, stride=2)),
        nn.MaxPool2d(3, 2, padding=1)), c1 + c + cin


def module_b(cin: int, cfg, act: str) -> tuple[nn.Module, int]:
    """Inception module 2: 1x1 | 1x1->1x7->7x1 | 1x1->7x1->1x7->7x1->1x7 | avgpool->1x1."""
    (c1,), (r2, a2, b2), (r3, a3, b3, c3, d3), (pp,) = cfg
    return InceptionModule(
        _conv(cin, c1, 1, act),
        nn.Sequential(_conv(cin, r2, 1, act), _conv(r2, a2, (1, 7), act, bias=False),
                      _conv(a2, b2, (7, 1), act, bias=False)),
        nn.Sequential(_conv(cin, r3, 1, act), _conv(r3, a3, (7, 1), act, bias=False),
                      _conv(a3, b3, (1, 7), act, bias=False), _conv(b3, c3, (7, 1), act, bias=False),
                      _conv(c3, d3, (1, 7), act, bias=False)),
        nn.Sequential(_avg_pool(), _conv(cin, pp, 1, act))), c1 + b2 + d3 + pp


def reduce_b(cin: int, cfg, act: str) -> tuple[nn.Module, int]:
    """Reduction 2: 1x1->3x3/2 | 1x1->1x7->7x1->3x3/2 | maxpool 3/2."""
    (r1, c1), (r, a, b, c) = cfg
    return InceptionModule(
        nn.Sequential(_conv(cin, r1, 1, act), _conv(r1, c1, 3, act, stride=2)),
        nn.Sequential(_conv(cin, r, 1, act), _conv(r, a, (1, 7), act, bias=False),
                      _conv(a, b, (7, 1), act, bias=False), _conv(b, c, 3, act, stride=2)),
        nn.MaxPool2d(3, 2, padding=1)), c1 + c + cin


def module_c(cin: int, cfg, act: str) -> tuple[nn.Module, int]:
    """Inception module 3: 1x1 | 1x1->(1x3,3x1) | 1x1->3x3->(1x3,3x1) | avgpool->1x1."""
    (c1,), (r2, a2, b2), (r3, m3, a3, b3), (pp,) = cfg
    return InceptionModule(
        _conv(cin, c1, 1, act),
        nn.Sequential(_conv(cin, r2, 1, act), _Split(r2, a2, b2, act)),
        nn.Sequential(_conv(cin, r3, 1, act), _conv(r3, m3, 3, act), _Split(m3, a3, b3, act)),
        nn.Sequential(_avg_pool(), _conv(cin, pp, 1, act))), c1 + a2 + b2 + a3 + b3 + pp


# the write-up's module parameters, in order (3a-3c, reduce 1, 4a-4e, reduce 2, 5a-5b)
_A = (((64,), (48, 64), (64, 96), (32,)),) + (((64,), (48, 64), (64, 96), (64,)),) * 2
_B = ((((192,), (128, 128, 192), (128, 128, 128, 128, 192), (192,)),)
      + (((192,), (160, 160, 192), (160, 160, 160, 160, 192), (192,)),) * 3
      + (((192,), (192, 192, 192), (192, 192, 192, 192, 192), (192,)),))
_C = (((320,), (384, 384, 384), (448, 384, 384, 384), (192,)),) * 2
_RA = ((384,), (64, 96))
_RB = ((192, 320), (192, 192, 192, 192))
_PLAN = ((module_a, _A), (reduce_a, (_RA,)), (module_b, _B), (reduce_b, (_RB,)), (module_c, _C))


class InceptionV3(nn.Module):
    """Stem, Inception modules per ``plan``, global average pool, dropout 0.2, linear.

    stem: "full" (3x3/2 32, 3x3 32, 3x3 64, maxpool 3/2, 1x1 80, 3x3 192, maxpool 3/2:
    32x32 -> 4x4), "stride1" (the same layers, all strides 1) or "slim" (one 3x3 conv to
    192 channels with bias and, as in the write-up, no BN and no activation).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, act: str = "relu",
                 stem: str = "full", plan=_PLAN):
        super().__init__()
        self.stem = self._stem(check_in_chans(in_chans), stem, act)
        layers, cin = [], 192
        for build, cfgs in plan:
            for cfg in cfgs:
                block, cin = build(cin, cfg, act)
                layers.append(block)
        self.blocks = nn.Sequential(*layers)
        self.head = pool_head(cin, num_classes, dropout=0.2)
        init_he(self, mode="fan_in")  # Keras he_normal

    @staticmethod
    def _stem(cin: int, kind: str, act: str) -> nn.Sequential:
        if kind == "slim":
            return nn.Sequential(nn.Conv2d(cin, 192, 3, padding=1))
        s = 2 if kind == "full" else 1
        return nn.Sequential(
            _conv(cin, 32, 3, act, stride=s), _conv(32, 32, 3, act), _conv(32, 64, 3, act),
            nn.MaxPool2d(3, s, padding=1), _conv(64, 80, 1, act), _conv(80, 192, 3, act),
            nn.MaxPool2d(3, s, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


_NOTES = "L2 weight decay 1e-4 of the write-up is a training setting; TF's asymmetric 'same' padding on stride 2 is symmetric here"


@register_model(reproduces="inception-v3-cifar: Inception-v3 with the ImageNet stem (32x32 -> 4x4)",
                faithful=True, ref_params=23_397_866, ref_nontrainable=37_888,
                notes="the write-up reports poor accuracy without a number; " + _NOTES)
def inception_v3(num_classes=10, in_chans=3, act="relu"):
    return InceptionV3(num_classes, in_chans, act, stem="full")


@register_model(reproduces="inception-v3-cifar: Inception-v3 'slim' (stem replaced by one 3x3 conv)",
                faithful=True, ref_params=23_229_370, ref_nontrainable=37_088, ref_accuracy=0.94,
                notes="reported '94%+'; the stem conv has no BN and no activation, as written; " + _NOTES)
def inception_v3_slim(num_classes=10, in_chans=3, act="relu"):
    return InceptionV3(num_classes, in_chans, act, stem="slim")


_PLAN_352 = ((module_a, (_A[1],) * 3), (reduce_a, (_RA,)), (module_b, (_B[0],) * 5),
             (reduce_b, (_RB,)), (module_c, _C))


@register_model(reproduces="inception-v3-cifar: 'slim_352' (slim with uniform module parameters)",
                faithful=True, ref_params=21_215_770, ref_nontrainable=35_232,
                notes="reported slightly below slim, without a number; " + _NOTES)
def inception_v3_slim352(num_classes=10, in_chans=3, act="relu"):
    return InceptionV3(num_classes, in_chans, act, stem="slim", plan=_PLAN_352)


@register_model(reproduces="inception-v3-cifar: 'stem_slim' (the stem's strides set to 1)",
                faithful=True, ref_params=None, ref_nontrainable=None,
                notes="no count printed; same layers as inception_v3, so 23,397,866 Keras params; "
                      "reported worse than slim, without a number; " + _NOTES)
def inception_v3_stem_slim(num_classes=10, in_chans=3, act="relu"):
    return InceptionV3(num_classes, in_chans, act, stem="stride1")
