"""Small behaviours hooked on the loop's events (fastai-style).

Write one by subclassing ``Callback`` and overriding the events you need; each receives
the ``Learner``. ``order`` sorts callbacks (lower runs first on every event);
``main_only`` callbacks are skipped on DDP ranks other than 0 (they write files);
``state_dict``/``load_state_dict`` let a callback's counters survive ``--resume``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from cifarlab.atomic import atomic_write_text, write_advice
from cifarlab.errors import TrainingDiverged

# order bands: first what changes the model a batch trains (whitening init), then guards,
# then the callbacks that decide (early stopping), then the ones that record (checkpoint, logs).
ORDER_SCHEDULE, ORDER_GUARD, ORDER_DECIDE, ORDER_SAVE, ORDER_LOG, ORDER_SHOW = 10, 20, 30, 40, 50, 60


class Callback:
    order = 50
    main_only = False

    def before_fit(self, learn) -> None: ...
    def before_epoch(self, learn) -> None: ...
    def before_batch(self, learn) -> None: ...
    def after_backward(self, learn) -> None: ...
    def after_batch(self, learn) -> None: ...
    def before_validate(self, learn) -> None: ...
    def after_validate(self, learn) -> None: ...
    def after_epoch(self, learn) -> None: ...
    def after_fit(self, learn) -> None: ...
    def after_fit_failed(self, learn) -> None: ...  # learn.error: the exception (Ctrl-C included)
    def after_report(self, learn) -> None: ...  # learn.summary: summary.json, test metrics included
    # before the learner exists: a new run's folder was just made, its config.json comes next (main process)
    def run_folder_made(self, run_dir, config: dict) -> None: ...

    def state_key(self) -> str:
        return type(self).__name__

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def monitored(metrics: dict, name: str) -> tuple[str, float | None]:
    """The value of metric ``name`` in an epoch's ``metrics``, falling back from val_* to
    train_* without a validation split."""
    m = metrics
    if name not in m and name.startswith("val_"):
        name = "train_" + name[4:]
    return name, m.get(name)


def metric_mode(name: str, mode: str = "auto") -> str:
    """'max' for accuracies, 'min' for losses, unless given explicitly (Keras 'auto')."""
    if mode != "auto":
        return mode
    return "max" if "acc" in name else "min"


# ---------------------------------------------------------------- resolution
class ProgressiveResize(Callback):
    """Trains the first epochs on downscaled batches (``resolutions``: "16:2,24:2"), then at
    the stored size. Evaluation always sees the stored size; the networks that use it end in
    a global pool, so they take any input size."""

    order = ORDER_SCHEDULE

    def __init__(self, spec: str):
        from cifarlab.data.loader import parse_resolutions
        self.stages = parse_resolutions(spec)

    def size_at(self, epoch: int) -> int | None:
        from cifarlab.data.loader import size_at_epoch
        return size_at_epoch(self.stages, epoch)

    def costs(self, epochs: int, native: int) -> list[float]:
        """Each epoch's compute relative to one at the stored size (pixels per image)."""
        return [((self.size_at(e) or native) / native) ** 2 for e in range(epochs)]

    def before_fit(self, learn) -> None:
        learn.epoch_costs = self.costs(learn.epochs, learn.train_loader.images.shape[-1])

    def before_epoch(self, learn) -> None:
        learn.train_loader.size = self.size_at(learn.epoch)

    def after_fit(self, learn) -> None:
        learn.train_loader.size = None


# ---------------------------------------------------------------- guards
class DivergenceGuard(Callback):
    """Stops with one line when the loss is non-finite or ``factor`` x its starting value."""

    order = ORDER_GUARD

    def __init__(self, factor: float = 20.0, warm_batches: int = 1, optimizer: str = "", check_every: int = 1):
        self.factor, self.warm, self.optimizer_name = factor, warm_batches, optimizer
        self.check_every = check_every
        self.initial: list[float] = []

    def after_batch(self, learn) -> None:
        if learn.step % self.check_every and learn.batch_idx != learn.steps_in_epoch(learn.epoch) - 1:
            return
        value = float(learn.loss)
        if len(self.initial) < self.warm and math.isfinite(value):
            self.initial.append(value)
        start = sum(self.initial) / len(self.initial) if self.initial else None
        if not math.isfinite(value):
            self._fail(learn, f"loss became {value}")
        if start is not None and len(self.initial) >= self.warm and value > self.factor * start:
            self._fail(learn, f"loss exploded to {value:.4g} ({value / start:.3g}x its start {start:.3g})")

    def _fail(self, learn, what: str) -> None:
        lr = learn.lr
        opt = self.optimizer_name or type(learn.optimizer).__name__.lower()
        raise TrainingDiverged(
            f"{what} at epoch {learn.epoch + 1} step {learn.batch_idx + 1} — the learning rate "
            f"{lr:g} is probably too high for {opt}; try --lr {lr / 10:g}")

    def state_dict(self) -> dict:
        return {"initial": list(self.initial)}

    def load_state_dict(self, state: dict) -> None:
        self.initial = list(state.get("initial", []))


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` improves on ``best`` (None: nothing yet) by more than ``min_delta``,
    ``mode`` "min" or "max": the one test behind early stopping, best.pt and the plateau lr."""
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class Patience:
    """The best value of a metric so far and the epochs since it last improved by more than
    ``min_delta``: what early stopping and the plateau lr count (best.pt needs ``improved`` only)."""

    def __init__(self, patience: int, mode: str, min_delta: float = 0.0):
        self.patience, self.mode, self.min_delta = patience, mode, abs(min_delta)
        self.best: float | None = None
        self.wait = 0

    def ran_out(self, value: float) -> bool:
        """Count this epoch's ``value``; True when ``patience`` epochs in a row did not improve."""
        if improved(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        return self.wait >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.wait = state.get("best"), state.get("wait", 0)


class EarlyStopping(Callback):
    """Keras EarlyStopping: stop after ``patience`` epochs without an improvement > min_delta."""

    order = ORDER_DECIDE

    def __init__(self, monitor: str = "val_loss", patience: int = 10, min_delta: float = 0.0,
                 mode: str = "auto"):
        self.monitor = monitor
        self.count = Patience(patience, metric_mode(monitor, mode), min_delta)

    def after_epoch(self, learn) -> None:
        name, value = monitored(learn.metrics, self.monitor)
        if value is not None and self.count.ran_out(value):
            learn.stop = True
            learn.stop_reason = (f"early stopping: {name} did not improve for {self.count.patience} "
                                 f"epochs (best {self.count.best:.4f})")

    def state_dict(self) -> dict:
        return self.count.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.count.load_state_dict(state)


# ---------------------------------------------------------------- saving
class Checkpointer(Callback):
    """best.pt on the selection metric (validation, never test) and last.pt every epoch."""

    order = ORDER_SAVE
    main_only = True

    def __init__(self, run_dir: str | Path, monitor: str = "val_acc", mode: str = "auto"):
        self.run_dir, self.monitor = Path(run_dir), monitor
        self.mode = metric_mode(monitor, mode)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.used = monitor  # the metric really used (train_* when there is no val set)

    def after_epoch(self, learn) -> None:
        from cifarlab.inference.checkpoint import build_checkpoint, save_checkpoint
        name, value = monitored(learn.metrics, self.monitor)
        no_val = not name.startswith("val_")
        better = value is not None and improved(value, self.best, self.mode)
        if no_val or better:  # without validation data the last epoch is the one kept
            self.best, self.best_epoch, self.used = value, learn.epoch, name if not no_val else "last epoch"
        ckpt = build_checkpoint(learn)  # carries this callback's new state
        with write_advice(f"free some space, then resume with: cifarlab train --resume {self.run_dir}"):
            if self.best_epoch == learn.epoch:
                save_checkpoint(ckpt, self.run_dir / "best.pt")
            save_checkpoint(ckpt, self.run_dir / "last.pt")

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "used": self.used}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
        self.used = state.get("used", self.monitor)


class MetricsLogger(Callback):
    """metrics.csv and metrics.jsonl, one row per epoch, rewritten from history on resume."""

    order = ORDER_LOG
    main_only = True
    first_columns = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                     "epoch_time", "images_per_s"]

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def before_fit(self, learn) -> None:
        self._write(learn.history)  # drops rows of an epoch the checkpoint did not keep

    def after_epoch(self, learn) -> None:
        self._write(learn.history)

    def _write(self, rows: list[dict]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cols = self._columns(rows)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.run_dir / "metrics.csv", buf.getvalue())
        atomic_write_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def _columns(self, rows: list[dict]) -> list[str]:
        keys = [k for r in rows for k in r]
        cols = [c for c in self.first_columns if c in keys or c.startswith(("train", "epoch", "lr"))]
        return cols + sorted(set(keys) - set(cols))


class TensorBoardLogger(Callback):
    """Scalars under run_dir/tb when the tensorboard package is importable; else nothing."""

    order = ORDER_LOG
    main_only = True

    def __init__(self, run_dir: str | Path, every: int = 50):
        self.log_dir, self.every, self.writer = Path(run_dir) / "tb", every, None

    def before_fit(self, learn) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional: pip install 'cifarlab[tensorboard]'
            return
        self.writer = SummaryWriter(str(self.log_dir), purge_step=learn.step or None)

    def after_batch(self, learn) -> None:
        if self.writer is not None and learn.step % self.every == 0:
            self.writer.add_scalar("batch/loss", float(learn.loss), learn.step)

    def after_epoch(self, learn) -> None:
        if self.writer is None:
            return
        for key, value in learn.metrics.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key.replace("_", "/", 1), value, learn.epoch)
        self.writer.flush()

    def after_fit(self, learn) -> None:
        if self.writer is not None:
            self.writer.close()


class Plotter(Callback):
    """curves.png (accuracy and loss, train vs validation) after slow epochs and at the end."""

    order = ORDER_LOG + 1
    main_only = True

    def __init__(self, run_dir: str | Path, every_seconds: float = 20.0):
        self.run_dir, self.every_seconds = Path(run_dir), every_seconds

    def after_epoch(self, learn) -> None:
        if learn.metrics.get("epoch_time", 0) >= self.every_seconds:
            self._draw(learn)

    def after_fit(self, learn) -> None:
        self._draw(learn)

    def _draw(self, learn) -> None:
        from cifarlab.training import plots
        if plots.available():
            plots.save_curves(learn.history, self.run_dir / "curves.png")


# ---------------------------------------------------------------- display
class ProgressBar(Callback):
    """A rich progress bar per epoch (loss, accuracy, lr, images/s) and one line per epoch."""

    order = ORDER_SHOW
    main_only = True

    def __init__(self, console=None, refresh_every: int | None = None):
        from rich.console import Console
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.refresh_every = refresh_every  # None: every 5 batches on the CPU, every 50 on a GPU
        self.progress = None

    def before_fit(self, learn) -> None:
        import time
        self.fit_start = time.perf_counter()
        self.done_at_start = learn.work_done()[0]  # a resumed fit: earlier epochs took no time here

    def run_left(self, learn, batches_into_epoch: int) -> str:
        """Time left for the whole fit (not only this epoch), from the pace so far."""
        import time
        done, total = learn.work_done(batches_into_epoch)
        elapsed, fresh = time.perf_counter() - self.fit_start, done - self.done_at_start
        if fresh <= 0:
            return "run left ?"
        left = max(0.0, (total - done) * elapsed / fresh)
        return f"run left {int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}"

    def before_epoch(self, learn) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        self.total = learn.steps_in_epoch(learn.epoch)
        if self.refresh_every is None:  # each refresh reads the device once: the GPU waits for it
            self.refresh_every = 5 if learn.device.type == "cpu" else 50
        import time
        self.start = time.perf_counter()
        if not hasattr(self, "fit_start"):  # used without before_fit (tests driving events)
            self.before_fit(learn)
        if self.console.is_terminal:
            self.progress = Progress(TextColumn(f"epoch {learn.epoch + 1}/{learn.epochs}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                     TimeRemainingColumn(), console=self.console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("train", total=self.total, info="")

    def after_batch(self, learn) -> None:
        i = learn.batch_idx + 1
        if i % self.refresh_every and i != self.total:
            return
        self.seen_info = self._info(learn)
        if self.progress is not None:
            self.progress.update(self.task, completed=i, info=self.seen_info)
        elif i % max(1, self.total // 10) < self.refresh_every and i != self.total:
            self.console.print(f"epoch {learn.epoch + 1}/{learn.epochs} batch {i}/{self.total} {self.seen_info}",
                               highlight=False)

    def _info(self, learn) -> str:
        """The epoch so far on this rank: running loss and accuracy from the loop's device sums."""
        import time
        t = learn.totals.read()
        n = max(t["n"], 1)
        rate = t["n"] * learn.dist.world_size / max(time.perf_counter() - self.start, 1e-9)
        return (f"loss {t['loss_sum'] / n:.4f} acc {t['correct1'] / n:.3f} "
                f"lr {learn.lr:.3g} {rate:.0f} img/s {self.run_left(learn, learn.batch_idx + 1)}")

    def after_epoch(self, learn) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        m = learn.metrics
        parts = [f"epoch {m['epoch']}/{learn.epochs}", f"loss {m['train_loss']:.4f}", f"acc {m['train_acc']:.4f}"]
        if "val_loss" in m:
            parts += [f"val_loss {m['val_loss']:.4f}", f"val_acc {m['val_acc']:.4f}"]
        if "val_binary_acc" in m:
            parts.append(f"val_binary_acc {m['val_binary_acc']:.4f}")
        parts += [f"lr {m['lr']:.3g}", f"{m['images_per_s']:.0f} img/s", f"{m['epoch_time']:.1f}s"]
        if learn.epoch < learn.epochs:
            parts.append(self.run_left(learn, 0))
        self.console.print("  ".join(parts), highlight=False)

    def after_fit(self, learn) -> None:
        if self.progress is not None:
            self.progress.stop()
        if learn.stop_reason:
            self.console.print(learn.stop_reason, highlight=False)
