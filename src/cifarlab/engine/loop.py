"""The one training loop. Everything optional is a callback on its events.

Events, in order: ``before_fit``; per epoch ``before_epoch``, per batch ``before_batch``,
``after_backward``, ``after_batch``; then ``before_validate``, ``after_validate``,
``after_epoch``; finally ``after_fit``. A callback reads and writes the ``Learner``
(model, optimizer, loss, metrics, stop flag); the loop itself knows nothing of logging,
checkpoints, schedules or guards.

Extension points for later callbacks: ``before_validate``/``after_validate`` bracket every
evaluation (an EMA callback swaps its averaged weights in and out there); ``before_fit``
with ``learn.resumed`` False is the place for data-dependent init (e.g. whitening the first
conv from ``learn.train_loader``); ``learn.is_main`` is False on DDP ranks > 0, where
callbacks marked ``main_only`` (checkpoints, logs, plots) are skipped.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterable

import torch
from torch import nn

from cifarlab.engine.callbacks import Callback
from cifarlab.engine.metrics import Accumulator
from cifarlab.engine.optim import Schedule, get_lr

EVENTS = ("before_fit", "before_epoch", "before_batch", "after_backward", "after_batch",
          "before_validate", "after_validate", "after_epoch", "after_fit")


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA (no loss scaling needed); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def run_eval(model: nn.Module, batches: Iterable, loss_fn: Callable | None, device: torch.device,
             amp: bool = False, keep_predictions: bool = False,
             views: Callable[[torch.Tensor], list[torch.Tensor]] | None = None) -> Accumulator:
    """Loss and accuracies of ``model`` over ``batches`` (eval mode; logits averaged over views)."""
    was_training = model.training
    model.eval()
    acc = Accumulator(keep_predictions)
    for x, y in batches:
        with autocast(device, amp):
            xs = views(x) if views else [x]
            logits = torch.stack([model(v).float() for v in xs]).mean(0)
        loss = float(loss_fn(logits, y)) if loss_fn else None
        acc.update(logits, y, loss)
    model.train(was_training)
    return acc


class Learner:
    """Holds what a fit needs and runs it; callbacks do the rest."""

    def __init__(self, model: nn.Module, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                 schedule: Schedule, train_loader, val_loader, epochs: int, device: torch.device,
                 callbacks: Iterable[Callback] = (), amp: bool = False, binary: bool = False,
                 meta: dict | None = None):
        self.model, self.loss_fn, self.optimizer, self.schedule = model, loss_fn, optimizer, schedule
        self.train_loader, self.val_loader = train_loader, val_loader
        self.epochs, self.device, self.amp, self.binary = epochs, device, amp, binary
        self.meta: dict[str, Any] = meta or {}  # checkpoint description: model, classes, config...
        self.callbacks: list[Callback] = []
        self.epoch = 0  # epochs completed so far
        self.step = 0  # optimizer steps completed so far (over all epochs)
        self.batch_idx = 0  # index of the current batch within its epoch
        self.history: list[dict] = []  # one metrics dict per completed epoch
        self.metrics: dict = {}  # the latest epoch's metrics (available in after_epoch)
        self.loss: torch.Tensor | None = None  # the latest batch loss (available in after_batch)
        self.stop = False  # a callback sets this to end the fit after the current epoch
        self.stop_reason = ""
        self.resumed = False  # True when the state came from a checkpoint
        self.is_main = True  # False on DDP ranks > 0: callbacks with main_only are skipped
        self.x = self.y = self.logits = None
        for cb in callbacks:
            self.add_callback(cb)

    # ------------------------------------------------------------ callbacks
    def add_callback(self, cb: Callback) -> None:
        self.callbacks.append(cb)
        self.callbacks.sort(key=lambda c: c.order)

    def callback(self, kind: type) -> Callback | None:
        return next((c for c in self.callbacks if isinstance(c, kind)), None)

    def event(self, name: str) -> None:
        for cb in self.callbacks:
            if cb.main_only and not self.is_main:
                continue
            getattr(cb, name)(self)

    def callback_states(self) -> dict:
        return {cb.state_key(): cb.state_dict() for cb in self.callbacks if cb.state_dict()}

    def load_callback_states(self, states: dict) -> None:
        for cb in self.callbacks:
            if cb.state_key() in states:
                cb.load_state_dict(states[cb.state_key()])

    # ------------------------------------------------------------ the loop
    def fit(self) -> None:
        try:
            self.event("before_fit")
            while self.epoch < self.epochs and not self.stop:
                self._one_epoch()
        except BaseException as exc:  # Ctrl-C too: recorders must learn how the fit ended
            self.error = exc
            self.event("after_fit_failed")
            raise
        self.event("after_fit")

    def _one_epoch(self) -> None:
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(self.epoch)
        self.model.train()
        train = Accumulator()
        self.event("before_epoch")
        start = time.perf_counter()
        for self.batch_idx, (self.x, self.y) in enumerate(self.train_loader):
            self.event("before_batch")
            self._train_step()
            train.update(self.logits, self.y, None)
            train.loss_sum += float(self.loss) * len(self.y)
            self.step += 1
            self.event("after_batch")
        self._sync()
        train_time = time.perf_counter() - start
        self.metrics = self._epoch_metrics(train, train_time)
        self.event("before_validate")
        self.metrics.update(self.validate())
        self.event("after_validate")
        self.metrics["epoch_time"] = time.perf_counter() - start
        self.history.append(self.metrics)
        self.epoch += 1
        self.event("after_epoch")

    def _train_step(self) -> None:
        with autocast(self.device, self.amp):
            self.logits = self.model(self.x)
            self.loss = self.loss_fn(self.logits, self.y)
        self.optimizer.zero_grad(set_to_none=True)
        self.loss.backward()
        self.event("after_backward")
        self.optimizer.step()
        self.loss = self.loss.detach()

    def _epoch_metrics(self, train: Accumulator, seconds: float) -> dict:
        m = {"epoch": self.epoch + 1, **train.summary("train_", self.binary)}
        m["lr"] = get_lr(self.optimizer)
        m["train_time"] = seconds
        m["images_per_s"] = train.n / max(seconds, 1e-9)
        return m

    def validate(self) -> dict:
        """val_loss / val_acc (and val_binary_acc) on the validation loader; {} when there is none."""
        if self.val_loader is None or len(self.val_loader) == 0:
            return {}
        acc = run_eval(self.model, self.val_loader, self.loss_fn, self.device, self.amp)
        return acc.summary("val_", self.binary)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
