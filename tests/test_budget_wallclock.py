"""The time budget measured with a real clock: no step time is faked here.

tests/test_budget.py checks the planning arithmetic with fixed step times; this checks the
promise itself: a whole ``train()`` call given ``time_budget`` ends inside it by the wall
clock around the call (data on hand, so the budget covers timing, training, validation, the
test pass and the files). The recipes' full budgets are measured by benchmarks/budget_keep.py.
"""

from __future__ import annotations

import time

import pytest

from cifarlab.data import random_cifar
from cifarlab.training import budget, train
from cifarlab.training.callbacks import Callback

BUDGET_S = 40.0  # long enough that the fixed tail (files, model card) is a small share of it
# Step times measured in the first seconds hold for the rest only on a machine that stays as
# busy as it was; the tolerance absorbs a shared CI runner, not a broken plan (a plan that
# ignored the budget would run the default 10 epochs and a slow one far more).
TOLERANCE = 0.25


@pytest.mark.slow
def test_a_whole_train_call_ends_inside_its_budget_by_the_wall_clock(tmp_path):
    data = random_cifar(n_train=1000, n_test=200, val=100, seed=0)
    cfg = dict(model="lenet5_modern", time_budget=BUDGET_S, batch_size=50, augment="flip", tta="flip",
               runs_dir=str(tmp_path), progress=False, plots=False, tensorboard=False)
    start = time.perf_counter()
    result = train(cfg, data=data)
    wall = time.perf_counter() - start
    plan = result.summary["time_budget"]
    print(f"budget {BUDGET_S:.0f} s: wall {wall:.1f} s, planned {plan['planned_s']:.1f} s, "
          f"{result.summary['epochs_run']} epochs + {result.summary.get('last_epoch_steps', 0)} steps")
    assert plan["fits"], plan
    assert wall <= BUDGET_S * (1 + TOLERANCE), f"{wall:.1f} s for a {BUDGET_S:.0f}-s budget"
    assert wall >= 0.5 * BUDGET_S, f"{wall:.1f} s: the plan left most of the {BUDGET_S:.0f}-s budget unused"
    assert result.summary["wall_time_s"] <= wall


class _SlowerThanTimed(Callback):
    """Each training step SLOWER_S longer than the budget's timing saw (it times the bare step):
    a machine that slowed down after the plan was made."""

    def after_batch(self, learn) -> None:
        time.sleep(SLOWER_S)


SLOWER_S = 0.15
SHORT_BUDGET_S = 6.0


def test_a_last_epoch_slower_than_timed_still_ends_inside_the_budget(tmp_path, monkeypatch):
    # the timing says 0.1 s a step: a 48-step epoch (4.8 s) fits 95% of 6 s, and the rest buys a
    # second one cut short where the data loaded fast. The steps really take 0.15 s and more:
    # the first epoch alone ends near 8 s, before any re-plan after an epoch could act, so only
    # the clock checked at each step keeps the promise (it makes that epoch the last).
    monkeypatch.setattr(budget, "_step_seconds", lambda *a, **k: 0.1)
    data = random_cifar(n_train=2500, n_test=100, val=100, seed=0)
    cfg = dict(model="airnet_tiny", time_budget=SHORT_BUDGET_S, batch_size=50, augment="flip", tta="none",
               resolutions="", runs_dir=str(tmp_path), progress=False, plots=False, tensorboard=False)
    start = time.perf_counter()
    result = train(cfg, data=data, callbacks=[_SlowerThanTimed()])
    wall = time.perf_counter() - start
    s = result.summary
    print(f"budget {SHORT_BUDGET_S:.0f} s: wall {wall:.2f} s, {s['steps_run']} steps, plan {s['time_budget']}")
    assert s["time_budget"]["epochs"] == s["epochs_run"] == 1 and s["time_budget"]["fits"]
    assert 0 < s["steps_run"] < 50 and s["time_budget"]["replans"][-1]["in_epoch"] == 1
    # 10%: the files written after the test are outside the plan, and a shared runner stalls now
    # and then; the epoch as planned would end past 10 s, and benchmarks/budget_keep.py measures the rest
    assert wall <= SHORT_BUDGET_S * 1.1, f"{wall:.2f} s for a {SHORT_BUDGET_S:.0f}-s budget"
