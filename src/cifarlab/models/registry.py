"""Model registry: names -> constructors, with the metadata each reference printed.

A variant is a short function decorated with ``@register_model(...)``; its name is the
model name and its keyword defaults become ``ModelInfo.default_kwargs``.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from cifarlab.errors import ModelError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    reproduces: str                       # which write-up / what, or "modern form of ..."
    faithful: bool                        # layers exactly as the reference
    in_chans: int = 3
    ref_params: int | None = None         # Keras "Total params" the reference printed
    ref_nontrainable: int | None = None   # Keras "Non-trainable params" (BN moving stats)
    ref_accuracy: float | None = None     # test accuracy the reference reported
    notes: str = ""
    default_kwargs: dict = field(default_factory=dict)
    summary: str = ""                     # a few plain words for narrow tables (SUMMARIES)


@dataclass(frozen=True)
class ParamCount:
    trainable: int           # PyTorch parameters with requires_grad
    non_trainable: int       # PyTorch parameters without requires_grad
    keras_total: int         # all parameters + BN moving mean/variance, as Keras counts
    keras_nontrainable: int  # BN moving mean/variance (+ frozen parameters)


_REGISTRY: dict[str, tuple[Callable[..., nn.Module], ModelInfo]] = {}

# The write-ups the faithful models come from, named in words wherever a user reads them.
WRITE_UPS = {
    "five-classic-cnns": "the Keras tutorial comparing five classic CNNs on CIFAR-10",
    "colab-inception-v1": "the Colab notebook's small Inception-v1",
    "keras-deep-cnn": "the Keras deep-CNN tutorial",
    "inception-v3-cifar": "the Inception-v3-on-CIFAR-10 write-up",
}

# What each model is, in a few plain words (``cifarlab models`` at 80 columns).
SUMMARIES = {
    "lenet5": "LeNet-5, 1998 style", "lenet5_modern": "LeNet-5 with BN and ReLU",
    "alexnet": "AlexNet, tutorial form", "alexnet_modern": "AlexNet with BN",
    "vgg11": "VGG-11 with BN", "vgg13": "VGG-13 with BN", "vgg16": "VGG-16 with BN",
    "vgg19": "VGG-19 with BN", "vgg16_faithful": "VGG-16, tutorial form",
    "googlenet_small": "small GoogLeNet, tutorial", "googlenet": "GoogLeNet (Inception-v1)",
    "resnet18": "ResNet-18, tutorial form", "resnet20": "ResNet-20 (He et al.)",
    "resnet32": "ResNet-32 (He et al.)", "resnet56": "ResNet-56 (He et al.)", "resnet110": "ResNet-110 (He et al.)",
    "inception_colab": "small Inception, notebook", "inception_colab_modern": "small Inception with BN",
    "deepcnn15": "15-conv plain CNN", "deepcnn15_modern": "15-conv plain CNN, BN",
    "inception_v3": "Inception-v3, full stem", "inception_v3_slim": "Inception-v3, 1-conv stem",
    "inception_v3_slim352": "Inception-v3 slim, uniform", "inception_v3_stem_slim": "Inception-v3, stride-1 stem",
    "airnet94": "fast modern net (GPU)", "airnet95": "fast modern net, wider",
    "airnet96": "fast modern net, deeper", "airnet_medium": "fast net for a CPU",
    "airnet_small": "fast net for a small CPU", "airnet_tiny": "tiny, for tests",
}


def plain_words(text: str) -> str:
    """``text`` with each write-up's short name replaced by its name in words."""
    for slug, words in WRITE_UPS.items():
        text = text.replace(f"the {slug} net", words)
        text = text.replace(f"modern form of {slug} ", f"modern form of {words}: ")
        text = text.replace(f"modern form of the {slug} ", f"modern form of {words}: ")
        text = text.replace(f"{slug}: ", f"{words}: ").replace(slug, words)
    return text


def register_model(*, family: str | None = None, **info) -> Callable:
    """Decorator: register ``fn`` under its own name with ModelInfo fields ``info``."""
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        fam = family or fn.__module__.rsplit(".", 1)[-1]
        fields = {**info, "reproduces": plain_words(info.get("reproduces", "")),
                  "notes": plain_words(info.get("notes", ""))}
        fields.setdefault("summary", SUMMARIES.get(name, ""))
        _REGISTRY[name] = (fn, ModelInfo(name=name, family=fam, default_kwargs=_defaults(fn), **fields))
        return fn
    return deco


def _defaults(fn: Callable) -> dict:
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _lookup(name: str) -> tuple[Callable[..., nn.Module], ModelInfo]:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `cifarlab models` to list them"
        raise ModelError(f"unknown model {name!r}: {hint}")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build model ``name``; kwargs such as ``in_chans`` and ``act`` go to its variant."""
    fn, info = _lookup(name)
    unknown = sorted(set(kwargs) - set(info.default_kwargs))
    if unknown:
        valid = ", ".join(k for k in info.default_kwargs if k != "num_classes")
        raise ModelError(f"model {name!r} takes no argument {unknown[0]!r} (it takes: {valid})")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    return fn(num_classes=num_classes, **kwargs)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching the fnmatch ``pattern`` (e.g. 'resnet*'), in registration order."""
    return [n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern)]


def model_info(name: str) -> ModelInfo:
    return _lookup(name)[1]


def count_params(model: nn.Module) -> ParamCount:
    """PyTorch parameter counts next to the Keras-style total the references printed."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    moving = sum(b.numel() for n, b in model.named_buffers()
                 if n.endswith(("running_mean", "running_var")))
    return ParamCount(trainable, frozen, trainable + frozen + moving, frozen + moving)
