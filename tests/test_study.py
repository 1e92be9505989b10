"""Studies: planning (sharing the base), tables against the runs' own files, figures, report, resume."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import torch

from cifarlab.cli import main
from cifarlab.data import random_cifar
from cifarlab.data.synthetic import write_cifar10_python
from cifarlab.training import Callback, TrainingInterrupted
from cifarlab.errors import ConfigError
from cifarlab.runlog import Registry
from cifarlab.studies import build_spec, load_spec, plan, run_study, write_report

TINY = {"epochs": 2, "batch_size": 16, "device": "cpu", "tensorboard": False, "plots": False,
        "augment": "none", "lr": 1e-2}


@pytest.fixture(scope="module")
def data():
    return random_cifar(n_train=64, n_test=32, val=32, seed=1)


class CountFits(Callback):
    """Counts trainings (fresh or resumed); raises Ctrl-C after epoch 1 of fit number ``stop_at``."""

    def __init__(self, stop_at: int | None = None):
        self.fits, self.stop_at = 0, stop_at

    def before_fit(self, learn) -> None:
        self.fits += 1

    def after_epoch(self, learn) -> None:
        if self.fits == self.stop_at and learn.epoch == 1:
            raise KeyboardInterrupt


def _spec(**kw):
    return build_spec(model="lenet5_modern", vary=["lr=1e-3,1e-2", "optimizer=sgd,adam"], sets=TINY, seeds=2, **kw)


def test_plan_shares_the_base_point():
    runs = plan(_spec())
    # base lr=1e-2 + sgd: lr=1e-2 and optimizer=sgd are the same run -> 3 points x 2 seeds
    assert len(runs) == 6
    base = [r for r in runs if r.name == "base-s0"][0]
    assert sorted(base.cells, key=str) == [("lr", 0.01), ("optimizer", "sgd")]
    assert {r.name for r in runs} == {f"{p}-s{s}" for p in ("base", "lr=0.001", "optimizer=adam") for s in (0, 1)}
    grid = plan(_spec(grid=True))
    assert len(grid) == 2 * 2 * 2


def test_a_varied_filter_lr_or_epoch_count_is_the_one_trained_on_a_budget_recipe_base(tmp_path):
    """A study on a CPU recipe's config (a time budget, a short-run filter lr): the epochs and
    the filter lr it varies are what its runs train, as if typed on the command line."""
    from cifarlab.training import recipe_config
    from cifarlab.training.recipes import resolve_config
    base = tmp_path / "cpu-2min.json"
    base.write_text(json.dumps(recipe_config("cpu-2min").to_dict()))
    runs = {r.name: r.config for r in plan(build_spec(base_file=str(base), vary=["muon_lr=0.05,0.12", "epochs=3"]))}
    assert json.loads(base.read_text())["muon_lr_short"] == 0.08
    # 0.05, the recipe's own filter lr, varied: 0.05 however short the plan (the base would give 0.08)
    # run names come from the factors alone, not from the settings they imply
    assert sorted(runs) == ["epochs=3-s0", "muon_lr=0.05-s0", "muon_lr=0.12-s0"]
    assert runs["muon_lr=0.05-s0"]["muon_lr"] == 0.05 and runs["muon_lr=0.05-s0"]["time_budget"] == 120.0
    assert runs["muon_lr=0.05-s0"]["muon_lr_short"] == 0.0  # the base would give 0.08 in a short plan
    assert runs["muon_lr=0.12-s0"]["muon_lr_short"] == 0.0
    assert runs["epochs=3-s0"]["time_budget"] == 0.0
    assert resolve_config(file=str(base), flags={"epochs": 4}).time_budget == 0.0
    planned = tmp_path / "planned.json"  # a budget run's config.json: its plan cut the last epoch
    planned.write_text(json.dumps({**recipe_config("cpu-2min").to_dict(), "epochs": 5, "last_epoch_steps": 90}))
    assert resolve_config(file=str(planned)).last_epoch_steps == 90
    assert resolve_config(file=str(planned), flags={"epochs": 5}).last_epoch_steps == 0  # whole epochs asked for


def test_reference_preset_matches_section_6():
    spec = build_spec(preset="reference")
    base = spec.base
    assert (base["model"], base["optimizer"], base["lr"], base["loss"], base["batch_size"], base["epochs"],
            base["augment"], base["model_kwargs"]["act"]) == ("googlenet_small", "adam", 1e-3, "ce", 32, 10,
                                                               "none", "relu")
    factors = dict((f, v) for f, v in spec.factors)
    assert factors["epochs"] == [5, 10, 20, 50] and factors["optimizer"][0] == "sgd"
    runs = plan(spec)
    # §6 has 25 table rows; the base appears in all six tables and is trained once here
    assert sum(len(r.cells) for r in runs) == 25 and len(runs) == 20
    assert len([r for r in runs if r.name == "base-s0"][0].cells) == 6
    small = build_spec(preset="reference", epoch_scale=0.2, train_subset=500)
    assert small.base["epochs"] == 2 and dict(small.factors)["epochs"] == [1, 2, 4, 10]
    assert small.reduced == {"train_subset": 500, "epoch_scale": 0.2}


def test_reference_sgd_is_plain_sgd_as_in_section_6():
    """Keras' SGD() has no momentum; the base's momentum 0.9 is Adam's beta1 and must not
    become Nesterov momentum in the SGD row. Run names stay the factor's (not the settings')."""
    from cifarlab.training import TrainConfig
    from cifarlab.training.optim import build_optimizer
    runs = {r.name: r for r in plan(build_spec(preset="reference"))}
    sgd, adam = runs["optimizer=sgd-s0"], runs["base-s0"]
    assert sgd.config["momentum"] == 0.0 and adam.config["momentum"] == 0.9
    assert sgd.overrides == {"optimizer": "sgd", "momentum": 0.0}
    opt = build_optimizer(torch.nn.Linear(2, 2), TrainConfig.from_dict(sgd.config))
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.0 and opt.param_groups[0]["nesterov"] is False
    # every other run is the base with its own factor alone
    assert all(r.config["momentum"] == 0.9 for name, r in runs.items() if name != "optimizer=sgd-s0")
    assert "lr=0.01-s0" in runs and "act=tanh-s0" in runs


def test_reduced_reference_report_names_the_plain_sgd(tmp_path):
    out = tmp_path / "st"
    spec = build_spec(model="lenet5_modern", preset="reference", only=["optimizer"], vary=["optimizer=sgd"],
                      train_subset=64, test_subset=32, epoch_scale=0.1)
    spec.base["val"] = 16
    run_study(spec, out, data=random_cifar(n_train=96, n_test=32, seed=0))
    report = (out / "report.md").read_text()
    assert "Settings that come with a value (and only with it): optimizer=sgd: momentum=0.0." in report
    assert json.loads((out / "runs" / "optimizer=sgd-s0" / "config.json").read_text())["momentum"] == 0.0


def test_bad_factor_and_value_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown factor 'lrate'; valid factors: .*lr.*act"):
        build_spec(model="lenet5_modern", vary=["lrate=1"])
    with pytest.raises(ConfigError, match="optimizer"):
        build_spec(model="lenet5_modern", vary=["optimizer=sgd,nesterov"])
    with pytest.raises(ConfigError, match="act='swish'"):
        build_spec(model="lenet5_modern", vary=["act=relu,swish"])
    assert dict(build_spec(model="lenet5_modern", vary=["batch_size=16,32"]).factors)["batch_size"] == [16, 32]


def test_study_tables_figures_report_and_resume(tmp_path, data):
    spec, out = _spec(), tmp_path / "study"
    first = CountFits(stop_at=3)
    with pytest.raises(TrainingInterrupted):
        run_study(spec, out, data=data, callbacks=[first])
    assert first.fits == 3
    names = [r.name for r in plan(spec)]
    stopped = out / "runs" / names[2]
    assert (stopped / "last.pt").exists() and not (stopped / "summary.json").exists()
    assert Registry().get(str(stopped))["status"] == "interrupted"
    _check_partial_report(out, names)

    again, states = CountFits(), {}
    result = run_study(spec, out, data=data, callbacks=[again],
                       on_run=lambda i, n, run, state: states.setdefault(state, []).append(run.name))
    assert again.fits == 4  # the 3 never started + the interrupted one, resumed
    assert states["skip"] == names[:2] and states["resume"] == [names[2]] and len(states["start"]) == 3
    assert result.skipped == names[:2]
    assert Registry().get(str(stopped))["status"] == "finished"
    _check_tables(out, spec)
    _check_report(out)

    third = CountFits()
    run_study(spec, out, data=data, callbacks=[third])
    assert third.fits == 0  # nothing left to do

    other = build_spec(model="lenet5_modern", vary=["lr=1e-3,3e-3"], sets=TINY, seeds=2)
    with pytest.raises(ConfigError, match="holds a different study"):
        run_study(other, out, data=data)


def _run_values(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    last = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    return {"test_acc": summary["test"]["top1"], "val_acc": last["val_acc"], "train_loss": last["train_loss"],
            "time_s": summary["training_time_s"]}


def _check_tables(out: Path, spec) -> None:
    rows = list(csv.DictReader((out / "tables" / "optimizer.csv").open()))
    assert [r["optimizer"] for r in rows] == ["sgd", "adam"]
    expected_dirs = {"sgd": ["base-s0", "base-s1"], "adam": ["optimizer=adam-s0", "optimizer=adam-s1"]}
    for row in rows:
        values = [_run_values(out / "runs" / d) for d in expected_dirs[row["optimizer"]]]
        assert int(row["n"]) == 2
        for key in ("test_acc", "val_acc", "train_loss", "time_s"):
            xs = [v[key] for v in values]
            assert float(row[f"{key}_mean"]) == pytest.approx(statistics.fmean(xs), abs=1e-5)
            assert float(row[f"{key}_std"]) == pytest.approx(statistics.stdev(xs), abs=1e-5)
    lr_rows = list(csv.DictReader((out / "tables" / "lr.csv").open()))
    assert [r["lr"] for r in lr_rows] == ["0.001", "0.01"]
    # the shared base run serves lr=0.01 too: same numbers as optimizer=sgd
    assert lr_rows[1]["test_acc_mean"] == rows[0]["test_acc_mean"]
    md = (out / "tables" / "lr.md").read_text()
    assert "| 0.001 | 2 |" in md and " ± " in md


def _files(folder: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def _check_partial_report(out: Path, names: list[str]) -> None:
    """A study stopped part-way gets a report of what finished; its run folders are not touched."""
    before = _files(out / "runs")
    write_report(out)
    assert _files(out / "runs") == before
    report = (out / "report.md").read_text()
    assert "Not finished yet" in report and "4 of 6 runs are pending" in report
    assert f"| {names[0]} | 0 | lr=0.001 | finished |" in report and "| base-s0 | 0 | base | finished |" in report
    assert f"| {names[2]} |" in report and "started (1 epoch done; running or stopped)" in report
    assert report.count("| not started |") == 3
    rows = list(csv.DictReader((out / "tables" / "optimizer.csv").open()))
    assert [r["n"] for r in rows] == ["1", "0"]  # base-s0 finished; no adam run yet


def _check_report(out: Path) -> None:
    for name in ("lr", "optimizer", "lr-value", "optimizer-value"):
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size <= 200_000
    report = (out / "report.md").read_text()
    assert "figures/lr.png" in report and "figures/optimizer.png" in report and "tables/lr.csv" in report
    assert "figures/lr-value.png" in report and "Not finished yet" not in report
    page = (out / "report.html").read_text()
    assert '<img src="figures/optimizer.png"' in page and '<img src="figures/lr-value.png"' in page
    assert '<a href="tables/lr.csv">tables/lr.csv</a>' in page and "](tables/" not in page
    assert load_spec(out).seeds == [0, 1]
    # the base row marked (base: lr 0.01, sgd), in the markdown tables and the CSV
    assert "| **sgd** (base) | 2 |" in (out / "tables" / "optimizer.md").read_text()
    assert "| **0.01** (base) | 2 |" in report and "| 0.001 | 2 |" in report
    flags = {r["optimizer"]: r["base"] for r in csv.DictReader((out / "tables" / "optimizer.csv").open())}
    assert flags == {"sgd": "yes", "adam": "no"}
    # every base setting listed, those that differ from the defaults with their default beside
    from cifarlab.training import TrainConfig
    for key in TrainConfig.field_names():
        if key not in ("runs_dir", "name", "progress"):
            assert f"\n| {key} |" in report, key
    assert "| batch_size | **16** | 128 |" in report
    # the command shown rebuilds this very study (the CLI's own parsing)
    _check_command(report, out)


def _check_command(report: str, out: Path) -> None:
    import shlex

    from cifarlab.cli import build_parser
    from cifarlab.cli.study_cmd import spec_from_args
    command = report.split("```\n", 1)[1].split("\n```", 1)[0]
    argv = shlex.split(command)
    assert argv[:2] == ["cifarlab", "study"] and argv[-2:] == ["--out", str(out)]
    assert spec_from_args(build_parser().parse_args(argv[1:])).identity() == load_spec(out).identity()


def test_cli_reduced_reference_preset_reports_reduction_and_reference_numbers(tmp_path, capsys):
    data_dir = write_cifar10_python(tmp_path / "data", per_batch=20, n_test=20).path
    out = tmp_path / "ref"
    # --vary replaces the preset's values of lr; --only drops the other five factors
    args = ["study", "--preset", "reference", "--only", "lr", "--vary", "lr=1e-3,3e-3", "--out", str(out),
            "--set", f"data={data_dir}", "--set", "val=20", "--set", "model=lenet5_modern", "--set", "plots=false",
            "--set", "tensorboard=false", "--epoch-scale", "0.1", "--train-subset", "60", "--quiet"]
    code = main(args)
    assert code == 0, capsys.readouterr().err
    report = (out / "report.md").read_text()
    assert "REDUCED study" in report and "train_subset=60" in report and "epoch_scale=0.1" in report
    assert "reference (Keras, one seed, test set used as validation)" in report
    assert "Changed from the reference preset: model=lenet5_modern" in report
    assert "0.7893" in report  # the §6 lr table's train acc at 1e-3, beside ours
    assert (out / "figures" / "lr-value.png").stat().st_size <= 200_000 and "figures/lr-value.png" in report
    assert "| **0.001** (base) |" in report  # the preset's base lr
    assert '<a href="tables/lr.csv">' in (out / "report.html").read_text()
    assert main(["study", "--report-only", "--out", str(out)]) == 0
    # --epoch-scale cannot be rebuilt from study.json alone: the command as typed (command.txt)
    assert "--epoch-scale 0.1" in report and "--train-subset 60" in report
    lr = list(csv.DictReader((out / "tables" / "lr.csv").open()))
    assert [r["lr"] for r in lr] == ["0.001", "0.003"] and all(r["n"] == "1" for r in lr)
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["base-s0", "lr=0.003-s0"]
    assert main(["study", "--preset", "reference", "--only", "lr,speed"]) == 1
    assert "--only speed: not a factor" in capsys.readouterr().err


def test_a_diverging_run_is_recorded_and_the_study_goes_on(tmp_path, data):
    spec = build_spec(model="lenet5_modern", vary=["lr=1e4,1e-2"],
                      sets={**TINY, "epochs": 1, "optimizer": "sgd", "schedule": "constant"})
    states = {}
    run_study(spec, tmp_path / "s", data=data, on_run=lambda i, n, run, state: states.update({run.name: state}))
    assert states == {"lr=10000-s0": "diverged", "base-s0": "start"}
    assert "loss" in json.loads((tmp_path / "s" / "runs" / "lr=10000-s0" / "diverged.json").read_text())["error"]
    rows = list(csv.DictReader((tmp_path / "s" / "tables" / "lr.csv").open()))
    assert [(r["lr"], r["n"], r["diverged"]) for r in rows] == [("10000", "0", "1"), ("0.01", "1", "0")]
    assert "0 (+1 diverged)" in (tmp_path / "s" / "report.md").read_text()
    again = {}
    run_study(spec, tmp_path / "s", data=data, on_run=lambda i, n, run, state: again.update({run.name: state}))
    assert set(again.values()) == {"skip"}


def test_a_run_its_budget_cannot_hold_is_recorded_and_the_study_goes_on(tmp_path, data):
    from cifarlab.studies.reading import run_states
    spec = build_spec(model="lenet5_modern", vary=["time_budget=0.01,0"], sets={**TINY, "epochs": 1})
    states = {}
    result = run_study(spec, tmp_path / "s", data=data, on_run=lambda i, n, run, state: states.update({run.name: state}))
    assert states == {"time_budget=0.01-s0": "too slow", "base-s0": "start"}  # the refusal did not stop the study
    assert result.too_slow == ["time_budget=0.01-s0"] and result.trained == ["base-s0"]
    refused = json.loads((tmp_path / "s" / "runs" / "time_budget=0.01-s0" / "too_slow.json").read_text())["error"]
    assert "time budget cannot hold" in refused and "\n" not in refused
    runs = plan(spec)
    assert run_states(tmp_path / "s", runs, {})["time_budget=0.01-s0"] == "does not fit its time budget here"
    again = {}
    run_study(spec, tmp_path / "s", data=data, on_run=lambda i, n, run, state: again.update({run.name: state}))
    assert again == {"time_budget=0.01-s0": "too slow", "base-s0": "skip"}  # tried again, the finished one kept


def test_a_timed_run_stopped_half_way_trains_again_and_an_untimed_one_resumes(tmp_path, monkeypatch):
    import cifarlab.training as training
    from cifarlab.studies import run as study_run
    from cifarlab.studies.study import PlannedRun
    calls = []
    monkeypatch.setattr(training, "train", lambda config, **kw: calls.append(("train", config["name"])))
    monkeypatch.setattr(training, "resume", lambda run_dir, **kw: calls.append(("resume", Path(run_dir).name)))
    for name, budget in (("timed", 600.0), ("untimed", 0.0)):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        (folder / "last.pt").write_bytes(b"an epoch's checkpoint")
        run = PlannedRun(name, 0, {}, [], {"time_budget": budget, "model": "lenet5"})
        state = study_run._run_one(run, tmp_path, None, [], False)
        assert state == ("start" if budget else "resume")
    assert calls == [("train", "timed"), ("resume", "untimed")]
    assert not (tmp_path / "runs" / "timed").exists()  # its half-run was removed before training again
    assert (tmp_path / "runs" / "untimed" / "last.pt").exists()


def test_each_run_a_study_trains_is_a_row_of_results_study_csv(tmp_path, data):
    from cifarlab import results
    spec = build_spec(model="lenet5_modern", vary=["lr=1e-3,1e-2"], sets={**TINY, "epochs": 1})
    run_study(spec, tmp_path / "s", data=data)
    rows = {r["run"]: r for r in results.read_rows("study")}  # CIFARLAB_RESULTS: this test's own folder
    assert sorted(rows) == ["base-s0", "lr=0.001-s0"]
    for name, row in rows.items():
        summary = json.loads((tmp_path / "s" / "runs" / name / "summary.json").read_text())
        assert row["test_top1_pct"] == pytest.approx(100 * summary["test"]["top1"], abs=0.005)
        assert row["epochs"] == 1 and row["seed"] == 0 and row["model"] == "lenet5_modern"
        assert row["command"].startswith("cifarlab study") and row["series"].startswith(spec.name + "@")
    assert json.loads(rows["lr=0.001-s0"]["factors"]) == {"lr": 0.001}
    assert results.measured_accuracy("lenet5_modern") is None  # a study's variants are not the model's figure
    run_study(spec, tmp_path / "s", data=data)  # nothing trained again: no new row
    assert len(results.read_rows("study")) == 2


def test_grid_study_has_one_row_per_combination(tmp_path, data):
    spec = build_spec(model="lenet5_modern", vary=["lr=1e-3,1e-2", "act=relu,tanh"], sets={**TINY, "epochs": 1},
                      grid=True)
    run_study(spec, tmp_path / "g", data=data)
    rows = list(csv.DictReader((tmp_path / "g" / "tables" / "grid.csv").open()))
    assert [(r["lr"], r["act"]) for r in rows] == [("0.001", "relu"), ("0.001", "tanh"), ("0.01", "relu"),
                                                  ("0.01", "tanh")]
    # lr=0.01 is the base lr and relu the model's default act: that corner is the base run (names follow the factors, in the order given)
    folders = {"0.01/relu": "base-s0", "0.001/tanh": "lr=0.001,act=tanh-s0"}
    for key, folder in folders.items():
        row = next(r for r in rows if f"{r['lr']}/{r['act']}" == key)
        assert float(row["test_acc_mean"]) == pytest.approx(_run_values(tmp_path / "g" / "runs" / folder)["test_acc"])
    assert "## grid (lr / act)" in (tmp_path / "g" / "report.md").read_text()


def test_a_report_lists_each_machine_a_study_ran_on(tmp_path, data):
    """A study continued on another machine (native bf16 there, float32 here) says which runs
    ran where: its figures then differ by their machine's precision too."""
    spec = build_spec(model="lenet5_modern", vary=["lr=1e-3,1e-2"], sets={**TINY, "epochs": 1})
    out = tmp_path / "s"
    run_study(spec, out, data=data)
    one = (out / "report.md").read_text()
    assert one.count("Hardware: ") == 1 and "kinds of machine" not in one
    summary_path = out / "runs" / "lr=0.001-s0" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["hardware"] = {**summary["hardware"], "cpu": "Other CPU", "bf16_native": True, "amp": True}
    summary_path.write_text(json.dumps(summary))
    text = write_report(out).read_text()
    assert "the runs ran on 2 kinds of machine" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("- ") and "cpu " in ln]
    assert len(lines) == 2
    other = next(ln for ln in lines if "cpu Other CPU" in ln)
    assert "bf16_native True" in other and other.endswith("1 run (lr=0.001-s0)")
    assert next(ln for ln in lines if ln is not other).endswith("1 run (base-s0)")
