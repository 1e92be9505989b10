"""Named config presets: ``--recipe NAME``; flags given explicitly override the recipe.

A recipe is a dict of TrainConfig fields that differ from the defaults. Later issues
register more (e.g. ``fast``) with ``register_recipe``.
"""

from __future__ import annotations

import importlib

from cifarlab.engine.config import TrainConfig
from cifarlab.errors import ConfigError

_RECIPES: dict[str, dict] = {}
_DESCRIPTIONS: dict[str, str] = {}
# modules that register more recipes (and the callbacks those recipes need) when imported;
# loaded on the first recipe lookup, and by train() before it builds a run
RECIPE_MODULES = ["cifarlab.engine.fast"]


def load_recipe_modules() -> None:
    for name in RECIPE_MODULES:
        importlib.import_module(name)  # cached by Python after the first call


def register_recipe(name: str, values: dict, description: str = "") -> None:
    TrainConfig.from_dict(values)  # fail at registration, not at first use
    _RECIPES[name] = dict(values)
    _DESCRIPTIONS[name] = description


def list_recipes() -> dict[str, str]:
    """Recipe name -> one-line description."""
    load_recipe_modules()
    return dict(_DESCRIPTIONS)


def recipe_values(name: str) -> dict:
    load_recipe_modules()
    if name not in _RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(_RECIPES))}")
    return dict(_RECIPES[name])


def recipe_config(name: str, overrides: dict | None = None) -> TrainConfig:
    """The recipe's config with ``overrides`` (e.g. explicit CLI flags) on top."""
    cfg = TrainConfig.from_dict({**recipe_values(name), "recipe": name})
    return cfg.override(overrides or {})


register_recipe("default", {}, "resnet20, SGD nesterov 0.1, wd 5e-4, onecycle, crop+flip, "
                "label smoothing 0.1, 20 epochs (about 91% expected)")
register_recipe(
    "reference",
    {
        "optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0,
        "loss": "ce", "label_smoothing": 0.0, "schedule": "constant",
        "batch_size": 32, "epochs": 10, "augment": "none",
    },
    "the five-classic-cnns settings: Adam 1e-3, cross-entropy, batch 32, 10 epochs, no augmentation",
)
register_recipe(
    "keras-inception",
    {
        "model": "inception_colab", "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "loss": "bce",
        "label_smoothing": 0.0, "schedule": "plateau", "batch_size": 256, "epochs": 100,
        "augment": "none", "val": 10000, "early_stop": True, "early_patience": 10,
        "select_metric": "val_loss",
    },
    "the colab-inception-v1 notebook: inception_colab, Adam 1e-3, BCE on one-hot, batch 256, ReduceLROnPlateau "
    "(0.3, 4, 1e-4), EarlyStopping(val_loss, 10), best val_loss",
)
