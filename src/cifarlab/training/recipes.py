"""Named config presets (``--recipe NAME``), and the one function that resolves a config.

A recipe is a dict of TrainConfig fields that differ from the defaults and a one-line
description of what it does. What a recipe reached is data, not code: the rows of
``results/cpu_frontier.csv`` (``cifarlab.results.recipe_figure``), which
``cifarlab train --list-recipes`` shows beside the description. Every behaviour a recipe
turns on (whitening, weight averaging, the BN-bias lr, TTA) is a TrainConfig field, so a
recipe adds no code: to add one, add a ``register_recipe`` call at the end of this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cifarlab.training.budget import SHORT_RUN_STEPS
from cifarlab.training.config import TrainConfig
from cifarlab.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    values: dict  # TrainConfig fields that differ from the defaults
    description: str  # one line for `cifarlab train --list-recipes`: what it does


_RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, values: dict, description: str = "") -> None:
    TrainConfig.from_dict(values)  # fail at registration, not at first use
    _RECIPES[name] = Recipe(dict(values), description)


def list_recipes() -> dict[str, str]:
    """Recipe name -> one-line description of what it does."""
    return {name: r.description for name, r in _RECIPES.items()}


def recipe_values(name: str) -> dict:
    if name not in _RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(_RECIPES))}")
    return dict(_RECIPES[name].values)


def recipe_config(name: str, overrides: dict | None = None) -> TrainConfig:
    """The recipe's config with ``overrides`` (e.g. explicit CLI flags) on top."""
    return resolve_config(recipe=name, flags=overrides)


def implied_by(given: dict) -> dict:
    """What settings asked for explicitly turn off in the layers below them: epochs a time
    budget and a cut last epoch, a model the budget's fallback models, a filter lr the
    short-run filter lr. The epochs, model or lr asked for are the ones trained."""
    implied = {}
    if "epochs" in given and "time_budget" not in given:
        implied["time_budget"] = 0.0
    if "epochs" in given and "last_epoch_steps" not in given:
        implied["last_epoch_steps"] = 0
    if "model" in given and "budget_fallback" not in given:
        implied["budget_fallback"] = ""
    if "muon_lr" in given and "muon_lr_short" not in given:
        implied["muon_lr_short"] = 0.0
    return implied


def resolve_config(recipe: str | None = None, file: str | Path | None = None,
                   flags: dict | None = None, sets: dict | None = None) -> TrainConfig:
    """The one place a run's config is assembled: defaults < recipe < file < flags < --set.

    ``epochs`` in ``flags`` or ``sets`` without ``time_budget`` turns a recipe's time budget off,
    ``model`` its fallback models, ``muon_lr`` its short-run filter lr (``implied_by``).

    Each layer is a dict of TrainConfig fields (``file`` a JSON object of them) and replaces
    the fields it names; ``model_kwargs`` in ``flags`` are merged key by key into the layers
    below (``--act gelu`` sets one key without dropping the recipe's others).
    """
    cfg = TrainConfig()
    if recipe is not None:
        cfg.override({**recipe_values(recipe), "recipe": recipe})
    if file is not None:
        cfg = TrainConfig.from_json(file, base=cfg)
    flags = {**implied_by({**(flags or {}), **(sets or {})}), **(flags or {})}
    if "model_kwargs" in flags:
        flags["model_kwargs"] = {**cfg.model_kwargs, **flags["model_kwargs"]}
    return cfg.override(flags).override(sets or {})


# ---------------------------------------------------------------- airbench units
def sgd_values(lr_per_1024: float, decay_per_1024: float, momentum: float, batch_size: int) -> dict:
    """airbench's units -> TrainConfig's (mean loss over the batch, coupled weight decay).

    airbench sums the loss and quotes lr "per 1024 examples", divided by 1 + 1/(1-momentum)
    (the gain of heavy-ball momentum) and weight decay as the fraction of each weight removed
    per 1024 examples at peak lr; PyTorch SGD here sees a batch-mean loss.
    """
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    lr = lr_per_1024 / kilostep * batch_size  # summed loss -> mean loss over the batch
    shrink = decay_per_1024 * batch_size / kilostep  # weight fraction removed per step at peak lr
    return {"lr": lr, "weight_decay": shrink / lr, "momentum": momentum}


def _fast(model: str, epochs: int, lr_per_1024: float, batch_size: int = 1000) -> dict:
    """The record-speed recipe (airbench94, docs/fast-recipe.md) for ``model``."""
    return {
        "model": model, "epochs": epochs,
        "batch_size": batch_size,  # 1000 divides 50k: no ragged last batch, one compiled shape
        "optimizer": "sgd", "nesterov": True, **sgd_values(lr_per_1024, 0.0153, 0.85, batch_size),
        "bias_lr_scale": 64.0,  # BN biases: lr x64, weight decay /64 (airbench's bias group)
        "loss": "ce", "label_smoothing": 0.2,
        "schedule": "onecycle", "warmup": 0.23,  # lr/10 -> lr over 23% of the steps, then -> 0
        "augment": "altflip,translate:2",  # each image mirrored every other epoch; +-2 px reflect shift
        "val": 0,  # all 50k images train; the test split is evaluated once at the end
        "amp": True, "channels_last": True,  # bf16 autocast where native (CUDA, AVX512-BF16 CPUs); NHWC convs
        "whiten": True, "whiten_images": 5000, "whiten_eps": 5e-4, "whiten_bias_epochs": 3,
        "average": "lookahead", "average_decay": 0.95, "average_every": 5, "average_power": 3.0,
        "tta": "flip-translate",  # final test: mean logits of the image, its mirror, each shifted 1 px
    }


# ---------------------------------------------------------------- the recipes
register_recipe("default", {}, "resnet20, SGD nesterov 0.1, wd 5e-4, onecycle, crop+flip, "
                "label smoothing 0.1, 20 epochs")
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
register_recipe(
    "fast", _fast("airnet94", 10, 11.5),
    "record-speed airnet94: whitening init, SGD-Nesterov lr 11.5/1024 ex, BN-bias lr x64, lookahead, "
    "alternating flip + 2px translate, label smoothing 0.2, batch 1000, 10 epochs, TTA")
register_recipe(
    "fast-wide", _fast("airnet95", 15, 10.0),
    "wider airnet95: the fast recipe at lr 10/1024 ex for 15 epochs")


# ---------------------------------------------------------------- CPU time budgets
def _cpu(model: str, epochs: int, resolutions: str, batch_size: int = 250) -> dict:
    """The fast recipe cut to a 2-core CPU's budget (results/cpu_frontier.csv has the runs,
    results/cpu_probes.csv the changes tried; docs/cpu-frontier.md the method).

    Batch 250: on two cores oneDNN runs these small nets faster per image than at 1000 (the
    lr scales with the batch, airbench's per-1024 units). Low-resolution first epochs buy
    more passes for the same time. Test-time augmentation is ``_register_cpu``'s to choose:
    the flip-translate views cost 6 forward passes of the test set, the mirror 2. Training
    runs in bf16 (``amp``, from the fast recipe) where the CPU has AVX512-BF16 or AMX: more
    steps a second for a little accuracy at equal epochs. The budget recipes plan their
    epochs on the machine they run on (training/budget.py).
    """
    return {**_fast(model, epochs, 11.5, batch_size), "resolutions": resolutions,
            # conv filters by Muon, each renormalized before its step (BatchNorm follows every
            # conv); the rest as before. airbench94_muon's lr 0.24 / momentum 0.6 is tuned for 200
            # steps of batch 2000; at batch 250 0.05 / 0.85 did best, and a budget that fits
            # SHORT_RUN_STEPS steps or fewer (a slow CPU's 2 minutes) takes 0.08
            # (results/cpu_probes.csv)
            "optimizer": "muon", "muon_lr": 0.05, "muon_lr_short": 0.08, "muon_momentum": 0.85,
            "muon_normalize": True}


def _register_cpu(name: str, model: str, minutes: int, epochs: int, resolutions: str, fallback: str,
                  bf16_test: bool = False, tta: str = "flip-translate") -> None:
    """A CPU recipe: a time budget of ``minutes``, its epochs planned on the machine it runs on
    (``epochs`` with --time-budget 0), and ``fallback`` the smaller model it trains where
    ``model`` would get too few full-resolution epochs in the budget. ``bf16_test``: the final
    test in bf16 too where training is (``amp_eval``), for budgets short enough that the
    test's seconds count. ``tta``: the final test's views, flip-translate unless its 6 passes
    cost a share of an epoch that pays more (the mirror, 2 passes)."""
    values = {**_cpu(model, epochs, resolutions), "time_budget": 60.0 * minutes, "budget_fallback": fallback,
              "amp_eval": bf16_test, "tta": tta}
    from cifarlab.data.loader import parse_resolutions
    stages = ", ".join(f"{n} at {side} px" for side, n in parse_resolutions(resolutions))
    instead = f" ({fallback} on a CPU too slow for it)" if fallback else ""
    text = (f"any CPU, {minutes} min of wall time: {model}{instead}, the fast recipe with Muon filters at "
            f"batch 250 (their lr {values['muon_lr_short']:g}, not {values['muon_lr']:g}, in a plan of "
            f"{SHORT_RUN_STEPS:,} steps or fewer), epochs planned to fit {60 * minutes} s and re-planned as they "
            f"run ({stages}, the rest at 32 px, the last cut to the time left; fewer low-resolution ones "
            f"where that buys a 2nd or 3rd at 32 px; {epochs} with "
            f"--time-budget 0), bf16 where the CPU has it"
            f"{' (the test too)' if bf16_test else ''}, {tta} TTA")
    register_recipe(name, values, text)


# what each recipe reached is in results/cpu_frontier.csv (`cifarlab train --list-recipes`
# shows the latest), the changes tried on them and why each was kept or not in
# results/cpu_probes.csv
_register_cpu("cpu-2min", "airnet_small", 2, 7, "16:2,24:1", fallback="",
              # the mirror only: flip-translate's 6 test passes cost a third of a 32-px epoch of a
              # run still climbing fast, and tested worse as a budget (results/cpu_probes.csv)
              bf16_test=True, tta="flip")
_register_cpu("cpu-5min", "airnet_medium", 5, 7, "16:2,24:2", fallback="airnet_small", bf16_test=True)
_register_cpu("cpu-15min", "airnet_medium", 15, 21, "16:3,24:3", fallback="airnet_small")
_register_cpu("cpu-45min", "airnet94", 45, 35, "16:4,24:4", fallback="airnet_medium")
