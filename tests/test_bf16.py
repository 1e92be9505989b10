"""bf16 autocast where the device runs it natively: CUDA, and CPUs with AVX512-BF16 or AMX.

The CPU probes are patched, so every path runs on any CPU (where bf16 is not native,
torch emulates it: slower, same numbers).
"""

from __future__ import annotations

import dataclasses
import json
import pytest
import torch

from cifarlab.data import random_cifar
from cifarlab.inference import load_model
from cifarlab.training import Callback, recipe_config, train
from cifarlab.inference import hardware
from cifarlab.training.loop import autocast, run_eval

CPU = torch.device("cpu")


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set which bf16 units this CPU 'has': cpu_bf16(avx512_bf16, amx=False)."""
    def setting(native: bool, amx: bool = False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        hardware._bf16_native.cache_clear()
    yield setting
    hardware._bf16_native.cache_clear()


@pytest.mark.parametrize("avx512_bf16,amx,native", [(False, False, False), (True, False, True), (False, True, True)])
def test_a_cpu_is_bf16_native_with_avx512_bf16_or_amx(cpu_bf16, avx512_bf16, amx, native):
    cpu_bf16(avx512_bf16, amx)
    assert hardware.bf16_native(CPU) is native
    assert hardware.bf16_native(torch.device("mps")) is False
    assert hardware.hardware_info(CPU)["bf16_native"] is native


def _conv_dtype(enabled: bool, training: bool = True, amp_eval: bool = False) -> torch.dtype:
    conv = torch.nn.Conv2d(3, 4, 3)
    with autocast(CPU, enabled, training, amp_eval=amp_eval):
        return conv(torch.randn(2, 3, 8, 8)).dtype


def test_autocast_runs_cpu_training_convs_in_bf16_only_where_native(cpu_bf16):
    cpu_bf16(True)
    assert _conv_dtype(True) == torch.bfloat16
    assert _conv_dtype(False) == torch.float32, "amp off: float32"
    assert _conv_dtype(True, training=False) == torch.float32, "evaluation on a CPU stays float32"
    cpu_bf16(False)
    assert _conv_dtype(True) == torch.float32, "emulated bf16 is slower than float32: not used"


def test_cpu_evaluation_is_float32_whatever_amp_says(cpu_bf16):
    """The accuracy a model states must not depend on the CPU that measures it."""
    cpu_bf16(True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    model(x)
    on = run_eval(model, [(x, y)], torch.nn.functional.cross_entropy, CPU, amp=True)
    off = run_eval(model, [(x, y)], torch.nn.functional.cross_entropy, CPU, amp=False)
    assert on.loss_sum == off.loss_sum and on.correct1 == off.correct1


def test_amp_eval_runs_cpu_evaluation_in_bf16_only_with_amp_and_native_bf16(cpu_bf16):
    cpu_bf16(True)
    assert _conv_dtype(True, training=False, amp_eval=True) == torch.bfloat16
    assert _conv_dtype(False, training=False, amp_eval=True) == torch.float32, "amp off wins"
    cpu_bf16(False)
    assert _conv_dtype(True, training=False, amp_eval=True) == torch.float32, "emulated bf16: not used"


class _EvalDtypes(Callback):
    """The dtype of the model's output in every eval-mode forward pass (val passes, final test)."""

    def __init__(self):
        self.seen = set()

    def before_fit(self, learner):
        def hook(module, inputs, output):
            if not module.training:
                self.seen.add(output.dtype)
        learner.model.register_forward_hook(hook)


@pytest.mark.slow  # trains and evaluates twice: 3-6 CPU-s
@pytest.mark.parametrize("amp_eval", [True, False])
def test_amp_eval_runs_val_and_test_in_bf16_and_evaluate_repeats_the_stated_accuracy(tmp_path, cpu_bf16,
                                                                                    amp_eval):
    from cifarlab.training import evaluate
    cpu_bf16(True)
    seen = _EvalDtypes()
    data = random_cifar(n_train=160, n_test=60, val=40, seed=1)
    cfg = {"model": "lenet5_modern", "epochs": 2, "batch_size": 32, "runs_dir": str(tmp_path), "device": "cpu",
           "progress": False, "plots": False, "tensorboard": False, "augment": "none", "amp_eval": amp_eval,
           "tta": "flip"}
    r = train(cfg, data=data, callbacks=[seen])
    assert seen.seen == {torch.bfloat16 if amp_eval else torch.float32}
    assert r.summary["hardware"]["amp_eval"] is amp_eval
    again = evaluate(r.run_dir, data=data, tta="flip")
    assert again["top1"] == r.summary["test"]["top1"] and again["loss"] == pytest.approx(r.summary["test"]["loss"])


class _Dtypes(Callback):
    def __init__(self):
        self.logits = set()

    def after_backward(self, learner):
        self.logits.add(learner.logits.dtype)
        assert all(p.grad is None or p.grad.dtype == torch.float32 for p in learner.model.parameters())


@pytest.mark.parametrize("amp", [True, False])
def test_a_cpu_run_trains_in_bf16_with_float32_weights_and_says_so(tmp_path, cpu_bf16, amp):
    cpu_bf16(True)
    seen = _Dtypes()
    cfg = {"model": "lenet5_modern", "epochs": 2, "batch_size": 32, "runs_dir": str(tmp_path), "device": "cpu",
           "progress": False, "plots": False, "tensorboard": False, "augment": "none", "amp": amp}
    r = train(cfg, data=random_cifar(n_train=160, n_test=40, val=40, seed=0), callbacks=[seen])
    assert seen.logits == {torch.bfloat16 if amp else torch.float32}
    assert r.summary["hardware"]["amp"] is amp and r.summary["hardware"]["bf16_native"] is True
    model, _ = load_model(r.run_dir, CPU)
    assert {p.dtype for p in model.state_dict().values() if p.is_floating_point()} == {torch.float32}
    losses = [json.loads(line)["train_loss"] for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and losses[-1] < losses[0]


@pytest.mark.realdata
@pytest.mark.slow
def test_bf16_training_learns_a_real_subset_as_well_as_float32(real_data, tmp_path, cpu_bf16):
    """cpu-2min's pieces on 5,000 real images, 3 epochs, trained in bf16 and in float32.
    On the full data bf16 cost cpu-5min 0.3 points at seed 0 (86.75% vs 87.09%) and ran 1.5x
    faster on an AVX512-BF16 CPU; a broken bf16 path (a float16 overflow, weights cast to bf16,
    the optimizer stepping bf16 copies) falls far behind."""
    cpu_bf16(True)
    accs = {}
    for amp in (True, False):
        cfg = recipe_config("cpu-2min", {"epochs": 3, "resolutions": "16:1,24:1", "train_subset": 5000,
                                         "test_subset": 2000, "runs_dir": str(tmp_path), "progress": False,
                                         "plots": False, "tensorboard": False, "amp": amp, "device": "cpu"})
        accs[amp] = train(cfg, data=real_data).summary["test"]["top1"]
    print("cpu-2min pieces on a 5k real subset, bf16 / float32:", accs)
    assert accs[True] > 0.40 and accs[True] > accs[False] - 0.03, accs


@pytest.fixture
def cpu_frontier(monkeypatch):
    """benchmarks/cpu_frontier.py, freshly imported (tests patch its names)."""
    import sys
    from pathlib import Path
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    sys.modules.pop("cpu_frontier", None)
    import cpu_frontier
    return cpu_frontier


def _summary_run(monkeypatch, cpu_frontier, recipe: str, **summary):
    """cpu_frontier.one_run of ``recipe`` with train() replaced by one that returns ``summary``."""
    from types import SimpleNamespace
    base = {"test": {"top1": 0.85, "tta": "none"}, "training_time_s": 90.0, "data": {"train": 50000},
            "hardware": {"amp": True}, "model": "airnet_small", "time_budget": None}
    monkeypatch.setattr(cpu_frontier, "train", lambda cfg: SimpleNamespace(summary={**base, **summary}))
    return cpu_frontier.one_run(recipe, 0, None, "unused")


def test_cpu_frontier_counts_only_the_steps_of_a_cut_last_epoch(monkeypatch, cpu_frontier):
    """A plan of 2 at 16 px and 3 at 32, the last cut to 80 of 200 steps (20,000 of 50,000 images)."""
    plan = {"stages": [[16, 2], [32, 3]], "last_epoch_steps": 80}
    row = _summary_run(monkeypatch, cpu_frontier, "cpu-2min", epochs_run=5, time_budget=plan, last_epoch_steps=80)
    cfg = dataclasses.replace(recipe_config("cpu-2min", {"seed": 0}), resolutions="16:2")
    four = cpu_frontier.training_flops(dataclasses.replace(cfg, epochs=4), 50000)
    five = cpu_frontier.training_flops(dataclasses.replace(cfg, epochs=5), 50000)
    assert row["flops"] == pytest.approx(four + 0.4 * (five - four))


def test_cpu_frontier_rates_each_run_against_the_ceiling_of_its_number_format(monkeypatch, capsys,
                                                                             cpu_frontier):
    """A bf16 run is measured against the bf16 matmul (4x float32's on an AVX512-BF16 CPU),
    not flattered by the float32 one."""
    assert cpu_frontier.matmul_ceiling(n=64, reps=2, dtype=torch.bfloat16) > 0
    plan = {"budget_s": 120.0, "stages": [[16, 2], [32, 3]], "last_epoch_steps": 110, "muon_lr": 0.08,
            "planned_s": 113.6}
    runs = iter([{"bf16": True, "plan": plan}, {"bf16": False}])
    monkeypatch.setattr(cpu_frontier, "one_run", lambda name, seed, data, runs_dir, sets: {
        "seed": seed, "acc": 0.9, "acc_plain": 0.89, "tta": "flip", "wall": 12.0, "fit": 10.0, "flops": 4e12,
        "model": "airnet_small", **next(runs)})
    rows = cpu_frontier.run_recipe("cpu-2min", range(3, 5), None, {"float32": 200.0, "bf16": 800.0}, "unused")
    out = capsys.readouterr().out
    assert [r["gflops"] for r in rows] == [400.0, 400.0]
    assert [r["seed"] for r in rows] == [3, 4]  # --first-seed 3 --seeds 2
    assert "trained in bf16  400.0 GFLOP/s = 50% of the bf16 matmul ceiling" in out
    assert "wall 12.0 s  airnet_small, " in out  # the model trained: a budget may have fallen back
    assert "trained in float32  400.0 GFLOP/s = 200% of the float32 matmul ceiling" in out
    assert ("(planned for 120 s: 2@16 + 3@32, the last cut to 110 steps, Muon lr 0.08 for a short run, "
            "estimated 114 s)") in out


def test_cpu_frontier_counts_the_flops_of_the_model_a_budget_trained(monkeypatch, cpu_frontier):
    """cpu-5min names airnet_medium; where its budget fell back to airnet_small, the useful
    FLOPs are airnet_small's (a third of airnet_medium's), not the recipe's model's."""
    row = _summary_run(monkeypatch, cpu_frontier, "cpu-5min", epochs_run=5, training_time_s=240.0)
    cfg = recipe_config("cpu-5min", {"seed": 0})
    assert cfg.model == "airnet_medium" and row["model"] == "airnet_small"
    small = cpu_frontier.training_flops(dataclasses.replace(cfg, epochs=5, model="airnet_small"), 50000)
    medium = cpu_frontier.training_flops(dataclasses.replace(cfg, epochs=5), 50000)
    assert row["flops"] == small and small < medium / 2


def test_cpu_frontier_counts_the_flops_of_the_resolutions_a_budget_planned(monkeypatch, cpu_frontier):
    """cpu-2min names 2 epochs at 16 px and 1 at 24; where its plan gave up the 24-px epoch for
    a second 32-px one, the useful FLOPs are those of 2 at 16 px and 2 at 32."""
    plan = {"stages": [[16, 2], [32, 2]], "traded": [[24, 1]]}
    row = _summary_run(monkeypatch, cpu_frontier, "cpu-2min", epochs_run=4, time_budget=plan)
    cfg = recipe_config("cpu-2min", {"seed": 0})
    assert cfg.resolutions == "16:2,24:1"
    traded = cpu_frontier.training_flops(dataclasses.replace(cfg, epochs=4, resolutions="16:2"), 50000)
    as_named = cpu_frontier.training_flops(dataclasses.replace(cfg, epochs=4), 50000)
    assert row["flops"] == traded and traded > as_named


def test_cpu_frontier_set_changes_the_config_every_run_trains_and_says_so(monkeypatch, capsys, cpu_frontier):
    """``--set tta=none`` measures one change on the recipe as it is: each run's config
    carries it, the recipe line names it."""
    from types import SimpleNamespace
    trained = []

    def fake_train(cfg):
        trained.append(cfg)
        return SimpleNamespace(summary={"test": {"top1": 0.88, "tta": cfg.tta}, "training_time_s": 280.0,
                                        "data": {"train": 50000}, "hardware": {"amp": True},
                                        "model": cfg.model, "epochs_run": cfg.epochs, "time_budget": None})
    monkeypatch.setattr(cpu_frontier, "train", fake_train)
    monkeypatch.setattr(cpu_frontier, "_plain_accuracy", lambda result, cfg: 0.87)
    sets = cpu_frontier.parse_set(["tta=none"])
    cpu_frontier.run_recipe("cpu-5min", range(2), None, {"float32": 200.0, "bf16": 800.0}, "unused", sets)
    out = capsys.readouterr().out
    assert [c.tta for c in trained] == ["none"] * 2 and recipe_config("cpu-5min").tta != "none"
    assert [c.time_budget for c in trained] == [300.0] * 2  # the rest of the recipe as it is
    assert "recipe cpu-5min --set tta=none: " in out and "(tta none)" in out


@pytest.mark.parametrize("argv, message", [
    (["--set", "tta=bogus"], "tta='bogus' is not one of"),
    (["--set", "nosuch=1"], "unknown config key 'nosuch'"),
    (["--set", "tta"], "must look like KEY=VALUE"),
    (["--recipes", "cpu-9min"], "unknown recipe 'cpu-9min'")])
def test_cpu_frontier_refuses_a_bad_recipe_or_set_before_measuring(monkeypatch, capsys, cpu_frontier, argv, message):
    monkeypatch.setattr(cpu_frontier, "matmul_ceiling", lambda *a, **k: pytest.fail("measured before checking"))
    with pytest.raises(SystemExit) as exit_:
        cpu_frontier.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err
