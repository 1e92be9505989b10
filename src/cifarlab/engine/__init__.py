"""Training and evaluation: one typed config, one loop with callbacks, self-describing checkpoints."""

from __future__ import annotations

from cifarlab.engine.batch_predict import predict_folder
from cifarlab.engine.distributed import launch
from cifarlab.engine.api import DEFAULT_CALLBACKS, RunResult, TrainingInterrupted, resume, train
from cifarlab.engine.callbacks import (
    Callback, Checkpointer, DivergenceGuard, EarlyStopping, LRScheduler, MetricsLogger, Plotter,
    ProgressBar, StopAfter, TensorBoardLogger,
)
from cifarlab.engine.checkpoint import load_checkpoint, load_model
from cifarlab.engine.config import TrainConfig
from cifarlab.engine.evaluate import evaluate, evaluate_model, tta_views
from cifarlab.engine.loop import Learner
from cifarlab.engine.predict import Prediction, Predictor, load_image
from cifarlab.engine.recipes import list_recipes, recipe_config, register_recipe

__all__ = [
    "DEFAULT_CALLBACKS", "Callback", "Checkpointer", "DivergenceGuard", "EarlyStopping", "LRScheduler",
    "Learner", "MetricsLogger", "Plotter", "Prediction", "Predictor", "ProgressBar", "RunResult",
    "StopAfter", "TensorBoardLogger", "TrainConfig", "TrainingInterrupted", "evaluate", "evaluate_model", "launch", "predict_folder",
    "list_recipes", "load_checkpoint", "load_image", "load_model", "recipe_config", "register_recipe",
    "resume", "train", "tta_views",
]
