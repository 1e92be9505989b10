"""AlexNet as five-classic-cnns built it for 32x32, and a modern CIFAR form."""

from __future__ import annotations

import torch
import torch.nn as nn

from cifarlab.models.layers import check_in_chans, init_he, init_keras, keras_bn, make_act, pool_head
from cifarlab.models.registry import register_model

_WIDTHS = (96, 256, 384, 384, 256)


class AlexNet(nn.Module):
    """Five 3x3 convs (96, 256, 384, 384, 256) with max-pools after the 1st, 2nd and 5th.

    faithful: convs 1-2 'valid' with bias + Keras BN, pools 3/2 'valid', convs 3-5 'same'
    without BN; flatten 1024 -> dense 2048 -> 2048 -> classes, dropout 0.5 (9,639,178).
    modern: every conv 'same', no bias, BN; pools 2/2; global average pool -> dropout ->
    linear (no 2048-wide dense layers to overfit).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, act: str = "relu",
                 modern: bool = False):
        super().__init__()
        check_in_chans(in_chans)
        build = self._modern_layers if modern else self._faithful_layers
        self.features, self.head = build(in_chans, num_classes, act)
        init_he(self) if modern else init_keras(self)

    @staticmethod
    def _faithful_layers(cin: int, num_classes: int, act: str):
        c1, c2, c3, c4, c5 = _WIDTHS
        features = nn.Sequential(
            nn.Conv2d(cin, c1, 3), keras_bn(c1), make_act(act), nn.MaxPool2d(3, 2),
            nn.Conv2d(c1, c2, 3), keras_bn(c2), make_act(act), nn.MaxPool2d(3, 2),
            nn.Conv2d(c2, c3, 3, padding=1), make_act(act),
            nn.Conv2d(c3, c4, 3, padding=1), make_act(act),
            nn.Conv2d(c4, c5, 3, padding=1), make_act(act), nn.MaxPool2d(3, 2))
        head = nn.Sequential(
            nn.Flatten(), nn.Linear(c5 * 2 * 2, 2048), make_act(act), nn.Dropout(0.5),
            nn.Linear(2048, 2048), make_act(act), nn.Dropout(0.5), nn.Linear(2048, num_classes))
        return features, head

    @staticmethod
    def _modern_layers(cin: int, num_classes: int, act: str):
        layers: list[nn.Module] = []
        for i, cout in enumerate(_WIDTHS):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), make_act(act)]
            if i in (0, 1, 4):
                layers.append(nn.MaxPool2d(2))
            cin = cout
        head = pool_head(cin, num_classes, dropout=0.2)
        return nn.Sequential(*layers), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model(reproduces="five-classic-cnns: AlexNet for 32x32", faithful=True,
                ref_params=9_639_178, ref_nontrainable=704, ref_accuracy=0.66,
                notes="Keras Glorot init and BN defaults (momentum 0.99, eps 1e-3)")
def alexnet(num_classes=10, in_chans=3, act="relu"):
    return AlexNet(num_classes, in_chans, act, modern=False)


@register_model(reproduces="modern form of five-classic-cnns AlexNet", faithful=False,
                notes="BN on every conv, 'same' convs, 2x2 pools, GAP head, Kaiming init")
def alexnet_modern(num_classes=10, in_chans=3, act="relu"):
    return AlexNet(num_classes, in_chans, act, modern=True)
