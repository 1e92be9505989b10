"""The 15-conv plain CNN of keras-deep-cnn.md (1,071,542 params)."""

from __future__ import annotations

import torch
import torch.nn as nn

from cifarlab.models.layers import check_in_chans, init_he, init_keras, make_act, pool_head
from cifarlab.models.registry import register_model

# three groups of five 3x3 'same' convs; max-pool 2 after the first two groups
_GROUPS = ((32, 32, 32, 48, 48), (80,) * 5, (128,) * 5)


class PlainCNN(nn.Module):
    """Plain conv stack, global max-pool, classifier.

    faithful: convs with bias and act, no BN, dropout .25 after each group; global max
    pool -> dropout .25 -> dense 500 -> act -> dropout .25 -> classes.
    modern: conv-BN-act without bias; global average pool -> dropout -> linear.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, act: str = "relu",
                 modern: bool = False):
        super().__init__()
        cin = check_in_chans(in_chans)
        layers: list[nn.Module] = []
        for g, group in enumerate(_GROUPS):
            for cout in group:
                norm = [nn.BatchNorm2d(cout)] if modern else []
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=not modern), *norm, make_act(act)]
                cin = cout
            if g < len(_GROUPS) - 1:  # the last group ends in the global pool instead
                layers += [nn.MaxPool2d(2)] + ([] if modern else [nn.Dropout(0.25)])
        self.features = nn.Sequential(*layers)
        self.head = pool_head(cin, num_classes, dropout=0.2) if modern else nn.Sequential(
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(0.25), nn.Linear(cin, 500),
            make_act(act), nn.Dropout(0.25), nn.Linear(500, num_classes))
        init_he(self) if modern else init_keras(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model(reproduces="keras-deep-cnn: 15-conv plain CNN with global max-pool and dense 500",
                faithful=True, ref_params=1_071_542, ref_nontrainable=0, ref_accuracy=None,
                notes="the write-up reports no test accuracy; its augmentation (rotate 10, shift .2, "
                      "flip) is a training setting")
def deepcnn15(num_classes=10, in_chans=3, act="relu"):
    return PlainCNN(num_classes, in_chans, act, modern=False)


@register_model(reproduces="modern form of the keras-deep-cnn 15-conv plain CNN", faithful=False,
                notes="BN after every conv, GAP + linear head instead of dense 500")
def deepcnn15_modern(num_classes=10, in_chans=3, act="relu"):
    return PlainCNN(num_classes, in_chans, act, modern=True)
