"""Building blocks shared by the model families: activations, conv units, initializers."""

from __future__ import annotations

import torch.nn as nn

from cifarlab.errors import ModelError

# name -> (module class, constructor kwargs); the study in five-classic-cnns varied these
_ACTIVATIONS: dict[str, tuple[type[nn.Module], dict]] = {
    "relu": (nn.ReLU, {}),
    "tanh": (nn.Tanh, {}),
    "sigmoid": (nn.Sigmoid, {}),
    "gelu": (nn.GELU, {}),
    "silu": (nn.SiLU, {}),
    "elu": (nn.ELU, {}),
    "leaky_relu": (nn.LeakyReLU, {"negative_slope": 0.01}),
}
ACTIVATIONS = tuple(_ACTIVATIONS)


def act_class(name: str) -> type[nn.Module]:
    """The module class behind an activation name; unknown names raise ModelError."""
    if name not in _ACTIVATIONS:
        raise ModelError(f"unknown activation {name!r}: choose one of {', '.join(ACTIVATIONS)}")
    return _ACTIVATIONS[name][0]


def make_act(name: str) -> nn.Module:
    cls = act_class(name)
    return cls(**_ACTIVATIONS[name][1])


def check_in_chans(in_chans: int) -> int:
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ModelError(f"in_chans must be a positive integer (1 for grayscale, 3 for RGB), got {in_chans!r}")
    return in_chans


def keras_bn(channels: int, dims: int = 2) -> nn.Module:
    """BatchNorm with Keras defaults (momentum 0.99 -> torch 0.01, epsilon 1e-3)."""
    cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return cls(channels, eps=1e-3, momentum=0.01)


def conv_bn_act(cin: int, cout: int, kernel: int | tuple[int, int], *, stride: int = 1,
                act: str = "relu", bias: bool = False, bn: str | None = "torch",
                padding: int | tuple[int, int] | None = None) -> nn.Sequential:
    """conv -> [BN] -> act with 'same'-style padding unless told otherwise.

    bn: "torch" (momentum 0.1, eps 1e-5: also Keras momentum 0.9 / eps 1e-5), "keras"
    (Keras defaults), or None. bias=True reproduces Keras' default conv bias before BN.
    """
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    pad = (k[0] // 2, k[1] // 2) if padding is None else padding
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=bias)]
    if bn == "torch":
        layers.append(nn.BatchNorm2d(cout))
    elif bn == "keras":
        layers.append(keras_bn(cout))
    layers.append(make_act(act))
    return nn.Sequential(*layers)


def pool_head(cin: int, num_classes: int, dropout: float = 0.0) -> nn.Sequential:
    """Global average pool, flatten, [dropout,] linear: the classifier most families end in.
    Its layout (and so the state_dict keys, ``head.2`` or ``head.3``) is the one the
    families wrote out before sharing it, so saved checkpoints still load."""
    drop = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), *drop, nn.Linear(cin, num_classes))


def init_keras(model: nn.Module) -> nn.Module:
    """Keras defaults: Glorot-uniform kernels, zero biases (BN keeps gamma 1, beta 0)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def init_he(model: nn.Module, mode: str = "fan_out") -> nn.Module:
    """Kaiming-normal conv/linear weights, zero biases: trains deep ReLU nets from scratch.

    mode "fan_in" matches Keras' he_normal (used by the Inception-v3 write-up).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
        elif isinstance(m, nn.Linear) and mode == "fan_in":
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        else:  # linear layers of modern nets keep torch's default (small, uniform)
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return model
