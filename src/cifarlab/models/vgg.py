"""VGG for 32x32 inputs: BN variants 11/13/16/19 and five-classic-cnns' VGG16."""

from __future__ import annotations

import torch
import torch.nn as nn

from cifarlab.models.layers import check_in_chans, init_he, init_keras, keras_bn, make_act
from cifarlab.models.registry import register_model

# conv widths per group; each group ends with a 2x2 max-pool (32 -> 1 after five groups)
_CFGS = {
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    19: ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


class VGG(nn.Module):
    """Groups of 3x3 conv-BN-act, a max-pool after each group, then a classifier.

    faithful (five-classic VGG16): conv with bias, Keras BN, dropout 0.2 after each group,
    dense 512 -> 512 -> classes with dropout 0.2 (15,262,026).
    modern (kuangliu-style CIFAR VGG): conv without bias, BN, one linear layer on 512.
    """

    def __init__(self, depth: int = 16, num_classes: int = 10, in_chans: int = 3,
                 act: str = "relu", faithful: bool = False):
        super().__init__()
        cin = check_in_chans(in_chans)
        layers: list[nn.Module] = []
        for group in _CFGS[depth]:
            for cout in group:
                bn = keras_bn(cout) if faithful else nn.BatchNorm2d(cout)
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=faithful), bn, make_act(act)]
                cin = cout
            layers += [nn.MaxPool2d(2)] + ([nn.Dropout(0.2)] if faithful else [])
        self.features = nn.Sequential(*layers)
        self.head = self._faithful_head(cin, num_classes, act) if faithful else nn.Sequential(
            nn.Flatten(), nn.Linear(cin, num_classes))
        init_keras(self) if faithful else init_he(self)

    @staticmethod
    def _faithful_head(cin: int, num_classes: int, act: str) -> nn.Sequential:
        return nn.Sequential(nn.Flatten(), nn.Linear(cin, 512), make_act(act), nn.Dropout(0.2),
                             nn.Linear(512, 512), make_act(act), nn.Dropout(0.2),
                             nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _modern_info(depth: int) -> dict:
    return dict(reproduces=f"modern form of VGG{depth} (Simonyan & Zisserman) for CIFAR, BN",
                faithful=False, notes="conv-BN-act without bias, single linear head, Kaiming init")


@register_model(**_modern_info(11))
def vgg11(num_classes=10, in_chans=3, act="relu"):
    return VGG(11, num_classes, in_chans, act)


@register_model(**_modern_info(13))
def vgg13(num_classes=10, in_chans=3, act="relu"):
    return VGG(13, num_classes, in_chans, act)


@register_model(**dict(_modern_info(16), reproduces="modern form of five-classic-cnns VGG16"))
def vgg16(num_classes=10, in_chans=3, act="relu"):
    return VGG(16, num_classes, in_chans, act)


@register_model(**_modern_info(19))
def vgg19(num_classes=10, in_chans=3, act="relu"):
    return VGG(19, num_classes, in_chans, act)


@register_model(reproduces="five-classic-cnns: VGG16 with BN and a 512-512 dense head",
                faithful=True, ref_params=15_262_026, ref_nontrainable=8_448, ref_accuracy=0.79,
                notes="Keras Glorot init, BN defaults (momentum 0.99, eps 1e-3); conv bias before BN kept")
def vgg16_faithful(num_classes=10, in_chans=3, act="relu"):
    return VGG(16, num_classes, in_chans, act, faithful=True)
