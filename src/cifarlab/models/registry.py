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
from cifarlab.words import plain_words


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


# The bounds on what architecture arguments may ask for, checked on a shapes-only build before
# anything is allocated. The registered models hold at most a few tens of millions of weights and
# keep under twenty million activations per 32x32 image; the caps leave room for wider variants
# while refusing a file or flag that would fill the memory (4 bytes a number: 400 MB of weights,
# 256 MB of activations per image).
MAX_PARAMS = 100_000_000
MAX_ACTIVATIONS = 64_000_000  # numbers each layer outputs for one 32x32 image, summed
_FEW_CLASSES = 1000  # a registered model with its own arguments and at most this many classes is known to fit


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build model ``name``; kwargs such as ``in_chans`` and ``act`` go to its variant.

    Arguments asking for more than MAX_PARAMS weights or MAX_ACTIVATIONS activations per
    image, or that the variant cannot build, are a ModelError before anything is allocated."""
    fn, info = _lookup(name)
    if _is_default(info, kwargs) and type(num_classes) is int and 0 < num_classes <= _FEW_CLASSES:
        return fn(num_classes=num_classes, **kwargs)  # a registered model as written: no need to measure
    params, acts = model_cost(name, num_classes, **kwargs)
    if params > MAX_PARAMS:
        raise ModelError(f"model {name!r} with {_shown(kwargs)} would hold {params:,} parameters, over the "
                         f"{MAX_PARAMS:,} limit; choose smaller widths")
    if acts > MAX_ACTIVATIONS:
        raise ModelError(f"model {name!r} with {_shown(kwargs)} would keep {acts:,} activation values per "
                         f"image, over the {MAX_ACTIVATIONS:,} limit; choose smaller widths")
    return fn(num_classes=num_classes, **kwargs)


def model_cost(name: str, num_classes: int = 10, **kwargs) -> tuple[int, int]:
    """``(parameters and buffers, activations per 32x32 image)`` of the model these arguments
    describe, from a build on the meta device: shapes only, no memory, no arithmetic."""
    import torch
    fn, info = _lookup(name)
    unknown = sorted(set(kwargs) - set(info.default_kwargs))
    if unknown:
        valid = ", ".join(k for k in info.default_kwargs if k != "num_classes")
        raise ModelError(f"model {name!r} takes no argument {unknown[0]!r} (it takes: {valid})")
    if type(num_classes) is not int or num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    try:
        with torch.device("meta"):
            model = fn(num_classes=num_classes, **kwargs)
    except ModelError:
        raise
    except (TypeError, ValueError, RuntimeError, IndexError, OverflowError, AttributeError) as exc:
        raise ModelError(f"model {name!r} cannot be built with {_shown(kwargs)}: "
                         f"{' '.join(str(exc).split())[:160] or type(exc).__name__}") from None
    params = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    if params > MAX_PARAMS:  # no need to trace its activations
        return params, 0
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(_numel(out)))
             for m in model.modules() if not list(m.children())]
    in_chans = kwargs.get("in_chans", info.default_kwargs.get("in_chans", info.in_chans))
    try:
        with torch.no_grad():
            model.eval()(torch.empty(1, in_chans, 32, 32, device="meta"))
    except (TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise ModelError(f"model {name!r} cannot run with {_shown(kwargs)}: "
                         f"{' '.join(str(exc).split())[:160] or type(exc).__name__}") from None
    finally:
        for h in hooks:
            h.remove()
    return params, sum(sizes)


def _is_default(info: ModelInfo, kwargs: dict) -> bool:
    try:
        return all(k in info.default_kwargs and bool(info.default_kwargs[k] == v) for k, v in kwargs.items())
    except Exception:  # an argument that cannot even be compared: measure it
        return False


def _numel(out) -> int:
    if hasattr(out, "numel"):
        return out.numel()
    if isinstance(out, (tuple, list)):
        return sum(_numel(o) for o in out)
    return 0


def _shown(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}"[:60] for k, v in kwargs.items()) or "its default arguments"


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
