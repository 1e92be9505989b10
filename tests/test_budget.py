"""Time-budget runs (engine/budget.py): the epochs planned from timed steps, and nothing else changed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cifarlab.data import DeviceLoader, random_cifar
from cifarlab.engine import budget, recipe_config, train
from cifarlab.engine.checkpoint import load_checkpoint
from cifarlab.errors import ConfigError

STEPS = {16: 0.06, 24: 0.13, 32: 0.24}  # seconds per step, about airnet_medium's at batch 250 here


def test_the_plan_fills_the_budget_with_full_resolution_epochs():
    # 200 steps an epoch: 12 s at 16 px, 26 s at 24 px, 48 s at 32 px; 10 s spent, 5 s of test
    epochs, total, fits = budget.plan_epochs(300, 10, [(16, 2), (24, 2)], 32, 200, STEPS, test_s=5)
    assert (epochs, fits) == (8, True)  # 2 + 2 + 4: a fifth 32-px epoch would end at 331 s
    assert total == pytest.approx(10 + 24 + 52 + 4 * 48 + 5)
    assert total <= 300 * (1 - budget.SAFETY)


def test_more_budget_or_faster_steps_plan_more_epochs_and_validation_costs_its_share():
    plans = [budget.plan_epochs(b, 10, [(16, 2)], 32, 200, STEPS, 5)[0] for b in (200, 400, 800)]
    assert plans[0] < plans[1] < plans[2]
    faster = {side: t / 2 for side, t in STEPS.items()}
    assert budget.plan_epochs(400, 10, [(16, 2)], 32, 200, faster, 5)[0] > plans[1]
    assert budget.plan_epochs(400, 10, [(16, 2)], 32, 200, STEPS, 5, val_s=20)[0] < plans[1]


def test_a_budget_too_short_still_runs_the_shortest_schedule_and_says_it_does_not_fit():
    epochs, total, fits = budget.plan_epochs(60, 10, [(16, 2), (24, 2)], 32, 200, STEPS, test_s=5)
    assert (epochs, fits) == (5, False) and total > 60
    plan = budget.BudgetPlan(60, epochs, [[16, 2], [24, 2], [32, 1]], {"16": .06, "24": .13, "32": .24}, 200,
                             5.0, 0.0, 10.0, total, fits)
    assert "too short for this model here" in plan.describe()


def test_timing_leaves_the_model_the_random_streams_and_the_loader_as_they_were():
    cfg = recipe_config("cpu-2min", {"model": "airnet_tiny", "batch_size": 20, "time_budget": 60.0,
                                     "resolutions": "16:1"})
    data = random_cifar(n_train=100, n_test=40, seed=0)
    from cifarlab.engine.losses import build_loss
    from cifarlab.models import create_model
    model = create_model("airnet_tiny").to(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loader = DeviceLoader(data.train, 20, channels_last=True)
    test = DeviceLoader(data.test, 20, shuffle=False, channels_last=True)
    rng = torch.get_rng_state()
    plan = budget.plan_run(cfg, model, build_loss("ce", 10, 0.2), loader, test, None, torch.device("cpu"),
                           False, started=0.0)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert loader.size is None
    assert set(plan.step_s) == {"16", "32"} and all(t > 0 for t in plan.step_s.values())
    assert plan.steps_per_epoch == 5 and plan.test_s > 0 and plan.epochs >= 2


def _small(tmp_path, **over):
    values = {"model": "airnet_tiny", "resolutions": "16:1,24:1", "batch_size": 50, "runs_dir": str(tmp_path),
              "progress": False, "plots": False, "tensorboard": False, **over}
    return recipe_config("cpu-2min", values)


def test_a_budget_run_trains_the_planned_epochs_records_the_plan_and_differs_in_nothing_else(tmp_path, monkeypatch):
    # fixed step times: 20 steps an epoch of 5 / 10 / 20 s; a 75-s budget leaves room for 2 at 32 px
    monkeypatch.setattr(budget, "_step_seconds",
                        lambda model, loss, opt, loader, side, *a: {16: .25, 24: .5}.get(side, 1.0))
    monkeypatch.setattr(budget, "_eval_seconds", lambda *a: 0.0)
    data = random_cifar(n_train=1000, n_test=200, seed=1)
    planned = train(_small(tmp_path, time_budget=75.0, name="planned"), data=data)
    s = planned.summary
    assert s["epochs_run"] == s["time_budget"]["epochs"] == 4
    assert s["time_budget"]["stages"] == [[16, 1], [24, 1], [32, 2]] and s["time_budget"]["fits"]
    assert 0 < s["time_budget"]["wall_s"] == s["wall_time_s"]
    assert json.loads((planned.run_dir / "config.json").read_text())["epochs"] == 4  # resume keeps the plan
    assert load_checkpoint(planned.run_dir / "last.pt")["time_budget"]["epochs"] == 4
    fixed = train(_small(tmp_path, epochs=4, name="fixed"), data=data)
    assert "time_budget" not in fixed.summary
    for name, value in fixed.model.state_dict().items():  # timing drew no random number of the run's
        assert torch.equal(value, planned.model.state_dict()[name]), name


def test_epochs_typed_by_the_user_turn_a_recipe_budget_off():
    assert recipe_config("cpu-5min").time_budget == 300.0
    assert recipe_config("cpu-5min", {"epochs": 3}).time_budget == 0.0
    assert recipe_config("cpu-5min", {"epochs": 3, "time_budget": 120.0}).time_budget == 120.0


@pytest.mark.parametrize("over, message", [({"compile": True}, "torch.compile"),
                                            ({"early_stop": True}, "early stopping")])
def test_what_a_budget_cannot_plan_for_is_one_config_error(tmp_path, over, message):
    with pytest.raises(ConfigError, match=message) as info:
        train(_small(tmp_path, time_budget=60.0, **over), data=random_cifar(n_train=100, n_test=20, seed=0))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text, seconds", [("300", 300), ("300s", 300), ("5min", 300), ("5 m", 300),
                                           ("1.5h", 5400), ("90sec", 90)])
def test_the_cli_reads_a_budget_in_seconds_or_with_a_unit(text, seconds):
    from cifarlab.cli.train_cmd import parse_duration
    assert parse_duration(text) == seconds


def test_a_bad_budget_on_the_command_line_is_one_line_naming_the_forms(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cifarlab", "train", "--time-budget", "soon"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "'soon' is not a duration; use seconds or a unit: 300, 300s, 5min, 1.5h" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_make_train_on_a_cpu_gives_the_training_what_setup_left_of_five_minutes():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    make = subprocess.run(["make", "-n", "train", "HAS_GPU=", "TRAIN_SECONDS=300"],
                          capture_output=True, text=True, cwd=root)
    assert make.returncode == 0, make.stderr
    assert "--time-budget $left" in make.stdout and "300 - 5 - $(date +%s) +" in make.stdout
