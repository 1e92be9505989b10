"""Optimizers by name, and learning-rate schedules as small state machines.

A schedule here is a pure function of (step, epoch) plus, for ``plateau``, a few
counters. Its whole state is a short dict, which keeps resumed runs bit-exact and lets a
resumed run change ``epochs`` (the remaining schedule is recomputed for the new length).
"""

from __future__ import annotations

import math

import torch

from cifarlab.engine.config import TrainConfig
from cifarlab.errors import ConfigError


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.optimizer`` with the config's lr, momentum and decay."""
    lr, wd, mom = cfg.lr, cfg.weight_decay, cfg.momentum
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=mom, nesterov=cfg.nesterov and mom > 0,
                               weight_decay=wd)
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
    """Learning rate as a function of training progress; steps per batch or per epoch."""

    per_batch = False  # True: ``lr_at_step`` is called before every batch

    def __init__(self, base_lr: float, total_steps: int, steps_per_epoch: int):
        self.base_lr = base_lr
        self.total_steps = max(1, total_steps)
        self.steps_per_epoch = max(1, steps_per_epoch)

    def lr_at_step(self, step: int) -> float:
        return self.base_lr

    def lr_at_epoch(self, epoch: int) -> float:
        """Learning rate for epoch ``epoch`` (0-based) of epoch-wise schedules."""
        return self.base_lr

    def observe(self, value: float, current_lr: float) -> float:
        """After an epoch, with the monitored metric; returns the next lr (plateau only)."""
        return current_lr

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Constant(Schedule):
    pass


class Step(Schedule):
    """lr * gamma**k after the k-th milestone epoch: 0.01 -> 0.001 -> 0.0001 at 100/200."""

    def __init__(self, base_lr, total_steps, steps_per_epoch, milestones, gamma):
        super().__init__(base_lr, total_steps, steps_per_epoch)
        self.milestones, self.gamma = sorted(int(m) for m in milestones), gamma

    def lr_at_epoch(self, epoch: int) -> float:
        passed = sum(1 for m in self.milestones if epoch >= m)
        return self.base_lr * self.gamma ** passed


class Cosine(Schedule):
    """Linear warm-up over ``warmup`` of the steps, then half a cosine down to zero."""

    per_batch = True

    def __init__(self, base_lr, total_steps, steps_per_epoch, warmup):
        super().__init__(base_lr, total_steps, steps_per_epoch)
        self.warm = int(warmup * self.total_steps)

    def lr_at_step(self, step: int) -> float:
        if step < self.warm:
            return self.base_lr * (step + 1) / self.warm
        t = (step - self.warm) / max(1, self.total_steps - self.warm)
        return self.base_lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


class OneCycle(Schedule):
    """Linear from lr/10 up to lr over ``warmup`` of the steps, then linear down to zero."""

    per_batch = True
    start_fraction = 0.1  # warm-up starts at lr/10: large enough to move, small enough to be stable

    def __init__(self, base_lr, total_steps, steps_per_epoch, warmup):
        super().__init__(base_lr, total_steps, steps_per_epoch)
        self.warm = int(warmup * self.total_steps)

    def lr_at_step(self, step: int) -> float:
        if step < self.warm:
            frac = self.start_fraction + (1 - self.start_fraction) * step / self.warm
            return self.base_lr * frac
        t = (step - self.warm) / max(1, self.total_steps - self.warm)
        return self.base_lr * max(0.0, 1.0 - t)


class Plateau(Schedule):
    """Keras ReduceLROnPlateau: lr *= factor after ``patience`` epochs without improvement."""

    def __init__(self, base_lr, total_steps, steps_per_epoch, factor, patience, min_delta,
                 mode, min_lr):
        super().__init__(base_lr, total_steps, steps_per_epoch)
        self.factor, self.patience, self.min_delta = factor, patience, min_delta
        self.mode, self.min_lr = mode, min_lr
        self.best: float | None = None
        self.wait = 0

    def observe(self, value: float, current_lr: float) -> float:
        if _improved(value, self.best, self.min_delta, self.mode):
            self.best, self.wait = value, 0
            return current_lr
        self.wait += 1
        if self.wait >= self.patience:
            self.wait = 0
            return max(current_lr * self.factor, self.min_lr)
        return current_lr

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.wait = state.get("best"), state.get("wait", 0)


def _improved(value: float, best: float | None, min_delta: float, mode: str) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def metric_mode(name: str, mode: str = "auto") -> str:
    """'max' for accuracies, 'min' for losses, unless given explicitly (Keras 'auto')."""
    if mode != "auto":
        return mode
    return "max" if "acc" in name else "min"


def build_schedule(cfg: TrainConfig, steps_per_epoch: int) -> Schedule:
    total = cfg.epochs * steps_per_epoch
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
        mode = metric_mode(cfg.plateau_monitor)
        return Plateau(*args, cfg.plateau_factor, cfg.plateau_patience, cfg.plateau_min_delta,
                       mode, cfg.min_lr)
    raise ConfigError(f"schedule={cfg.schedule!r} is not supported")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def get_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
