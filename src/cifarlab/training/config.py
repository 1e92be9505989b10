"""One typed training configuration, filled by defaults, a recipe, a JSON file and flags.

Every value a run uses is a field here, recipes included: a recipe (training.recipes) is
only a dict of these fields, and ``recipe`` records which one the values started from.

Every field has a unit and a reason. ``TrainConfig.from_dict`` type-checks values and
rejects unknown keys with the list of valid ones, so a typo never silently trains the
default (nanoGPT's configurator, made strict).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarlab.errors import ConfigError

OPTIMIZERS = ("sgd", "muon", "adam", "adamw", "rmsprop", "adagrad", "adadelta")
LOSSES = ("ce", "bce", "mse")
SCHEDULES = ("constant", "step", "cosine", "onecycle", "plateau")
DEVICES = ("auto", "cpu", "cuda", "mps")
MODES = ("min", "max", "auto")
TTA_MODES = ("none", "flip", "flip-translate")
AVERAGE_MODES = ("none", "lookahead")


@dataclass
class TrainConfig:
    # --- model ---
    model: str = "resnet20"  # registry name (cifarlab models); "default": the shipped model's architecture
    model_kwargs: dict = field(default_factory=dict)  # passed to create_model, e.g. {"act": "gelu"}
    # --- run length and reproducibility ---
    epochs: int = 20  # full passes over the training split (~35 min for resnet20 on 2 idle CPU cores)
    # the last epoch stops after this many steps (0: a whole one); a time budget sets it to use
    # the time left after its whole epochs
    last_epoch_steps: int = 0
    batch_size: int = 128  # images per optimizer step
    seed: int = 0  # seeds model init, the val split, shuffling and augmentation
    # wall-clock seconds for the whole run (data loading, training, final test); > 0: a new run
    # times a few of its steps and sets `epochs` to fit (training/budget.py); 0: `epochs` as given
    time_budget: float = 0.0
    # smaller models a time budget falls back to, in order, comma-separated, when `model` would
    # train fewer than budget.MIN_FULL_EPOCHS full-resolution epochs in it on this machine;
    # "" keeps `model` whatever the plan (a model typed by the user clears it)
    budget_fallback: str = ""
    # --- optimizer ---
    optimizer: str = "sgd"  # one of OPTIMIZERS
    lr: float = 0.1  # peak learning rate, absolute (not rescaled when batch_size changes)
    # BatchNorm biases learn this many times faster (their own param group, lr x this and weight
    # decay / this, so per-step shrinkage is unchanged); airbench uses 64. 1 = one group for all
    bias_lr_scale: float = 1.0
    momentum: float = 0.9  # sgd momentum / rmsprop momentum; beta1 for adam(w)
    nesterov: bool = True  # sgd only: Nesterov momentum converges a little faster
    weight_decay: float = 5e-4  # L2 coefficient (decoupled for adamw); applied to all weights
    # muon: conv filters take Muon steps (momentum orthogonalized by Newton-Schulz, training/muon.py),
    # every other parameter the sgd settings above. Filters' peak lr (the schedule scales it
    # like lr), their own momentum, and whether each filter is rescaled to norm sqrt(out)
    # before its step (right when BatchNorm follows every conv; then no weight decay on them)
    muon_lr: float = 0.24
    muon_momentum: float = 0.6
    muon_normalize: bool = False
    # muon: the filters' peak lr instead of muon_lr where a time budget plans a short run
    # (budget.SHORT_RUN_STEPS steps or fewer); 0: muon_lr whatever the length
    muon_lr_short: float = 0.0
    # --- loss ---
    loss: str = "ce"  # ce | bce (Keras-style, on softmax probs) | mse (on softmax probs)
    label_smoothing: float = 0.1  # ce only: fraction of target mass spread over all classes
    # --- learning-rate schedule ---
    schedule: str = "onecycle"  # one of SCHEDULES
    warmup: float = 0.2  # onecycle/cosine: fraction of all steps spent warming up linearly
    milestones: list = field(default_factory=lambda: [100, 200])  # step: epochs where lr *= gamma
    gamma: float = 0.1  # step: multiplier at each milestone (0.01 -> 0.001 -> 0.0001)
    plateau_factor: float = 0.3  # plateau: lr *= factor when the monitor stalls (Keras ref: 0.3)
    plateau_patience: int = 4  # plateau: epochs without improvement before reducing (ref: 4)
    plateau_min_delta: float = 1e-4  # plateau: smaller changes do not count as improvement
    plateau_monitor: str = "val_loss"  # plateau: metric watched (falls back to train_* when val=0)
    min_lr: float = 0.0  # plateau: never reduce below this
    # --- weight averaging (fast recipe) ---
    average: str = "none"  # none | lookahead (weights reset to their running average)
    average_decay: float = 0.95  # per-step decay of the weight average, reached at the end of training
    average_every: int = 5  # optimizer steps between two averaging updates
    average_power: float = 3.0  # decay ramps as progress**power: almost no averaging early on
    # --- first-layer whitening init (models with a Whiten conv, e.g. airnet) ---
    whiten: bool = False  # set the Whiten conv from training patches, then freeze it (airbench)
    whiten_images: int = 5000  # training images (seeded random pick) whose patches give the covariance
    whiten_eps: float = 5e-4  # added to each eigenvalue (normalized-pixel^2): caps the gain of flat directions
    whiten_bias_epochs: int = 3  # epochs the whitening bias trains before it is frozen too
    # --- data ---
    data: str | None = None  # path to CIFAR-10; None: $CIFARLAB_DATA, then the cache
    val: int = 5000  # images carved (stratified) from train for model selection; 0 = none
    train_subset: int | None = None  # use only this many training images (quick runs)
    test_subset: int | None = None  # evaluate on only this many test images (quick runs)
    augment: str = "crop:4,flip"  # data-layer spec, e.g. "crop:4:reflect,flip,cutout:8", "none"
    # lower-resolution first epochs, "SIZE:EPOCHS,..." in pixels and epochs, e.g. "16:2,24:2":
    # two epochs at 16 px, two at 24 px, the rest as stored. A 16-px epoch costs about a
    # fifth of a 32-px one on a CPU and still teaches coarse shapes; "" = none
    resolutions: str = ""
    grayscale: int | None = None  # None: colour; 1 or 3: luminance with 1 or 3 channels
    # --- early stopping ---
    early_stop: bool = False  # stop when the monitor has not improved for `patience` epochs
    early_monitor: str = "val_loss"  # metric watched (falls back to train_* when val=0)
    early_patience: int = 10  # epochs (the reference notebook used 10)
    early_min_delta: float = 0.0  # smaller changes do not count as improvement
    early_mode: str = "auto"  # min | max | auto (max for *acc*, min otherwise)
    # --- model selection ---
    select_metric: str = "val_acc"  # best.pt is the epoch with the best value of this
    tta: str = "none"  # views averaged at the final test: none | flip | flip-translate (+-1 px)
    # --- hardware ---
    device: str = "auto"  # auto picks cuda, then mps, then cpu
    # bf16 autocast where the device runs bf16 natively: CUDA, CPUs with AVX512-BF16 or AMX
    # (ignored elsewhere: MPS, and CPUs that would emulate bf16, slower than float32)
    amp: bool = True
    # with amp, evaluation (val passes, the final test) in bf16 too; a CPU evaluates in float32
    # otherwise, so that a model's stated accuracy is the same on every CPU. bf16 makes a CPU
    # test faster at about the same accuracy (results/cpu_probes.csv)
    amp_eval: bool = False
    # NHWC memory format: oneDNN's CPU convolutions and recent GPUs' are faster in it
    channels_last: bool = True
    compile: bool = False  # torch.compile the model (minutes of warm-up; pays off on long runs)
    # --- divergence guard ---
    diverge_factor: float = 20.0  # stop when the loss exceeds this multiple of the first losses
    # --- output ---
    runs_dir: str = "runs"  # parent folder of run folders
    name: str | None = None  # run folder name; None: <model>-<YYYYmmdd-HHMMSS>
    tensorboard: bool = True  # write tb/ events when the tensorboard package is installed
    plots: bool = True  # curves.png and confusion.png when matplotlib is installed
    progress: bool = True  # live progress bar on the terminal
    recipe: str | None = None  # the preset these values started from: a record, nothing reads it to decide

    # ---------------------------------------------------------------- building
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: "TrainConfig | None" = None) -> "TrainConfig":
        """``base`` (or the defaults) with ``values`` applied, each one type-checked."""
        cfg = dataclasses.replace(base) if base is not None else cls()
        cfg.model_kwargs = dict(cfg.model_kwargs)
        cfg.milestones = list(cfg.milestones)
        return cfg.override(values)

    @classmethod
    def from_json(cls, path: str | Path, base: "TrainConfig | None" = None) -> "TrainConfig":
        try:
            values = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid JSON ({exc}); fix or remove it") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path} must hold a JSON object of field: value")
        return cls.from_dict(values, base)

    def override(self, values: dict[str, Any]) -> "TrainConfig":
        """Apply ``values`` in place after checking names and types; returns self."""
        hints = typing.get_type_hints(type(self))
        valid = self.field_names()
        for key, value in values.items():
            if key not in valid:
                raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(valid)}")
            setattr(self, key, _coerce(key, value, hints[key]))
        self.validate()
        return self

    def validate(self) -> None:
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("loss", self.loss, LOSSES)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("device", self.device, DEVICES)
        _choice("early_mode", self.early_mode, MODES)
        _choice("tta", self.tta, TTA_MODES)
        _choice("average", self.average, AVERAGE_MODES)
        _positive("epochs", self.epochs, allow_zero=True)
        _positive("last_epoch_steps", self.last_epoch_steps, allow_zero=True)
        _positive("batch_size", self.batch_size)
        _positive("time_budget", self.time_budget, allow_zero=True)
        _positive("lr", self.lr)
        _positive("bias_lr_scale", self.bias_lr_scale)
        _positive("muon_lr", self.muon_lr)
        _positive("muon_lr_short", self.muon_lr_short, allow_zero=True)
        if not 0 <= self.muon_momentum < 1:
            raise ConfigError(f"muon_momentum={self.muon_momentum} must be in [0, 1)")
        _positive("average_every", self.average_every)
        _positive("whiten_images", self.whiten_images)
        if not 0 <= self.average_decay <= 1:
            raise ConfigError(f"average_decay={self.average_decay} must be in [0, 1]")
        _positive("val", self.val, allow_zero=True)
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing={self.label_smoothing} must be in [0, 1)")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"warmup={self.warmup} must be a fraction in [0, 1)")
        from cifarlab.data.loader import parse_resolutions  # torch: only when a config is checked
        try:
            parse_resolutions(self.resolutions)
        except ValueError as exc:
            raise ConfigError(f"resolutions={self.resolutions!r}: {exc}") from None
        if self.grayscale not in (None, 1, 3):
            raise ConfigError(f"grayscale={self.grayscale} must be 1, 3 or null")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of: {', '.join(allowed)}")


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}={value} must be {'>= 0' if allow_zero else '> 0'}")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """``value`` converted to the field's type, or a ConfigError naming key and type."""
    optional = type(None) in typing.get_args(hint)
    base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional:
            return None
        raise ConfigError(f"{key} cannot be null")
    if isinstance(value, str) and base is not str:
        value = _parse_text(key, value)
    return _check_type(key, value, base)


def _parse_text(key: str, text: str) -> Any:
    """A command-line string read as JSON (numbers, true/false, lists, objects)."""
    lowered = {"true": "true", "false": "false", "yes": "true", "no": "false"}.get(text.lower(), text)
    try:
        return json.loads(lowered)
    except json.JSONDecodeError:
        if "," in text:  # "100,200" for milestones
            return [_parse_text(key, part) for part in text.split(",")]
        raise ConfigError(f"{key}={text!r} could not be read as a value") from None


def _check_type(key: str, value: Any, base: Any) -> Any:
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif base is str:
        if isinstance(value, str):
            return value
    elif base is list:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return [value]
        if isinstance(value, (list, tuple)):
            return list(value)
    elif base is dict:
        if isinstance(value, dict):
            return dict(value)
    name = getattr(base, "__name__", str(base))
    raise ConfigError(f"{key}={value!r} should be of type {name}")
