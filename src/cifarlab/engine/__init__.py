"""Training and evaluation: one typed config, one loop with callbacks, self-describing checkpoints.

Names are imported on first use, so that a torch-free module (the run registry) can import
``cifarlab.engine.callbacks`` without loading the whole engine.
"""

from __future__ import annotations

import importlib
import sys
import types

# public name -> module that defines it
_API = {
    "predict_folder": "batch_predict", "launch": "distributed",
    "RunResult": "runs", "TrainingInterrupted": "api", "callbacks_for": "api", "resume": "api", "train": "api",
    "Callback": "callbacks", "Checkpointer": "callbacks", "DivergenceGuard": "callbacks",
    "EarlyStopping": "callbacks", "MetricsLogger": "callbacks", "Plotter": "callbacks",
    "ProgressBar": "callbacks", "StopAfter": "callbacks", "TensorBoardLogger": "callbacks",
    "convert_checkpoint": "checkpoint", "data_for": "dataset", "load_checkpoint": "checkpoint",
    "load_model": "checkpoint", "TrainConfig": "config",
    "evaluate": "evaluate", "evaluate_model": "evaluate", "tta_views": "evaluate", "Learner": "loop",
    "Prediction": "predict", "Predictor": "predict", "load_image": "predict",
    "list_recipes": "recipes", "recipe_config": "recipes", "register_recipe": "recipes",
    "resolve_config": "recipes",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f"cifarlab.engine.{_API[name]}"), name)
    raise AttributeError(f"module 'cifarlab.engine' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


class _Engine(types.ModuleType):
    """``evaluate`` names both a submodule and the public function. Python sets a package
    attribute for each submodule it imports; here that would hide the function as soon as
    any module imported ``cifarlab.engine.evaluate``, so that one attribute is not set."""

    def __setattr__(self, name: str, value) -> None:
        if not (name == "evaluate" and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Engine
