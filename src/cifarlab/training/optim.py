"""The optimizer with its parameter groups, and the learning rate of every step.

The lr path, whole: ``build_schedule(cfg)`` returns a schedule whose ``lr_at(step)`` is
the learning rate of optimizer step ``step``; before each batch the loop sets every param
group's lr to ``lr_at(step) * group["lr_scale"]`` (``Learner._set_lr``). ``lr_scale`` is 1
except for the BatchNorm-bias group of ``bias_lr_scale``. Only ``plateau`` has state (its
current lr, changed by ``observe`` after each epoch); the others are pure functions of the
step, which keeps resumed runs bit-exact and lets a resumed run change ``epochs``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cifarlab.training.callbacks import Patience, metric_mode, monitored
from cifarlab.training.config import TrainConfig
from cifarlab.errors import ConfigError


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """One group of every parameter, or two when ``bias_lr_scale`` != 1: BatchNorm biases get
    lr x scale and weight decay / scale, so lr x decay (the per-step shrinkage under SGD's
    coupled decay) stays that of the other weights -- airbench's bias group.

    With ``optimizer: muon`` the conv filters (4-d weights) get a group of their own that
    takes Muon steps at ``muon_lr`` (``lr_scale`` = muon_lr / lr, so the schedule shapes it
    like every other group). It comes last: a checkpoint's schedule lr is read from group 0.
    """
    params = list(model.parameters())
    muon: list[dict] = []
    if cfg.optimizer == "muon":
        filters = [p for p in params if p.ndim == 4]
        params = [p for p in params if p.ndim != 4]
        muon.append({"params": filters, "lr_scale": cfg.muon_lr / cfg.lr, "orthogonalize": True,
                     "momentum": cfg.muon_momentum, "normalize": cfg.muon_normalize,
                     "weight_decay": 0.0 if cfg.muon_normalize else cfg.weight_decay})
    scale = cfg.bias_lr_scale
    if scale == 1:
        return [{"params": params, "lr_scale": 1.0}] + muon
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    biases = {id(m.bias) for m in norms if m.bias is not None}
    return [{"params": [p for p in params if id(p) not in biases], "lr_scale": 1.0},
            {"params": [p for p in params if id(p) in biases], "lr_scale": scale,
             "weight_decay": cfg.weight_decay / scale}] + muon


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.optimizer`` over ``param_groups(model, cfg)``."""
    params, lr, wd, mom = param_groups(model, cfg), cfg.lr, cfg.weight_decay, cfg.momentum
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=mom, nesterov=cfg.nesterov and mom > 0,
                               weight_decay=wd)
    if cfg.optimizer == "muon":
        from cifarlab.inference.hardware import bf16_in_use
        from cifarlab.training.muon import Muon
        # Newton-Schulz in bf16 where training runs in it (amp on a bf16-native device): the
        # iterations take a fraction of their float32 time there
        device = next(model.parameters()).device
        ns_dtype = torch.bfloat16 if bf16_in_use(cfg.amp, device) else torch.float32
        return Muon(params, lr=lr, momentum=mom, nesterov=cfg.nesterov, weight_decay=wd, ns_dtype=ns_dtype)
    if cfg.optimizer == "adam":  # Keras defaults: betas (0.9, 0.999); eps 1e-7 in Keras, 1e-8 here
        return torch.optim.Adam(params, lr=lr, betas=(mom, 0.999), weight_decay=wd)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(mom, 0.999), weight_decay=wd)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, weight_decay=wd)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=wd)
    raise ConfigError(f"optimizer={cfg.optimizer!r} is not supported")


class Schedule:
    """The learning rate of each optimizer step (0-based, counted over all epochs).

    A time budget may re-plan a run's length mid-way (``retarget``, training/budget.py). The
    schedule then keeps its shape: from that step on, the steps now left map linearly onto
    what was left of the schedule first planned (``anchor``: the step, the planned step it
    maps to, and the new total), so the lr stays continuous and still ends where the
    planned schedule ends (zero, for the decaying ones). Subclasses give ``lr_of`` a planned
    step (a float after a re-plan) and derive their own steps (the warm-up) in ``_plan``.
    """

    def __init__(self, base_lr: float, total_steps: int, steps_per_epoch: int):
        self.base_lr = base_lr
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.anchor: tuple[int, float, int] | None = None
        self._plan(max(1, total_steps))

    def _plan(self, total_steps: int) -> None:
        self.total_steps = total_steps

    def lr_at(self, step: int) -> float:
        return self.lr_of(self.planned_step(step))

    def lr_of(self, step: float) -> float:
        return self.base_lr

    def planned_step(self, step: int) -> float:
        """The step of the schedule first planned that ``step`` stands for (itself, unless a
        re-plan at or before it mapped the rest)."""
        if self.anchor is None or step < self.anchor[0]:
            return step
        at, planned, total = self.anchor
        return planned + (self.total_steps - planned) * (step - at) / max(1, total - at)

    def retarget(self, total_steps: int, at_step: int) -> None:
        """The run now ends after ``total_steps`` steps; ``at_step`` is the next step to train."""
        self.anchor = (at_step, float(self.planned_step(at_step)), max(at_step, total_steps))  # total == at_step: none left

    def observe(self, metrics: dict) -> None:
        """After each epoch, with its metrics (plateau only: may lower the lr)."""

    def state_dict(self) -> dict:
        if self.anchor is None:
            return {}
        return {"planned_total": self.total_steps, "anchor": list(self.anchor)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("anchor") is not None:  # built from the re-planned epochs: back to the first plan
            self._plan(int(state["planned_total"]))
            at, planned, total = state["anchor"]
            self.anchor = (int(at), float(planned), int(total))


class Constant(Schedule):
    pass


class Step(Schedule):
    """lr * gamma**k after the k-th milestone epoch: 0.01 -> 0.001 -> 0.0001 at 100/200."""

    def __init__(self, base_lr, total_steps, steps_per_epoch, milestones, gamma):
        super().__init__(base_lr, total_steps, steps_per_epoch)
        self.milestones, self.gamma = sorted(int(m) for m in milestones), gamma

    def lr_of(self, step: float) -> float:
        epoch = step // self.steps_per_epoch
        passed = sum(1 for m in self.milestones if epoch >= m)
        return self.base_lr * self.gamma ** passed


class _WarmUp(Schedule):
    """A schedule whose first ``warmup`` share of the steps (``self.warm`` of them) warms up."""

    def __init__(self, base_lr, total_steps, steps_per_epoch, warmup):
        self.warmup = warmup
        super().__init__(base_lr, total_steps, steps_per_epoch)

    def _plan(self, total_steps: int) -> None:
        super()._plan(total_steps)
        self.warm = int(self.warmup * self.total_steps)


class Cosine(_WarmUp):
    """Linear warm-up over ``warmup`` of the steps, then half a cosine down to zero."""

    def lr_of(self, step: float) -> float:
        if step < self.warm:
            return self.base_lr * (step + 1) / self.warm
        t = (step - self.warm) / max(1, self.total_steps - self.warm)
        return self.base_lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


class OneCycle(_WarmUp):
    """Linear from lr/10 up to lr over ``warmup`` of the steps, then linear down to zero."""

    start_fraction = 0.1  # warm-up starts at lr/10: large enough to move, small enough to be stable

    def lr_of(self, step: float) -> float:
        if step < self.warm:
            frac = self.start_fraction + (1 - self.start_fraction) * step / self.warm
            return self.base_lr * frac
        t = (step - self.warm) / max(1, self.total_steps - self.warm)
        return self.base_lr * max(0.0, 1.0 - t)


class Plateau(Schedule):
    """Keras ReduceLROnPlateau: lr *= factor after ``patience`` epochs without improvement
    of ``monitor`` (val_* falls back to train_* when there is no validation split)."""

    def __init__(self, base_lr, total_steps, steps_per_epoch, factor, patience, min_delta,
                 monitor, min_lr):
        super().__init__(base_lr, total_steps, steps_per_epoch)
        self.factor, self.monitor, self.min_lr = factor, monitor, min_lr
        self.count = Patience(patience, metric_mode(monitor), min_delta)
        self.lr = base_lr  # the current lr: the state a resumed run needs

    def lr_of(self, step: float) -> float:
        return self.lr

    def observe(self, metrics: dict) -> None:
        _, value = monitored(metrics, self.monitor)
        if value is not None and self.count.ran_out(value):
            self.count.wait = 0
            self.lr = max(self.lr * self.factor, self.min_lr)

    def state_dict(self) -> dict:
        return {**super().state_dict(), **self.count.state_dict(), "lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.count.load_state_dict(state)
        self.lr = state.get("lr", self.lr)


def planned_steps(epochs: int, steps_per_epoch: int, last_epoch_steps: int = 0) -> int:
    """Optimizer steps in ``epochs`` epochs, the last of them cut to ``last_epoch_steps`` (0: whole)."""
    if epochs <= 0:
        return 0
    last = min(last_epoch_steps, steps_per_epoch) if last_epoch_steps > 0 else steps_per_epoch
    return (epochs - 1) * steps_per_epoch + last


def build_schedule(cfg: TrainConfig, steps_per_epoch: int) -> Schedule:
    total = planned_steps(cfg.epochs, steps_per_epoch, cfg.last_epoch_steps)
    args = (cfg.lr, total, steps_per_epoch)
    if cfg.schedule == "constant":
        return Constant(*args)
    if cfg.schedule == "step":
        return Step(*args, cfg.milestones, cfg.gamma)
    if cfg.schedule == "cosine":
        return Cosine(*args, cfg.warmup)
    if cfg.schedule == "onecycle":
        return OneCycle(*args, cfg.warmup)
    if cfg.schedule == "plateau":
        return Plateau(*args, cfg.plateau_factor, cfg.plateau_patience, cfg.plateau_min_delta,
                       cfg.plateau_monitor, cfg.min_lr)
    raise ConfigError(f"schedule={cfg.schedule!r} is not supported")
