"""cifarlab: small-image classification on CIFAR-10.

The public API is listed in ``__all__``; names are imported lazily so that
``import cifarlab`` stays cheap and optional extras are never imported here.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "CifarlabError": "cifarlab.errors",
    "load_cifar": "cifarlab.data",
    "CifarData": "cifarlab.data",
    "create_model": "cifarlab.models",
    "list_models": "cifarlab.models",
    "model_info": "cifarlab.models",
    "count_params": "cifarlab.models",
    "TrainConfig": "cifarlab.training",
    "train": "cifarlab.training",
    "evaluate": "cifarlab.training",
    "load_model": "cifarlab.inference",
    "Predictor": "cifarlab.inference",
    "resolve": "cifarlab.resolve",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'cifarlab' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
