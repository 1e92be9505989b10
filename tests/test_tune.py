"""Optuna search: two worker processes on one SQLite storage, exact trial count, pruning, errors."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from cifarlab.data import random_cifar
from cifarlab.training import TrainConfig
from cifarlab.errors import CifarlabError, ConfigError
from cifarlab.runlog import Registry
from cifarlab.studies import tune as tune_mod

from conftest import need_module

optuna = need_module("optuna", "the tune extra (optuna) is not installed: pip install 'cifarlab[tune]'")

BASE = TrainConfig.from_dict({"model": "lenet5_modern", "epochs": 2, "batch_size": 16, "device": "cpu",
                              "tensorboard": False, "plots": False, "progress": False, "augment": "none"}).to_dict()


@pytest.mark.slow  # two worker processes: ~20 CPU-s
def test_two_workers_share_one_sqlite_study(tmp_path):
    data = random_cifar(n_train=48, n_test=16, val=24, seed=3)
    summary = tune_mod.tune(BASE, 5, out=tmp_path / "t", study_name="s", workers=2, data=data,
                            space="lr=log:1e-3:1e-1,batch_size=16|32,act=relu|tanh")
    assert summary["trials"] == 5
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 't' / 'optuna.db'}")
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4]  # none lost, none duplicated
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    for t in trials:
        assert (tmp_path / "t" / "trials" / f"trial-{t.number:04d}" / "summary.json").exists()
        assert 1e-3 <= t.params["lr"] <= 1e-1 and t.params["act"] in ("relu", "tanh")
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert summary["best"]["val_acc"] == max(t.value for t in done)
    # both workers recorded their runs in the registry (CIFARLAB_HOME is inherited)
    assert len(Registry().list(study="tune:s")) == 5


class _Trial:
    def __init__(self, prune_after: int):
        self.prune_after, self.reports = prune_after, []

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return len(self.reports) >= self.prune_after


def test_pruning_callback_stops_the_fit_after_the_reported_epoch():
    trial = _Trial(prune_after=2)
    cb = tune_mod.OptunaPruning(trial)
    learn = SimpleNamespace(metrics={"val_acc": 0.3}, epoch=1, epochs=3, stop=False, stop_reason="")
    cb.after_epoch(learn)
    assert not learn.stop and trial.reports == [(1, 0.3)]
    learn.metrics, learn.epoch = {"val_acc": 0.2}, 2
    cb.after_epoch(learn)
    assert learn.stop and cb.pruned and cb.best == 0.3 and "pruned" in learn.stop_reason


def test_a_trial_that_ran_all_its_epochs_is_complete_not_pruned():
    cb = tune_mod.OptunaPruning(_Trial(prune_after=1))
    learn = SimpleNamespace(metrics={"val_acc": 0.2}, epoch=2, epochs=2, stop=False, stop_reason="")
    cb.after_epoch(learn)
    assert not learn.stop and not cb.pruned and cb.best == 0.2


def test_space_parsing_and_errors():
    params = {p.name: p for p in tune_mod.parse_space(tune_mod.DEFAULT_SPACE, BASE)}
    assert params["lr"].kind == "log" and params["batch_size"].choices == [32, 64, 128, 256]
    assert params["label_smoothing"].kind == "uniform"
    assert tune_mod.parse_space("epochs=1:5", BASE)[0].kind == "int"
    with pytest.raises(ConfigError, match="--space item 'speed=1:2'"):
        tune_mod.parse_space("speed=1:2", BASE)
    with pytest.raises(ConfigError, match="low < high"):
        tune_mod.parse_space("lr=log:0.1:0.01", BASE)


def test_missing_optuna_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(CifarlabError, match=r"pip install 'cifarlab\[tune\]'"):
        tune_mod.create("sqlite:///x.db", "s")


def test_tune_cli_writes_best_json(tmp_path, capsys):
    import json

    from cifarlab.cli import main
    from cifarlab.data.synthetic import write_cifar10_python
    data_dir = write_cifar10_python(tmp_path / "data", per_batch=20, n_test=20).path
    out = tmp_path / "tune"
    code = main(["tune", "--model", "lenet5_modern", "--trials", "2", "--out", str(out), "--space", "lr=log:1e-3:1e-1",
                 "--set", f"data={data_dir}", "--set", "val=20", "--set", "epochs=1", "--set", "tensorboard=false",
                 "--set", "plots=false", "--set", "augment=none"])
    assert code == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    best = json.loads((out / "best.json").read_text())
    assert printed == best and best["trials"] == 2 and (out / "optuna.db").exists()
    assert Path(best["best"]["run_dir"]).parent == out / "trials"
    assert main(["tune", "--model", "lenet5_modern", "--trials", "1", "--out", str(out), "--space", "lr=log:1:0.1"]) == 1
    assert "cifarlab: error: --space 'lr=log:1:0.1': need low < high" in capsys.readouterr().err
