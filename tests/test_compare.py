"""``cifarlab compare``: the spec (per-model settings as data), a tiny comparison killed and
resumed, its table against the runs' own files, results rows, report and the CLI."""

from __future__ import annotations

import csv
import json
import shlex
import statistics
from pathlib import Path

import numpy as np
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
def test_a_model_its_budget_cannot_hold_gets_a_row_saying_what_budget_it_needs(tmp_path, results_dir):
    """A 0.01-s budget holds no model: the comparison goes on, and results/compare.csv gets a row
    without an accuracy whose needs_s is the budget the refusal names (--time-budget N or more)."""
    import re
    data = random_cifar(n_train=64, n_test=32, val=32, seed=1)
    spec = build_compare_spec(["lenet5"], time_budget=0.01, seeds=1, sets=TINY)
    states = {}
    run_compare(spec, tmp_path / "cmp", data=data, trust=False, on_run=lambda i, n, r, s: states.update({r.name: s}))
    assert states == {"lenet5-s0": "too slow"}
    refused = json.loads((tmp_path / "cmp" / "runs" / "lenet5-s0" / "too_slow.json").read_text())
    named = int(re.search(r"give --time-budget (\d+) or more", refused["error"]).group(1))
    rows = list(csv.DictReader((results_dir / "compare.csv").open()))
    assert len(rows) == 1 and rows[0]["model"] == "lenet5" and rows[0]["test_top1_pct"] == ""
    assert float(rows[0]["needs_s"]) == refused["needs_s"] == named > 0.01
    assert rows[0]["machine"] and rows[0]["series"].startswith(spec.name + "@")
    report = (tmp_path / "cmp" / "report.md").read_text()  # refused, not pending: the comparison is done
    assert "Not finished yet" not in report and "1 of 1 runs do not fit their time budget on this machine (lenet5)" in report


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
    trust = out / "runs" / "lenet5-s0" / "trust.json"
    assert json.loads(trust.read_text())["robustness"]["n"] == 20  # measured after training: all 20 < 1000
    (out / "report.md").unlink()
    assert main(["compare", "--report-only", "--out", str(out)]) == 0 and (out / "report.md").exists()
    trust.unlink()
    assert main(["compare", "--report-only", "--no-trust", "--out", str(out)]) == 0 and not trust.exists()
    assert "| not\u00a0measured | not\u00a0measured | not\u00a0measured |" in (out / "report.md").read_text()
    assert main(["compare", "--report-only", "--trust-images", "8", "--out", str(out)]) == 0
    assert json.loads(trust.read_text())["robustness"]["n"] == 8
    assert "not\u00a0measured" not in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(["compare", "--report-only", "--trust-images", "0", "--out", str(out)]) == 1
    assert "cifarlab: error: --trust-images 0 must be at least 1" in capsys.readouterr().err
    trust.unlink()  # the data gone: each run says why it is not measured, the report is still written
    Path(data_dir).rename(tmp_path / "moved")
    assert main(["compare", "--report-only", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "trust lenet5-s0: not measured:" in err and "does not exist" in err and "Traceback" not in err
    assert "| not\u00a0measured | not\u00a0measured | not\u00a0measured |" in (out / "report.md").read_text()
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


# ---------------------------------------------------------------- calibration and robustness (trust)
def _normalized(images, norm) -> "torch.Tensor":
    """uint8 NHWC -> float32 NCHW normalized as the checkpoint says, with numpy (not the loader)."""
    import torch
    x = images.astype(np.float64) / 255.0
    x = (x - np.array(norm["mean"])) / np.array(norm["std"])
    return torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))


def _logits(model, images, norm) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model(_normalized(images, norm)).double().numpy()


def _np_softmax(z, t=1.0):
    z = z / t
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _np_ece_mce(p, y, bins=15):
    """ECE and MCE over 15 equal-width bins (lo, hi], written out with numpy."""
    conf, right = p.max(1), (p.argmax(1) == y)
    ece, mce = 0.0, 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if inside.any():
            gap = abs(right[inside].mean() - conf[inside].mean())
            ece += inside.mean() * gap
            mce = max(mce, gap)
    return ece, mce


def _np_nll(z, y, t=1.0):
    return float(-np.log(_np_softmax(z, t)[np.arange(len(y)), y]).mean())


@pytest.mark.slow
def test_trust_numbers_match_a_numpy_reference_and_are_cached(tmp_path, results_dir):
    """trust.json against numbers recomputed here: logits by a plain forward pass on numpy-normalized
    pictures, ECE/MCE/NLL with numpy, T a minimum of the validation NLL, the contrast corruption
    written out with numpy; then the cache: reused, kept across a copy (new mtime, same bytes),
    measured again for other options or other weights."""
    import os

    from cifarlab.inference.checkpoint import load_model
    from cifarlab.studies.compare_trust import TRUST_FILE, ensure_trust, read_trust, trust_options
    from cifarlab.training.calibrate import store_in_checkpoint
    data = random_cifar(n_train=96, n_test=60, val=40, seed=4)
    spec = build_compare_spec(["lenet5"], time_budget=0, sets={**TINY, "epochs": 1})
    out = tmp_path / "cmp"
    options = trust_options(images=24, seed=3)
    heard = []
    run_compare(spec, out, data=data, trust=options, on_trust=lambda name, text: heard.append((name, text)))
    run_dir = out / "runs" / "lenet5-s0"
    trust = json.loads((run_dir / TRUST_FILE).read_text())
    assert heard and heard[-1][0] == "lenet5-s0" and "ECE" in heard[-1][1]

    model, meta = load_model(run_dir / "best.pt")
    norm = meta["normalize"]
    z, y = _logits(model, data.test.images, norm), np.asarray(data.test.labels)
    cal = trust["calibration"]
    assert cal["fitted_on"] == "val" and cal["before"]["n"] == len(y) == 60
    ece, mce = _np_ece_mce(_np_softmax(z), y)
    assert cal["before"]["ece"] == pytest.approx(ece, abs=1e-5) and cal["before"]["mce"] == pytest.approx(mce, abs=1e-5)
    assert cal["before"]["nll"] == pytest.approx(_np_nll(z, y), abs=1e-5)
    t = cal["temperature"]
    ece_t, mce_t = _np_ece_mce(_np_softmax(z, t), y)
    assert cal["after"]["ece"] == pytest.approx(ece_t, abs=1e-5) and cal["after"]["mce"] == pytest.approx(mce_t, abs=1e-5)
    assert cal["after"]["nll"] == pytest.approx(_np_nll(z, y, t), abs=1e-5)
    zv, yv = _logits(model, data.val.images, norm), np.asarray(data.val.labels)
    if 0.05 < t < 20:  # inside fit_temperature's clamp: a minimum of the validation NLL
        assert _np_nll(zv, yv, t) <= min(_np_nll(zv, yv, t * 1.05), _np_nll(zv, yv, t / 1.05)) + 1e-9

    rob = trust["robustness"]
    assert rob["n"] == 24 and rob["kinds"] == options["kinds"] and rob["severities"] == [1, 2, 3, 4, 5]
    assert rob["precision"] == "float32"  # as the report says, on every CPU
    keep = np.sort(np.random.default_rng(3).choice(60, size=24, replace=False))  # the seeded subset
    imgs, labels = data.test.images[keep], y[keep]
    assert rob["clean_accuracy"] == pytest.approx((_logits(model, imgs, norm).argmax(1) == labels).mean())
    for severity, c in zip((1, 3, 5), (0.75, 0.4, 0.15)):  # CIFAR-10-C's contrast: (x - mean) * c + mean
        x = imgs.astype(np.float64) / 255
        m = x.mean(axis=(1, 2), keepdims=True)
        corrupted = np.clip(np.round(255 * np.clip((x - m) * c + m, 0, 1)), 0, 255).astype(np.uint8)
        acc = (_logits(model, corrupted, norm).argmax(1) == labels).mean()
        assert abs(rob["accuracy"]["contrast"][severity - 1] - acc) <= 1 / 24 + 1e-9  # a pixel's rounding at most
    every = [a for k in rob["kinds"] for a in rob["accuracy"][k]]
    assert len(every) == 50 and rob["mean_corruption_accuracy"] == pytest.approx(statistics.fmean(every))
    assert rob["relative_drop"] == pytest.approx((rob["clean_accuracy"] - statistics.fmean(every)) / rob["clean_accuracy"])
    assert trust["seconds"]["total"] >= trust["seconds"]["calibration"] > 0

    # the row: the trust columns of this measurement
    row = next(csv.DictReader((results_dir / "compare.csv").open()))
    assert float(row["ece_raw_pct"]) == pytest.approx(100 * ece, abs=0.006)
    assert float(row["corrupt_mean_pct"]) == pytest.approx(100 * rob["mean_corruption_accuracy"], abs=0.006)

    # the cache: reused; a copied checkpoint (new mtime, same bytes) keeps it; other options or weights do not
    stamp = (run_dir / TRUST_FILE).stat().st_mtime_ns
    assert ensure_trust(out, spec, data=data, options=options) == {"lenet5-s0": "cached"}
    os.utime(run_dir / "best.pt", ns=(stamp + 10**9, stamp + 10**9))
    assert read_trust(run_dir) is not None and ensure_trust(out, spec, data=data, options=options) == {
        "lenet5-s0": "cached"}
    assert (run_dir / TRUST_FILE).stat().st_mtime_ns == stamp
    assert ensure_trust(out, spec, data=data, options=trust_options(images=12, seed=3)) == {"lenet5-s0": "measured"}
    assert json.loads((run_dir / TRUST_FILE).read_text())["robustness"]["n"] == 12
    store_in_checkpoint(run_dir / "best.pt", {"temperature": 2.0})  # other bytes: the measurement is stale
    assert read_trust(run_dir) is None
    write_report(out)
    assert "| lenet5 |" in (out / "report.md").read_text() and "not\u00a0measured" in (out / "report.md").read_text()


def _fake_run(out: Path, name: str, top1: float, trust: dict | None = None) -> None:
    """A finished run folder as the report reads it: summary.json, a checkpoint's bytes and,
    with ``trust``, a trust.json keyed to those bytes."""
    from cifarlab.studies.compare_trust import TRUST_FILE, TRUST_VERSION
    run_dir = out / "runs" / name
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"test": {"top1": top1}, "epochs_run": 2, "wall_time_s": 60.0}))
    (run_dir / "best.pt").write_bytes(name.encode() * 10)
    if trust is None:
        return
    st = (run_dir / "best.pt").stat()
    kinds = ["contrast", "fog"]
    bins = [{"lo": 0.6, "hi": 2 / 3, "count": 40, "confidence": 0.63, "accuracy": 0.5}]
    full = {"version": TRUST_VERSION, "device": "cpu, 2 threads",
            "key": {"checkpoint": "best.pt", "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": "-"},
            "calibration": {"temperature": trust["t"], "fitted_on": "val",
                            "before": {"ece": trust["ece"][0], "mce": 0.2, "nll": 1.5, "n": 100, "bins": bins},
                            "after": {"ece": trust["ece"][1], "mce": 0.1, "nll": 1.2, "n": 100, "bins": bins}},
            "robustness": {"n": 50, "kinds": kinds, "severities": [1, 2, 3, 4, 5],
                           "accuracy": {k: [trust["corrupt"]] * 5 for k in kinds},
                           "clean_accuracy": trust["clean"], "mean_corruption_accuracy": trust["corrupt"],
                           "relative_drop": (trust["clean"] - trust["corrupt"]) / trust["clean"]},
            "seconds": {"calibration": 1.0, "corruptions": 9.0, "total": 10.0}}
    (run_dir / TRUST_FILE).write_text(json.dumps(full))


@pytest.mark.slow
def test_report_shows_trust_beside_accuracy_and_says_not_measured(tmp_path, results_dir):
    """The table's trust columns are each model's mean ± std over the seeds measured (recomputed
    here); a seed without trust.json is counted, a model without any says "not measured"; the
    rows of results/compare.csv gain the columns and an older row stays readable."""
    from cifarlab import results
    from cifarlab.studies.compare import record_run, record_trust
    from cifarlab.studies.study import open_study
    spec = build_compare_spec(["lenet5", "alexnet"], time_budget=0, seeds=3, sets=TINY)
    out = tmp_path / "c"
    open_study(out, spec)
    write_report(out)  # nothing finished: no trust section numbers, no crash
    assert "No run has finished yet" in (out / "report.md").read_text()
    trusts = [{"t": 1.4, "ece": (0.08, 0.02), "clean": 0.60, "corrupt": 0.45},
              {"t": 1.6, "ece": (0.10, 0.03), "clean": 0.62, "corrupt": 0.50}]
    _fake_run(out, "lenet5-s0", 0.55, trusts[0])
    _fake_run(out, "lenet5-s1", 0.57, trusts[1])
    _fake_run(out, "lenet5-s2", 0.56)  # finished, not measured
    _fake_run(out, "alexnet-s0", 0.70)
    write_report(out)
    report = (out / "report.md").read_text().replace("\u00a0", " ")  # cells keep "9.00 ± 1.41%" on one line
    table = report.split("## Results", 1)[1].split("\n\n", 2)[1]
    head = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")]
             for line in table.splitlines()[2:]}
    assert head[-3:] == ["ECE raw → scaled", "corrupted accuracy", "relative drop"]

    def pm(xs, digits):
        return f"{100 * statistics.fmean(xs):.{digits}f} ± {100 * statistics.stdev(xs):.{digits}f}%"
    ece = pm([0.08, 0.10], 2) + " → " + pm([0.02, 0.03], 2)
    drops = [(t["clean"] - t["corrupt"]) / t["clean"] for t in trusts]
    assert cells["lenet5"][-3:] == [f"{ece} (2 of 3 seeds)", pm([0.45, 0.50], 1) + " (2 of 3 seeds)",
                                    pm(drops, 1) + " (2 of 3 seeds)"]
    assert cells["alexnet"][-3:] == ["not measured"] * 3
    assert "Not measured yet for every seed of lenet5, alexnet" in report and "--report-only --out" in report
    assert "| lenet5 | 2 of 3 | 1.500 ± 0.141 |" in report  # the detail table: T's mean ± std
    for fig in ("trust", "reliability"):
        png = out / "figures" / f"{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size <= 200_000
        assert f'<img src="figures/{fig}.png"' in (out / "report.html").read_text()
    rows = {r["model"]: r for r in csv.DictReader((out / "tables" / "compare.csv").open())}
    assert float(rows["lenet5"]["corrupt_mean"]) == pytest.approx(0.475)
    assert float(rows["lenet5"]["ece_scaled_std"]) == pytest.approx(statistics.stdev([0.02, 0.03]), abs=1e-6)
    assert rows["alexnet"]["trust_n"] == "0" and rows["alexnet"]["ece_raw_mean"] == ""

    # results/compare.csv: an older row (no trust columns) stays readable when the header grows
    results.append_row("compare", {"machine": "old", "seed": 9, "model": "lenet5", "test_top1_pct": 50.0})
    runs = {r.name: r for r in plan(spec)}
    record_run(out, spec, runs["lenet5-s0"])
    record_trust(out, spec, runs["lenet5-s1"])
    old, full, trust_only = results.read_rows("compare")
    assert old["machine"] == "old" and old["test_top1_pct"] == 50.0 and old["ece_raw_pct"] is None
    assert full["test_top1_pct"] == 55.0 and full["ece_raw_pct"] == 8.0 and full["corrupt_mean_pct"] == 45.0
    assert trust_only["test_top1_pct"] is None and trust_only["ece_scaled_pct"] == 3.0 and trust_only["seed"] == 1
    assert results.measured_accuracy("lenet5")["n"] == 1  # the trust row adds no accuracy to any reader
    assert record_trust(out, spec, runs["lenet5-s2"]) is None  # nothing measured: no row


def test_cross_fitted_calibration_for_a_run_without_a_validation_split():
    """A run with val=0: each test half scaled by the other half's T. On overconfident logits
    (right 70% of the time, sure of nearly every answer) both folds find T > 1 and the ECE falls;
    the raw ECE is the numpy reference's."""
    from cifarlab.errors import CifarlabError
    from cifarlab.training.calibrate import cross_fitted_report
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 2000)
    said = np.where(rng.random(2000) < 0.7, y, rng.integers(0, 10, 2000))
    z = 8.0 * np.eye(10)[said] + rng.normal(0, 1, (2000, 10))
    rep = cross_fitted_report((z, y), seed=1)
    assert "cross-fitted" in rep["fitted_on"] and rep["before"]["n"] == rep["after"]["n"] == 2000
    assert rep["before"]["ece"] == pytest.approx(_np_ece_mce(_np_softmax(z), y)[0], abs=1e-9)
    assert all(t > 1.5 for t in rep["fold_temperatures"])
    assert rep["temperature"] == pytest.approx(statistics.fmean(rep["fold_temperatures"]))
    assert rep["after"]["ece"] < rep["before"]["ece"] / 3 and rep["after"]["nll"] < rep["before"]["nll"]
    with pytest.raises(CifarlabError, match="at least two test pictures"):
        cross_fitted_report((z[:1], y[:1]))
