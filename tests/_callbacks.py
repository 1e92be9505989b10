"""Callbacks only the tests use."""

from __future__ import annotations

from cifarlab.training.callbacks import ORDER_SHOW, Callback


class StopAfter(Callback):
    """Raises KeyboardInterrupt after ``epochs`` epochs: how tests simulate Ctrl-C."""

    order = ORDER_SHOW + 10

    def __init__(self, epochs: int, batch: int | None = None):
        self.epochs, self.batch = epochs, batch

    def after_batch(self, learn) -> None:
        if self.batch is not None and learn.epoch == self.epochs and learn.batch_idx + 1 == self.batch:
            raise KeyboardInterrupt

    def after_epoch(self, learn) -> None:
        if self.batch is None and learn.epoch == self.epochs:
            raise KeyboardInterrupt

