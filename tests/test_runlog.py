"""The SQLite run registry: statuses of finished / failed / interrupted runs, filters, compare, concurrency."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cifarlab import runlog
from cifarlab.training import record
from cifarlab.cli import main
from cifarlab.data import random_cifar
from cifarlab.data.synthetic import write_cifar10_python
from cifarlab.training import Callback, TrainingInterrupted, train
from cifarlab.errors import ConfigError
from cifarlab.runlog import Registry

TINY = {"epochs": 2, "batch_size": 16, "device": "cpu", "tensorboard": False, "plots": False,
        "augment": "none", "progress": False}


@pytest.fixture(scope="module")
def data():
    return random_cifar(n_train=48, n_test=24, val=24, seed=2)



class Boom(Callback):
    def __init__(self, exc: BaseException):
        self.exc = exc

    def after_epoch(self, learn) -> None:
        raise self.exc


def _train(tmp_path, data, name, callbacks=(), study=None, **kw):
    return train({**TINY, "model": "lenet5_modern", "runs_dir": str(tmp_path), "name": name, **kw},
                 callbacks=[*callbacks, *record.recorder(study)], data=data)


def test_default_path_follows_cifarlab_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARLAB_HOME", str(tmp_path / "home"))
    assert runlog.default_path() == tmp_path / "home" / "runs.sqlite"
    assert [type(cb) for cb in record.recorder()] == [record.RegistryCallback]
    monkeypatch.setenv("CIFARLAB_REGISTRY", "0")
    assert record.recorder() == []


def test_statuses_metrics_filters(tmp_path, data):
    ok = _train(tmp_path, data, "ok")
    _train(tmp_path, data, "other-model", study="s1", model="lenet5", epochs=1)
    with pytest.raises(ValueError):
        _train(tmp_path, data, "broken", callbacks=[Boom(ValueError("bad value"))])
    with pytest.raises(TrainingInterrupted):
        _train(tmp_path, data, "stopped", callbacks=[Boom(KeyboardInterrupt())])

    reg = Registry()
    rows = {r["name"]: r for r in reg.list()}
    assert rows["broken"]["status"] == "failed" and "ValueError: bad value" in rows["broken"]["error"]
    assert rows["stopped"]["status"] == "interrupted"
    assert rows["ok"]["status"] == "finished" and rows["ok"]["path"] == str(ok.run_dir.resolve())
    assert rows["ok"]["config"]["epochs"] == 2 and rows["ok"]["model"] == "lenet5_modern"
    reg.refresh()  # picks up summary.json, written after the fit
    ok_row = reg.get(str(ok.run_dir))
    assert ok_row["metrics"]["test_top1"] == ok.summary["test"]["top1"]
    assert ok_row["metrics"]["val_best_acc"] == ok.summary["val_best"]["val_acc"]

    assert [r["name"] for r in reg.list(model="lenet5")] == ["other-model"]
    assert [r["name"] for r in reg.list(study="s1")] == ["other-model"]
    assert {r["name"] for r in reg.list(status="finished")} == {"ok", "other-model"}
    assert len(reg.list(limit=2)) == 2
    assert reg.get(ok_row["id"])["name"] == "ok"
    with pytest.raises(ConfigError, match="no run '999'"):
        reg.get(999)
    with pytest.raises(ConfigError, match="unknown status"):
        reg.list(status="done")


def test_only_runs_given_the_recorder_are_recorded(tmp_path, data):
    train({**TINY, "model": "lenet5_modern", "runs_dir": str(tmp_path), "name": "quiet"}, data=data)
    assert Registry().list() == []  # the engine records nothing by itself: its caller decides


def test_cli_train_and_resume_are_recorded(tmp_path, monkeypatch):
    from _callbacks import StopAfter
    source = write_cifar10_python(tmp_path / "data", per_batch=20, n_test=20).path
    real, extra = record.recorder, [StopAfter(1)]  # Ctrl-C after epoch 1 of the first command
    monkeypatch.setattr(record, "recorder", lambda study=None: [*real(study), *extra])
    args = ["train", "--data", str(source), "--model", "lenet5_modern", "--epochs", "2", "--batch-size", "16",
            "--runs-dir", str(tmp_path / "runs"), "--name", "cli", "--no-progress", "--no-plots",
            "--no-tensorboard", "--augment", "none", "--device", "cpu", "--val", "20"]
    assert main(args) == 130
    run = tmp_path / "runs" / "cli"
    assert Registry().get(str(run))["status"] == "interrupted"
    extra.clear()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    row = Registry().get(str(run))
    assert row["status"] == "finished" and row["metrics"]["epochs"] == 2 and "test_top1" in row["metrics"]


def test_dead_process_run_is_settled(tmp_path):
    reg = Registry()
    run = tmp_path / "ghost"
    run.mkdir()
    reg.start(run, {"model": "x"})
    # pretend the process that started it has gone away
    reg._write("UPDATE runs SET pid = ? WHERE path = ?", (2 ** 22 + 12345, str(run.resolve())))
    reg.refresh()
    assert reg.get(str(run))["status"] == "failed"  # no last.pt or config.json: nothing to resume
    (run / "config.json").write_text("{}")  # killed before its first epoch ended: resume restarts it
    reg.start(run, {"model": "x"})
    reg._write("UPDATE runs SET pid = ? WHERE path = ?", (2 ** 22 + 12345, str(run.resolve())))
    reg.refresh()
    assert reg.get(str(run))["status"] == "interrupted"


def test_runs_cli_list_json_and_compare(tmp_path, data, capsys):
    a = _train(tmp_path, data, "a", lr=0.01)
    b = _train(tmp_path, data, "b", lr=0.05)
    capsys.readouterr()
    assert main(["runs", "--json", "--model", "lenet5_modern"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"a", "b"} and all(r["status"] == "finished" for r in rows)
    ids = {r["name"]: r["id"] for r in rows}

    png = tmp_path / "curves.png"
    assert main(["runs", "compare", str(ids["a"]), str(b.run_dir), "-o", str(png), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "lr" in out["differing"] and "epochs" not in out["differing"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["runs", "compare", str(a.run_dir), str(b.run_dir)]) == 0
    assert "lr" in capsys.readouterr().out
    assert main(["runs", "--status", "nope"]) == 1
    assert "unknown status" in capsys.readouterr().err


_HAMMER = """
import os, sys
from cifarlab.runlog import Registry
db, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
reg = Registry(db)
for i in range(n):
    path = os.path.join(os.path.dirname(db), f"w{worker}-{i}")
    reg.start(path, {"model": "m", "i": i})
    reg.finish(path, "finished", {"test_top1": i / n})
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    db = str(tmp_path / "runs.sqlite")
    Registry(db)
    # plain interpreters importing only the registry (no torch): four writers at once
    procs = [subprocess.Popen([sys.executable, "-c", _HAMMER, db, str(w), "25"]) for w in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    rows = Registry(db).list()
    assert len(rows) == 100 and len({r["id"] for r in rows}) == 100
    assert all(r["status"] == "finished" for r in rows)
    assert Registry(db)._query("PRAGMA journal_mode")[0]["journal_mode"] == "wal"
