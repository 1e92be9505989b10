"""LeNet-5 (five-classic-cnns) and a modern CIFAR form of it."""

from __future__ import annotations

import torch
import torch.nn as nn

from cifarlab.models.layers import check_in_chans, init_he, init_keras, make_act
from cifarlab.models.registry import register_model


class LeNet(nn.Module):
    """conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> dense 120 -> 84 -> classes.

    faithful: 'valid' convs with bias, no BN, Keras init (62,006 params at 3 channels).
    modern: conv-BN-act without bias, Kaiming init; the same shapes and widths.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, act: str = "sigmoid",
                 modern: bool = False):
        super().__init__()
        check_in_chans(in_chans)
        self.features = nn.Sequential(*self._conv(in_chans, 6, act, modern),
                                      *self._conv(6, 16, act, modern))
        self.flatten = nn.Flatten()
        self.head = nn.Sequential(nn.Linear(16 * 5 * 5, 120), make_act(act),
                                  nn.Linear(120, 84), make_act(act),
                                  nn.Linear(84, num_classes))
        init_he(self) if modern else init_keras(self)

    @staticmethod
    def _conv(cin: int, cout: int, act: str, modern: bool) -> list[nn.Module]:
        norm = [nn.BatchNorm2d(cout)] if modern else []
        return [nn.Conv2d(cin, cout, 5, bias=not modern), *norm, make_act(act), nn.MaxPool2d(2)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.features(x)))


@register_model(reproduces="five-classic-cnns: LeNet-5 (sigmoid, valid convs)", faithful=True,
                ref_params=62_006, ref_nontrainable=0, ref_accuracy=0.52,
                notes="Keras Glorot init; softmax left to the loss")
def lenet5(num_classes=10, in_chans=3, act="sigmoid"):
    return LeNet(num_classes, in_chans, act, modern=False)


@register_model(reproduces="modern form of five-classic-cnns LeNet-5", faithful=False,
                notes="BN after each conv, ReLU, Kaiming init")
def lenet5_modern(num_classes=10, in_chans=3, act="relu"):
    return LeNet(num_classes, in_chans, act, modern=True)
