"""The progress display estimates the time left for the whole run, weighted by epoch cost."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from cifarlab.training.callbacks import ProgressBar
from cifarlab.training.loop import Learner


def _learner(epochs: int, costs=None) -> Learner:
    model = torch.nn.Linear(2, 2)
    batches = [(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))] * 4
    learn = Learner(model, None, torch.optim.SGD(model.parameters(), lr=0.1), None, batches, None,
                    epochs, torch.device("cpu"))
    learn.epoch_costs = costs
    return learn


def test_work_done_counts_epochs_and_the_current_batch():
    learn = _learner(3)
    assert learn.work_done() == (0.0, 3.0)
    learn.epoch = 1
    assert learn.work_done(2) == (1.5, 3.0)


def test_work_done_weights_cheap_low_resolution_epochs():
    learn = _learner(3, [0.25, 0.25, 1.0])  # two epochs at 16 px, one at 32 px
    learn.epoch = 2
    assert learn.work_done(0) == (0.5, 1.5)
    assert learn.work_done(4) == (1.5, 1.5)


def test_work_done_counts_a_cut_last_epoch_by_its_steps():
    learn = _learner(3, [0.25, 1.0, 1.0])
    learn.last_epoch_steps = 1  # the last epoch: 1 of the 4 batches
    assert [learn.steps_in_epoch(e) for e in range(3)] == [4, 4, 1] and learn.total_steps == 9
    assert learn.work_done() == (0.0, 1.5)
    learn.epoch = 2
    assert learn.work_done(1) == (1.5, 1.5)


def test_run_left_extrapolates_the_pace_to_the_whole_run(monkeypatch):
    bar = ProgressBar(console=Console(file=io.StringIO()))
    learn = _learner(4)
    clock = iter([100.0, 130.0])  # fit starts at t=100 s; 30 s later one epoch is done
    monkeypatch.setattr("time.perf_counter", lambda: next(clock))
    bar.before_fit(learn)
    learn.epoch = 1
    assert bar.run_left(learn, 0) == "run left 0:01:30"  # three more epochs at 30 s each


def test_run_left_after_resume_ignores_epochs_done_earlier(monkeypatch):
    bar = ProgressBar(console=Console(file=io.StringIO()))
    learn = _learner(4)
    learn.epoch = 2  # resumed after two epochs
    clock = iter([0.0, 10.0])
    monkeypatch.setattr("time.perf_counter", lambda: next(clock))
    bar.before_fit(learn)
    assert bar.run_left(learn, 2) == "run left 0:00:30"  # half an epoch in 10 s, 1.5 epochs left
