"""The one training loop. Everything optional is a callback on its events.

Events, in order: ``before_fit``; per epoch ``before_epoch``, per batch ``before_batch``,
``after_backward``, ``after_batch``; then ``before_validate``, ``after_validate``,
``after_epoch``; finally ``after_fit``. A callback reads and writes the ``Learner``
(model, optimizer, loss, metrics, stop flag); the loop itself knows nothing of logging,
checkpoints or guards. It does own the learning rate (two lines in ``_set_lr``, nanoGPT's
way): before each batch every param group gets ``schedule.lr_at(step)`` times its
``lr_scale``, and after each epoch the schedule sees the metrics (plateau acts on them).

Extension points for later callbacks: ``before_validate``/``after_validate`` bracket every
evaluation (an EMA callback swaps its averaged weights in and out there); ``before_fit``
with ``learn.resumed`` False is the place for data-dependent init (e.g. whitening the first
conv from ``learn.train_loader``); ``learn.is_main`` is False on DDP ranks > 0, where
callbacks marked ``main_only`` (checkpoints, logs, plots) are skipped.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable, Iterable

import torch
from torch import nn

from cifarlab.training.callbacks import Callback
from cifarlab.training.distributed import Dist
from cifarlab.inference.hardware import bf16_in_use
from cifarlab.training.metrics import Accumulator
from cifarlab.training.optim import Schedule, planned_steps

# every event the loop fires, in the order of a run; after_fit_failed replaces after_fit when
# the fit raises (Ctrl-C included), after_report comes once summary.json is written
EVENTS = ("before_fit", "before_epoch", "before_batch", "after_backward", "after_batch",
          "before_validate", "after_validate", "after_epoch", "after_fit", "after_fit_failed",
          "after_report")


def autocast(device: torch.device, enabled: bool, training: bool = True, amp_eval: bool = False):
    """bf16 autocast (no loss scaling needed) where the device runs bf16 natively; else a no-op.

    Native: CUDA GPUs with bf16, CPUs with AVX512-BF16 or AMX (``hardware.bf16_native``).
    Evaluation on a CPU stays float32 (``training=False``) unless ``amp_eval``: a few seconds
    of a run, and the accuracy a model states is then the same on every CPU, with or without
    bf16 units.
    """
    if bf16_in_use(enabled, device) and (training or amp_eval or device.type != "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def run_eval(model: nn.Module, batches: Iterable, loss_fn: Callable | None, device: torch.device,
             amp: bool = False, keep_predictions: bool = False,
             views: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
             amp_eval: bool = False) -> Accumulator:
    """Loss and accuracies of ``model`` over ``batches`` (eval mode; logits averaged over views;
    bf16 on a CPU only with ``amp_eval``, see ``autocast``)."""
    was_training = model.training
    model.eval()
    acc = Accumulator(keep_predictions)
    for x, y in batches:
        with autocast(device, amp, training=False, amp_eval=amp_eval):
            xs = views(x) if views else [x]
            logits = torch.stack([model(v).float() for v in xs]).mean(0)
        loss = float(loss_fn(logits, y)) if loss_fn else None
        acc.update(logits, y, loss)
    model.train(was_training)
    return acc


class EpochTotals:
    """Per-epoch training sums kept on the device, read back once per epoch.

    Every read of a GPU value (``float(loss)``, ``int(correct)``) makes the CPU wait for the
    whole queue of GPU work; at ~3 ms a step, four such waits a batch cost more than the
    step. Sums are float64 (float32 on MPS, which has no float64): the same numbers as
    Python floats on the CPU. ``n`` and ``entries`` are shapes, known without a read.
    """

    def __init__(self, device: torch.device, binary: bool = False):
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.sums = torch.zeros(4, dtype=dtype, device=device)  # loss*n, top-1, top-5, binary hits
        self.n = self.entries = 0
        self.binary = binary

    def update(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        logits = logits.detach().float()
        b = len(y)
        self.n += b
        self.entries += logits.numel()
        parts = [loss.detach().to(self.sums.dtype) * b, _hits(logits, y, 1), _hits(logits, y, 5),
                 _binary_hits(logits, y) if self.binary else torch.zeros((), device=logits.device)]
        self.sums += torch.stack([p.to(self.sums.dtype) for p in parts])

    def read(self, dist: Dist | None = None) -> dict[str, float]:
        """The running sums on the host (one device read); summed over ranks when ``dist``."""
        counts = torch.tensor([self.n, self.entries], dtype=self.sums.dtype, device=self.sums.device)
        total = torch.cat([self.sums, counts])
        if dist is not None:
            dist.all_reduce_sum(total)
        loss, c1, c5, binary, n, entries = total.tolist()
        return {"loss_sum": loss, "correct1": c1, "correct5": c5, "binary": binary, "n": n, "entries": entries}

    def summary(self, prefix: str, dist: Dist | None = None) -> dict[str, float]:
        t = self.read(dist)
        n = max(t["n"], 1)
        out = {f"{prefix}loss": t["loss_sum"] / n, f"{prefix}acc": t["correct1"] / n}
        if self.binary:
            out[f"{prefix}binary_acc"] = t["binary"] / max(t["entries"], 1)
        return out


def _hits(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """metrics.topk_correct without the read back to the host."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == y[:, None]).any(dim=1).sum()


def _binary_hits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """metrics.binary_correct without the read back to the host."""
    predicted = torch.softmax(logits, dim=1) >= 0.5
    return (predicted == torch.nn.functional.one_hot(y, logits.shape[1]).bool()).sum()


def reduce_accumulator(acc: Accumulator, dist: Dist) -> Accumulator:
    """An evaluation Accumulator's counts summed over ranks (each rank saw its shard)."""
    if not dist.active:
        return acc
    total = torch.tensor([acc.n, acc.loss_sum, acc.correct1, acc.correct5, acc.binary, acc.entries],
                         dtype=torch.float64)
    if dist.backend == "nccl":
        total = total.cuda()
    n, acc.loss_sum, c1, c5, b, e = dist.all_reduce_sum(total).tolist()
    acc.n, acc.correct1, acc.correct5, acc.binary, acc.entries = int(n), int(c1), int(c5), int(b), int(e)
    return acc


class Learner:
    """Holds what a fit needs and runs it; callbacks do the rest."""

    def __init__(self, model: nn.Module, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                 schedule: Schedule, train_loader, val_loader, epochs: int, device: torch.device,
                 callbacks: Iterable[Callback] = (), amp: bool = False, binary: bool = False,
                 meta: dict | None = None, dist: Dist | None = None, amp_eval: bool = False,
                 last_epoch_steps: int = 0):
        self.model, self.loss_fn, self.optimizer, self.schedule = model, loss_fn, optimizer, schedule
        self.train_loader, self.val_loader = train_loader, val_loader
        self.epochs, self.device, self.amp, self.binary = epochs, device, amp, binary
        self.last_epoch_steps = last_epoch_steps  # the last epoch stops after this many steps (0: whole)
        self.amp_eval = amp_eval  # val passes in bf16 too (``autocast``)
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
        self.run_dir = None  # the run folder (set by training.api), for callbacks that record the run
        self.plan = None  # the run's training.plan.Plan (set by training.api)
        self.lr = 0.0  # the lr of the current step (of param groups with lr_scale 1): set by _set_lr
        self.dist = dist or Dist()  # rank and world size; all_reduce for global metrics
        self.is_main = self.dist.is_main  # False on DDP ranks > 0: callbacks with main_only are skipped
        self.totals: EpochTotals | None = None  # this epoch's running sums (read with .read())
        # relative compute of each epoch (e.g. (side/32)^2 under a resolution schedule);
        # None: all equal. Only estimates of the time left read it.
        self.epoch_costs: list[float] | None = None
        self.x = self.y = self.logits = None
        for cb in callbacks:
            self.add_callback(cb)

    def steps_in_epoch(self, epoch: int) -> int:
        """Optimizer steps epoch ``epoch`` (0-based) trains: the loader's batches, fewer in a cut last epoch."""
        if epoch == self.epochs - 1 and self.last_epoch_steps > 0:
            return min(self.last_epoch_steps, len(self.train_loader))
        return len(self.train_loader)

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole fit as now planned."""
        return planned_steps(self.epochs, len(self.train_loader), self.last_epoch_steps)

    def work_done(self, batches_into_epoch: int = 0) -> tuple[float, float]:
        """(work done, total work) of the whole fit, in units of one full-cost epoch."""
        costs = self.epoch_costs or [1.0] * self.epochs
        costs = costs + [costs[-1] if costs else 1.0] * (self.epochs - len(costs))
        per_batch = 1 / max(1, len(self.train_loader))
        costs = [c * self.steps_in_epoch(e) * per_batch for e, c in enumerate(costs[:self.epochs])]
        done = sum(costs[:self.epoch])
        if self.epoch < self.epochs and self.steps_in_epoch(self.epoch):
            done += costs[self.epoch] * batches_into_epoch / self.steps_in_epoch(self.epoch)
        return done, sum(costs)

    # ------------------------------------------------------------ callbacks
    def add_callback(self, cb: Callback) -> None:
        self.callbacks.append(cb)
        self.callbacks.sort(key=lambda c: c.order)

    def callback(self, kind: type) -> Callback | None:
        return next((c for c in self.callbacks if isinstance(c, kind)), None)

    def event(self, name: str) -> None:
        if name not in EVENTS:  # a misspelt event would otherwise reach no callback, silently
            raise ValueError(f"unknown event {name!r}; the loop's events are {EVENTS}")
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
            if not self.resumed:  # a data-dependent init (whitening) saw only this rank's shard
                self.dist.broadcast_module(_plain(self.model))
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
        self.totals = train = EpochTotals(self.device, self.binary)
        self.event("before_epoch")
        start = time.perf_counter()
        # the epoch's length is read after every step: a time budget may move the last one's end
        # while it runs (training/budget.py: BudgetKeeper.after_batch)
        for self.batch_idx, (self.x, self.y) in enumerate(self.train_loader):
            self._set_lr()
            self.event("before_batch")
            self._train_step()
            train.update(self.logits, self.y, self.loss)  # stays on the device: no wait here
            self.step += 1
            self.event("after_batch")
            if self.batch_idx + 1 >= self.steps_in_epoch(self.epoch):
                break
        self._sync()
        train_time = time.perf_counter() - start
        self.metrics = self._epoch_metrics(train, train_time)
        self.event("before_validate")
        self.metrics.update(self.validate())
        self.event("after_validate")
        self.metrics["epoch_time"] = time.perf_counter() - start
        self.history.append(self.metrics)
        self.epoch += 1
        self.schedule.observe(self.metrics)  # before after_epoch: the checkpoint holds the new lr
        self.event("after_epoch")

    def _set_lr(self) -> None:
        self.lr = self.schedule.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * group["lr_scale"]

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step on the batch ``(x, y)`` outside a fit (training.budget times these);
        returns the detached loss."""
        self.x, self.y = x, y
        self._train_step()
        return self.loss

    def _train_step(self) -> None:
        with autocast(self.device, self.amp):
            self.logits = self.model(self.x)
            self.loss = self.loss_fn(self.logits, self.y)
        self.optimizer.zero_grad(set_to_none=True)
        self.loss.backward()
        self.event("after_backward")
        self.optimizer.step()
        self.loss = self.loss.detach()

    def _epoch_metrics(self, train: EpochTotals, seconds: float) -> dict:
        m = {"epoch": self.epoch + 1, **train.summary("train_", self.dist)}
        m["lr"] = self.lr
        m["train_time"] = seconds
        m["images_per_s"] = train.n * self.dist.world_size / max(seconds, 1e-9)
        if hasattr(os, "getloadavg"):  # the machine's load as the epoch ended: a timing taken under load says so
            m["load_1m"] = round(os.getloadavg()[0], 2)
        return m

    def validate(self) -> dict:
        """val_loss / val_acc (and val_binary_acc) on the validation loader; {} when there is none.

        Under DDP each rank scores its shard with rank 0's BN statistics and the counts are
        summed, so every rank gets the numbers one process would.
        """
        if self.val_loader is None:
            return {}
        model = self.model
        if self.dist.active:  # the plain module: a rank with no val batch must not miss a DDP collective
            model = _plain(self.model)
            self.dist.broadcast_module(model, params=False)  # DDP keeps the weights equal already
        elif len(self.val_loader) == 0:
            return {}
        acc = run_eval(model, self.val_loader, self.loss_fn, self.device, self.amp, amp_eval=self.amp_eval)
        acc = reduce_accumulator(acc, self.dist)
        return acc.summary("val_", self.binary) if acc.n else {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _plain(model: nn.Module) -> nn.Module:
    from cifarlab.inference.checkpoint import unwrap
    return unwrap(model)
