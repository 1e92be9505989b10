"""The colab notebook's 4-module Inception-v1-style net (colab-inception-v1.md)."""

from __future__ import annotations

import torch
import torch.nn as nn

from cifarlab.models.googlenet import InceptionBlock
from cifarlab.models.layers import check_in_chans, init_he, init_keras, keras_bn, pool_head
from cifarlab.models.registry import register_model

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) of the notebook's four modules
_MODULES = ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64),
            (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64))


class InceptionColab(nn.Module):
    """Four Inception modules, each followed by a 2x2 max-pool (32 -> 2), then a head.

    faithful: branch convs with bias and act but no BN; BN on the concatenated output;
    head avg-pool 2 -> flatten 512 -> dense 128 (linear) -> dropout .5 -> BN -> dense 64
    (linear) -> dropout .5 -> BN -> classes (1,420,834 Keras params, 3,904 non-trainable).
    modern: conv-BN-act branches without bias, global average pool -> dropout -> linear.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, act: str = "relu",
                 modern: bool = False):
        super().__init__()
        cin = check_in_chans(in_chans)
        stages: list[nn.Module] = []
        for cfg in _MODULES:
            block = InceptionBlock(cin, cfg, act=act, bias=not modern, bn="torch" if modern else None)
            cin = block.out_channels
            norm = [] if modern else [keras_bn(cin)]
            stages.append(nn.Sequential(block, *norm, nn.MaxPool2d(2)))
        self.blocks = nn.Sequential(*stages)
        self.head = self._modern_head(cin, num_classes) if modern else self._faithful_head(cin, num_classes)
        init_he(self) if modern else init_keras(self)

    @staticmethod
    def _faithful_head(cin: int, num_classes: int) -> nn.Sequential:
        return nn.Sequential(nn.AvgPool2d(2), nn.Flatten(),
                             nn.Linear(cin, 128), nn.Dropout(0.5), keras_bn(128, dims=1),
                             nn.Linear(128, 64), nn.Dropout(0.5), keras_bn(64, dims=1),
                             nn.Linear(64, num_classes))

    @staticmethod
    def _modern_head(cin: int, num_classes: int) -> nn.Sequential:
        return pool_head(cin, num_classes, dropout=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


@register_model(reproduces="colab-inception-v1: 4-module Inception net with a dense head",
                faithful=True, ref_params=1_420_834, ref_nontrainable=3_904, ref_accuracy=None,
                notes="its reported 97% is Keras binary accuracy (BCE on one-hot), not top-1; "
                      "L2 regularizers are training settings, not layers")
def inception_colab(num_classes=10, in_chans=3, act="relu"):
    return InceptionColab(num_classes, in_chans, act, modern=False)


@register_model(reproduces="modern form of the colab-inception-v1 net", faithful=False,
                notes="conv-BN-act branches, GAP head instead of the 128-64 dense head")
def inception_colab_modern(num_classes=10, in_chans=3, act="relu"):
    return InceptionColab(num_classes, in_chans, act, modern=True)
