"""``cifarlab compare``: the spec (per-model settings as data), a tiny comparison killed and
resumed, its table against the runs' own files, results rows, report and the CLI."""

from __future__ import annotations

import csv
import json
import shlex
import statistics
from pathlib import Path

import pytest

from cifarlab.cli import build_parser, main
from cifarlab.data import random_cifar
from cifarlab.data.synthetic import write_cifar10_python
from test_study import CountFits  # noqa: E402 (tests/ is on sys.path, as for conftest)
from cifarlab.training import TrainingInterrupted
from cifarlab.errors import ConfigError, ModelError
from cifarlab.runlog import Registry
from cifarlab.studies import load_spec, plan, write_report
from cifarlab.studies.compare import CPU_COMMON, CPU_MODEL_SETTINGS, WRITEUP_MODELS, build_compare_spec
from cifarlab.studies.compare_run import run_compare

TINY = {"epochs": 2, "resolutions": "", "device": "cpu", "tensorboard": False, "plots": False}


@pytest.fixture()
def results_dir(tmp_path, monkeypatch):
    folder = tmp_path / "results"
    monkeypatch.setenv("CIFARLAB_RESULTS", str(folder))
    return folder


StopAt = CountFits  # one Ctrl-C-after-epoch-1 callback for the study and comparison tests


def test_default_spec_is_the_writeups_five_with_their_own_settings_and_a_budget():
    spec = build_compare_spec()
    runs = plan(spec)
    assert [r.name for r in runs] == [f"{m}-s0" for m in WRITEUP_MODELS]
    configs = {r.config["model"]: r.config for r in runs}
    for model, config in configs.items():
        assert config["time_budget"] == 600.0 and config["budget_fallback"] == ""
        assert config["amp"] and config["channels_last"]
        for key, value in {**CPU_COMMON, **CPU_MODEL_SETTINGS[model]}.items():
            assert config[key] == value, (model, key)
    assert configs["lenet5"]["optimizer"] == "adam" and configs["resnet18"]["optimizer"] == "sgd"
    assert configs["resnet18"]["resolutions"] == "16:2" and configs["alexnet"]["resolutions"] == ""
    assert build_compare_spec().identity() == spec.identity()  # rebuilt alike: the folder resumes
    # --set applies to every model over its own settings; seeds count up from the base seed
    two = build_compare_spec(["lenet5", "resnet18"], sets={"batch_size": 64, "seed": 5}, seeds=2, time_budget=120)
    assert {(r.config["model"], r.config["batch_size"], r.seed) for r in plan(two)} == {
        ("lenet5", 64, 5), ("resnet18", 64, 5), ("lenet5", 64, 6), ("resnet18", 64, 6)}
    assert all(r.config["time_budget"] == 120 for r in plan(two))


def test_reference_settings_are_the_writeups_for_every_model():
    spec = build_compare_spec(["lenet5", "vgg16_faithful"], settings="reference", time_budget=0)
    for run in plan(spec):
        c = run.config
        assert (c["optimizer"], c["lr"], c["batch_size"], c["augment"], c["schedule"], c["epochs"],
                c["label_smoothing"], c["time_budget"]) == ("adam", 1e-3, 32, "none", "constant", 10, 0.0, 0.0)
    assert spec.name.endswith("-reference")


@pytest.mark.slow
def test_every_low_resolution_setting_is_a_size_its_model_takes():
    """resolutions only for models without a fixed-size flatten: a forward pass at each side."""
    import torch

    from cifarlab.data.loader import parse_resolutions
    from cifarlab.models import create_model
    for model, settings in CPU_MODEL_SETTINGS.items():
        for side, _ in parse_resolutions(settings.get("resolutions", "")):
            net = create_model(model).eval()
            with torch.no_grad():
                assert net(torch.zeros(1, 3, side, side)).shape == (1, 10), (model, side)


def test_bad_input_is_one_clear_error():
    with pytest.raises(ModelError, match="unknown model 'resnet19'"):
        build_compare_spec(["lenet5", "resnet19"])
    with pytest.raises(ConfigError, match="--models names no model"):
        build_compare_spec([" "])
    with pytest.raises(ConfigError, match="use --models"):
        build_compare_spec(sets={"model": "lenet5"})
    with pytest.raises(ConfigError, match="batch_size"):
        build_compare_spec(sets={"batch_size": "many"})
    with pytest.raises(ConfigError, match="--seeds 0"):
        build_compare_spec(seeds=0)


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_compare_killed_resumed_table_results_and_report(tmp_path, results_dir):
    data = random_cifar(n_train=64, n_test=32, val=32, seed=1)
    spec = build_compare_spec(["lenet5", "googlenet_small"], time_budget=0, seeds=2, sets=TINY)
    out = tmp_path / "cmp"
    names = [r.name for r in plan(spec)]
    assert names == ["lenet5-s0", "googlenet_small-s0", "lenet5-s1", "googlenet_small-s1"]
    first = StopAt(stop_at=2)
    with pytest.raises(TrainingInterrupted):
        run_compare(spec, out, data=data, callbacks=[first])
    stopped = out / "runs" / names[1]
    assert (stopped / "last.pt").exists() and not (stopped / "summary.json").exists()
    rows = list(csv.DictReader((results_dir / "compare.csv").open()))
    assert [r["model"] for r in rows] == ["lenet5"]  # the finished run only

    write_report(out)  # a comparison part-way: what finished, the rest listed
    partial = (out / "report.md").read_text()
    assert "**Not finished yet**: 1 of 4 runs finished" in partial
    assert "| googlenet_small-s0 | googlenet_small | 0 | started (1 epoch done; running or stopped) |" in partial

    states = {}
    again = StopAt()
    run_compare(spec, out, data=data, callbacks=[again], on_run=lambda i, n, r, s: states.update({r.name: s}))
    assert states == {"lenet5-s0": "skip", "googlenet_small-s0": "resume", "lenet5-s1": "start",
                      "googlenet_small-s1": "start"}
    assert again.fits == 3 and Registry().get(str(stopped))["status"] == "finished"

    # results/compare.csv: one row per finished run, none twice, each the run's own numbers
    rows = list(csv.DictReader((results_dir / "compare.csv").open()))
    assert sorted((r["model"], r["seed"]) for r in rows) == sorted(
        [("lenet5", "0"), ("googlenet_small", "0"), ("lenet5", "1"), ("googlenet_small", "1")])
    for r in rows:
        s = _summary(out / "runs" / f"{r['model']}-s{r['seed']}")
        assert float(r["test_top1_pct"]) == pytest.approx(100 * s["test"]["top1"], abs=0.006)
        assert r["recipe"] == "compare:cpu" and r["command"].startswith("cifarlab compare --models lenet5,")
    assert len({r["series"] for r in rows}) == 1

    # the table: mean and sample std of each model's two seeds, from their summary.json
    table = {r["model"]: r for r in csv.DictReader((out / "tables" / "compare.csv").open())}
    for model in ("lenet5", "googlenet_small"):
        tops = [_summary(out / "runs" / f"{model}-s{s}")["test"]["top1"] for s in (0, 1)]
        assert float(table[model]["top1_mean"]) == pytest.approx(statistics.fmean(tops), abs=1e-6)
        assert float(table[model]["top1_std"]) == pytest.approx(statistics.stdev(tops), abs=1e-6)
        assert table[model]["n"] == "2" and float(table[model]["epochs_mean"]) == 2.0
    from cifarlab.models import count_params, create_model, model_info
    p = count_params(create_model("googlenet_small"))
    assert int(table["googlenet_small"]["params"]) == p.trainable + p.non_trainable
    assert float(table["lenet5"]["writeup"]) == model_info("lenet5").ref_accuracy == 0.52

    report = (out / "report.md").read_text()
    assert "Not finished yet" not in report and "| lenet5 | 62,006 |" in report and "≈52%" in report
    for fig in ("accuracy", "curves"):
        png = out / "figures" / f"{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size <= 200_000
    page = (out / "report.html").read_text()
    assert '<img src="figures/accuracy.png"' in page and '<a href="tables/compare.csv">' in page
    # the command shown builds this same comparison through the CLI's own parsing
    command = shlex.split(report.split("```\n", 1)[1].split("\n```", 1)[0])
    args = build_parser().parse_args(command[1:])
    from cifarlab.cli.train_cmd import parse_set
    rebuilt = build_compare_spec(args.models.split(","), time_budget=args.time_budget, seeds=args.seeds,
                                 settings=args.settings, sets=parse_set(args.set_values), name=args.name)
    assert rebuilt.identity() == load_spec(out).identity()

    with pytest.raises(ConfigError, match="holds a different study"):
        run_compare(build_compare_spec(["lenet5", "googlenet_small"], time_budget=0, seeds=2,
                                       sets={**TINY, "epochs": 3}, name=spec.name), out, data=data)


@pytest.mark.slow
def test_cli_compare_report_only_and_errors(tmp_path, results_dir, capsys):
    data_dir = write_cifar10_python(tmp_path / "data", per_batch=20, n_test=20).path
    out = tmp_path / "c"
    args = ["compare", "--models", "lenet5", "--time-budget", "0", "--set", "epochs=1", "--set", f"data={data_dir}",
            "--set", "val=20", "--set", "plots=false", "--set", "tensorboard=false", "--train-subset", "60",
            "--quiet", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    report = (out / "report.md").read_text()
    assert "REDUCED comparison" in report and "train_subset=60" in report
    assert [p.name for p in (out / "runs").iterdir()] == ["lenet5-s0"]
    (out / "report.md").unlink()
    assert main(["compare", "--report-only", "--out", str(out)]) == 0 and (out / "report.md").exists()
    assert main(["study", "--report-only", "--out", str(out)]) == 0  # the study command knows it too
    capsys.readouterr()
    assert main(["compare", "--models", "lenet5,nosuchnet"]) == 1
    assert "cifarlab: error: unknown model 'nosuchnet'" in capsys.readouterr().err
    assert main(["compare", "--report-only"]) == 1
    assert "--report-only needs --out" in capsys.readouterr().err
    assert main(["compare", "--list-settings"]) == 0
    listing = capsys.readouterr().out
    assert all(f"{m}: " in listing for m in WRITEUP_MODELS) and "time_budget=600.0" in listing


@pytest.mark.slow
def test_two_workers_share_a_comparison_over_storage(tmp_path, results_dir):
    """--storage as in `study`: each run trained once whichever worker asks; each row once."""
    data = random_cifar(n_train=32, n_test=16, val=16, seed=2)
    spec = build_compare_spec(["lenet5", "lenet5_modern"], time_budget=0, sets={**TINY, "epochs": 1})
    storage, out = f"sqlite:///{tmp_path / 'claims.db'}", tmp_path / "shared"
    taken = {}
    first = run_compare(spec, out, data=data, storage=storage, heartbeat=1,
                        on_run=lambda i, n, r, s: taken.update({r.name: s}))
    second = run_compare(spec, out, data=data, storage=storage, heartbeat=1)
    assert taken == {"lenet5-s0": "start", "lenet5_modern-s0": "start"}
    assert second.trained == [] and sorted(second.elsewhere + second.skipped) == ["lenet5-s0", "lenet5_modern-s0"]
    rows = list(csv.DictReader((results_dir / "compare.csv").open()))
    assert sorted(r["model"] for r in rows) == ["lenet5", "lenet5_modern"]
    assert first.waiting == [] and (out / "report.html").exists()
