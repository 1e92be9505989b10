"""Training: one typed config, a plan, one loop with callbacks, evaluation and calibration.

Names are imported on first use, so that ``import cifarlab.training`` stays cheap. Every
submodule keeps its own name: the function ``evaluate`` lives in ``training.evaluation``.
"""

from __future__ import annotations

from cifarlab.lazy import exports

# public name -> module that defines it
_API = {
    "launch": "distributed",
    "RunResult": "runs", "TrainingInterrupted": "api", "callbacks_for": "api", "resume": "api", "train": "api",
    "Callback": "callbacks", "Checkpointer": "callbacks", "DivergenceGuard": "callbacks",
    "EarlyStopping": "callbacks", "MetricsLogger": "callbacks", "Plotter": "callbacks",
    "ProgressBar": "callbacks", "TensorBoardLogger": "callbacks",
    "data_for": "dataset", "TrainConfig": "config",
    "evaluate": "evaluation", "evaluate_model": "evaluation", "tta_views": "evaluation", "Learner": "loop",
    "list_recipes": "recipes", "recipe_config": "recipes", "register_recipe": "recipes",
    "resolve_config": "recipes",
}

__all__ = sorted(_API)
__getattr__, __dir__ = exports(__name__, _API)
