"""Model cards (cifarlab.modelcard): confused pairs by hand, a card built from a run's files."""

from __future__ import annotations

import json

import numpy as np

from cifarlab.modelcard import build_card, confused_pairs, read_confusion_csv, render_markdown, write_run_card

CLASSES = ["cat", "dog", "ship"]


def test_confused_pairs_sum_both_directions():
    conf = np.array([[50, 7, 1],
                     [9, 40, 0],
                     [2, 0, 60]])
    pairs = confused_pairs(conf, CLASSES, k=5)
    # cat/dog 7+9=16, cat/ship 1+2=3, dog/ship 0: left out
    assert [(p["a"], p["b"], p["count"], p["a_as_b"], p["b_as_a"]) for p in pairs] == [
        ("cat", "dog", 16, 7, 9), ("cat", "ship", 3, 1, 2)]
    assert len(confused_pairs(conf, CLASSES, k=1)) == 1


def _run_folder(tmp_path, with_corruptions=False):
    run = tmp_path / "resnet20-x"
    run.mkdir()
    summary = {"run_dir": str(run), "model": "resnet20", "recipe": "cpu-2min", "epochs_run": 3, "epochs_planned": 3,
               "steps_run": 120, "training_time_s": 61.5, "params": {"trainable": 272474, "non_trainable": 0},
               "test": {"n": 62, "top1": 0.75, "top5": 1.0, "tta": "none",
                        "per_class": {"cat": 0.6, "dog": 0.7, "ship": 0.9}},
               "data": {"source": "cifar10.tar.gz", "counts": {"train": 500, "val": 50, "test": 62}}}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "confusion.csv").write_text("true\\predicted,cat,dog,ship\ncat,12,6,2\ndog,5,14,1\nship,0,1,21\n")
    (run / "calibration.json").write_text(json.dumps({
        "n_bins": 15, "temperature": 1.4, "before": {"ece": 0.081, "mce": 0.2}, "after": {"ece": 0.012, "mce": 0.05}}))
    if with_corruptions:
        (run / "corruptions.json").write_text(json.dumps({
            "clean_accuracy": 0.75, "mean_corruption_accuracy": 0.5, "relative_drop": 1 / 3,
            "kinds": ["fog", "contrast"], "severities": [1, 2, 3, 4, 5]}))
    return run


def test_run_card_from_the_run_files(tmp_path):
    run = _run_folder(tmp_path)
    conf, classes = read_confusion_csv(run / "confusion.csv")
    assert classes == CLASSES and conf[0, 1] == 6
    paths = write_run_card(run)
    card = json.loads((run / "model_card.json").read_text())
    assert [p.name for p in paths] == ["model_card.json", "model_card.md"]
    assert card["accuracy"]["top1"] == 0.75 and card["per_class"]["ship"] == 0.9
    assert card["confused_pairs"][0] == {"a": "cat", "b": "dog", "count": 11, "a_as_b": 6, "b_as_a": 5}
    assert card["calibration"]["ece_before"] == 0.081 and card["calibration"]["ece_after"] == 0.012
    assert card["robustness"] is None
    md = (run / "model_card.md").read_text()
    assert "top-1 75.00%" in md and "8.10% raw, 1.20% after temperature scaling (T = 1.400" in md
    assert "cat / dog | 11" in md and "not measured yet" in md and "train 500, val 50, test 62" in md


def test_card_shows_robustness_once_measured(tmp_path):
    run = _run_folder(tmp_path, with_corruptions=True)
    write_run_card(run)
    md = (run / "model_card.md").read_text()
    assert "Mean corruption accuracy 50.00% over 2 kinds x 5 severities, against 75.00% clean" in md


def test_card_without_measurements_says_so():
    card = build_card({"model": "vgg11", "test": {}})
    md = render_markdown(card)
    assert card["calibration"] is None and "## Calibration (test split)\n\nnot measured." in md


# ---------------------------------------------------------------- checkpoint files (the shipped models)
import csv  # noqa: E402
import hashlib  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from conftest import need  # noqa: E402

from cifarlab import modelcard, results  # noqa: E402
from cifarlab.calibration import file_sha256, read_sidecar, write_sidecar  # noqa: E402
from cifarlab.inference.checkpoint import load_checkpoint  # noqa: E402
from cifarlab.shipped import shipped_models  # noqa: E402

from _checkpoints import write_checkpoint  # noqa: E402

CHECKOUT_RESULTS = Path(__file__).resolve().parents[1] / "results"


def _card(path, name, folder=None):
    return modelcard.card_for(path, name, load_meta=load_checkpoint, read_sidecar=read_sidecar, sha256=file_sha256,
                              read_rows=lambda kind: results.read_rows(kind, folder))


def _csv_rows(path: Path, sha: str) -> list[dict]:
    """The rows of a results CSV naming the file ``sha`` (read with csv, not cifarlab.results)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("checkpoint_sha256") and sha.startswith(r["checkpoint_sha256"])]


@pytest.mark.parametrize("name", sorted(shipped_models()) or ["default"])
def test_a_shipped_models_card_holds_the_figures_of_its_sources(name):
    """Every figure on a shipped model's card, against its source read another way: the file
    itself with torch.load, its sidecar as JSON tied by hashlib's SHA-256, the results/ rows
    with the csv module."""
    need(name in shipped_models(), "no model file in src/cifarlab/assets (a checkout that never packaged one)")
    path = shipped_models()[name]
    card = _card(path, name, CHECKOUT_RESULTS)
    md = modelcard.render_markdown(card)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert card["name"] == name and card["model"] == raw["model"]["name"] and card["kind"] == "checkpoint"
    test = raw.get("test") or {}
    assert card["accuracy"]["top1"] == test.get("top1") and card["accuracy"]["top5"] == test.get("top5")
    assert card["accuracy"]["n"] == test.get("n")
    if test.get("top1") is not None:
        assert f"top-1 {test['top1']:.2%}" in md
    if not test.get("per_class"):
        assert card["per_class"] is None and "Per-class accuracy: not measured for this file" in md
    prov = raw.get("provenance") or {}
    assert card["training"]["training_time_s"] == prov.get("training_time_s")
    assert card["training"]["epochs_run"] == raw.get("epoch")
    limit = (((raw.get("plan") or {}).get("budget") or {}).get("budget_s")
             or (raw.get("config") or {}).get("time_budget"))
    assert (card["training"]["time_budget"] or {}).get("budget_s") == limit
    assert ("time budget" in md) == bool(limit)
    side_file = path.with_name(path.stem + ".calibration.json")
    side = json.loads(side_file.read_text()) if side_file.is_file() else {}
    temperature = (raw.get("calibration") or {}).get("temperature") or (
        side.get("temperature") if side.get("checkpoint_sha256") == sha else None)
    cal = card["calibration"] or {}
    assert cal.get("temperature") == temperature
    rows = _csv_rows(CHECKOUT_RESULTS / "calibration.csv", sha)
    if rows:
        row = rows[-1]
        assert cal["ece_before"] == pytest.approx(float(row["ece_raw_pct"]) / 100, abs=1e-9)
        assert cal["mce_before"] == pytest.approx(float(row["mce_raw_pct"]) / 100, abs=1e-9)
        if temperature is not None and abs(float(row["temperature"]) - temperature) < 1e-3:
            assert cal["ece_after"] == pytest.approx(float(row["ece_after_pct"]) / 100, abs=1e-9)
            assert f"{float(row['ece_after_pct']):.2f}% after temperature scaling" in md
        assert f"{float(row['ece_raw_pct']):.2f}% raw" in md
    else:
        assert cal.get("ece_before") is None
        assert "calibration error was not measured" in md or "## Calibration (test split)\n\nnot measured." in md
    corr = _csv_rows(CHECKOUT_RESULTS / "corruptions.csv", sha)
    if corr:
        mean = float(corr[-1]["mean_corruption_pct"]) / 100
        assert card["robustness"]["mean_corruption_accuracy"] == pytest.approx(mean, abs=1e-9)
        assert f"Mean corruption accuracy {mean:.2%}" in md
    else:
        assert card["robustness"] is None and f"not measured yet: run `cifarlab evaluate {name} --data PATH " \
                                                 f"--corruptions`" in md


@pytest.mark.parametrize("name", sorted(shipped_models()) or ["default"])
def test_an_installed_package_without_results_still_shows_the_measured_figures(name):
    """The card the apps show (``catalog.model_card``) where no results/ folder exists, as for an
    installed wheel (CIFARLAB_RESULTS: this test's own empty folder): the calibration error and the
    robustness of the shipped file come from the rows packaged beside it, and equal the last rows
    naming the file in the checkout's results/, read with the csv module."""
    need(name in shipped_models(), "no model file in src/cifarlab/assets (a checkout that never packaged one)")
    from cifarlab.catalog import model_card
    path = shipped_models()[name]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert results.read_rows("calibration") == [] and results.read_rows("corruptions") == []
    card = model_card(str(path), name)
    cal, corr = (_csv_rows(CHECKOUT_RESULTS / f"{k}.csv", sha) for k in ("calibration", "corruptions"))
    if name == "default":
        assert cal and corr, "the shipped default was measured: its rows belong in results/"
    if cal:
        assert card["calibration"]["ece_before"] == pytest.approx(float(cal[-1]["ece_raw_pct"]) / 100, abs=1e-9)
        assert card["calibration"]["ece_after"] == pytest.approx(float(cal[-1]["ece_after_pct"]) / 100, abs=1e-9)
    if corr:
        assert card["robustness"]["mean_corruption_accuracy"] == pytest.approx(
            float(corr[-1]["mean_corruption_pct"]) / 100, abs=1e-9)
        assert card["sources"]["robustness"].startswith(f"results/corruptions.csv, row of {corr[-1]['date'][:10]}")
        precision = corr[-1].get("precision") or None  # rows from before the column: not said
        assert card["robustness"]["precision"] == precision
        assert (f" test images, in {precision}." in modelcard.render_markdown(card)) == bool(precision)
    else:
        assert card["robustness"] is None


def _packaged(tmp_path, name="mine", calibration=None):
    """A checkpoint as package_run writes one: a test record and provenance, no per-class figures."""
    path = write_checkpoint(tmp_path / f"{name}.pt", model="lenet5_modern", top1=0.6123)
    ckpt = torch.load(path, weights_only=True)
    ckpt.update(epoch=7, parameters=123456, weights_dtype="int8", config={"recipe": "cpu-2min", "epochs": 9, "val": 0},
                provenance={"run": "cpu-2min-s0", "packaged": "2026-12-01T10:00:00+00:00", "training_time_s": 99.0,
                            "data": {"source": "/secret/server/path/cifar10.tar.gz", "train": 45000, "val": 5000,
                                     "test": 10000}, "hardware": {"device": "cpu", "device_name": "Some CPU"}},
                plan={"epochs": 7, "budget": {"budget_s": 120.0}})
    if calibration:
        ckpt["calibration"] = calibration
    torch.save(ckpt, path)
    return path


def _hand_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE by hand: each prediction's bin by ceil(conf * n_bins) - 1, |accuracy - confidence| weighted."""
    conf, right = probs.max(1), probs.argmax(1) == labels
    which = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    return sum(abs(right[which == b].mean() - conf[which == b].mean()) * (which == b).mean()
               for b in range(n_bins) if (which == b).any())


def test_a_checkpoint_card_takes_the_latest_row_of_its_own_file(tmp_path):
    path = _packaged(tmp_path)
    write_sidecar(path, {"temperature": 0.8, "fitted_on": "val"})
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(400, 10)) * 3, rng.integers(0, 10, 400)

    def probs(t):
        e = np.exp(logits / t - (logits / t).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    raw, scaled = _hand_ece(probs(1.0), labels), _hand_ece(probs(0.8), labels)
    folder = tmp_path / "results"
    results.append_row("calibration", {"checkpoint_sha256": sha[:16], "temperature": 0.8, "ece_raw_pct": 99.0,
                                       "ece_after_pct": 99.0, "mce_raw_pct": 99.0, "mce_after_pct": 99.0}, folder)
    results.append_row("calibration", {"checkpoint_sha256": "0" * 16, "temperature": 0.8, "ece_raw_pct": 50.0,
                                       "ece_after_pct": 50.0, "mce_raw_pct": 50.0, "mce_after_pct": 50.0}, folder)
    results.append_row("calibration", {"checkpoint_sha256": sha[:16], "temperature": 0.8,
                                       "ece_raw_pct": round(100 * raw, 4), "ece_after_pct": round(100 * scaled, 4),
                                       "mce_raw_pct": 30.0, "mce_after_pct": 20.0, "fitted_on": "val"}, folder)
    results.append_row("corruptions", {"checkpoint_sha256": sha, "n": 500, "clean_top1_pct": 80.0,
                                       "mean_corruption_pct": 60.0, "kinds": "fog contrast",
                                       "severities": "1 3 5"}, folder)
    card = _card(path, "mine", folder)
    cal = card["calibration"]
    assert cal["temperature"] == 0.8 and cal["fitted_on"] == "val" and cal["n_bins"] == 15
    assert cal["ece_before"] == pytest.approx(raw, abs=1e-6) and cal["ece_after"] == pytest.approx(scaled, abs=1e-6)
    assert cal["mce_before"] == 0.3 and cal["mce_after"] == 0.2
    rob = card["robustness"]
    assert rob["mean_corruption_accuracy"] == 0.6 and rob["relative_drop"] == pytest.approx(0.25)
    assert rob["kinds"] == ["fog", "contrast"] and rob["severities"] == [1, 3, 5] and rob["n"] == 500
    assert card["accuracy"]["top1"] == 0.6123 and card["weights"] == "int8" and card["params"]["trainable"] == 123456
    md = modelcard.render_markdown(card)
    assert f"{raw:.2%} raw, {scaled:.2%} after temperature scaling (T = 0.800" in md
    assert "Mean corruption accuracy 60.00% over 2 kinds x 3 severities, against 80.00% clean (relative drop " \
           "25.00%), on 500 test images." in md
    assert "Budget: 7 of 7 epochs, 99 s of training, within a time budget of 2 min on Some CPU." in md
    assert "Per-class accuracy: not measured for this file" in md and "results/calibration.csv, row of" in md


def test_a_row_measured_with_another_temperature_or_for_other_bytes(tmp_path):
    path = _packaged(tmp_path)
    folder = tmp_path / "results"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    results.append_row("calibration", {"checkpoint_sha256": sha[:16], "temperature": 1.5, "ece_raw_pct": 12.0,
                                       "ece_after_pct": 2.0, "mce_raw_pct": 30.0, "mce_after_pct": 9.0}, folder)
    # no temperature with the file: the raw figures hold, the scaled ones are not what the apps show
    cal = _card(path, "mine", folder)["calibration"]
    assert cal["ece_before"] == 0.12 and cal["ece_after"] is None and "raw probabilities" in cal["note"]
    # a sidecar written for other bytes is not this file's
    side = write_sidecar(path, {"temperature": 1.5})
    side.write_text(side.read_text().replace(sha, "f" * 64))
    assert _card(path, "mine", folder)["calibration"]["temperature"] is None
    # the file's own temperature differs from the measured one: its effect was not measured
    other = _packaged(tmp_path, "other", calibration={"temperature": 0.9, "fitted_on": "val"})
    sha2 = hashlib.sha256(other.read_bytes()).hexdigest()
    results.append_row("calibration", {"checkpoint_sha256": sha2[:16], "temperature": 1.5, "ece_raw_pct": 12.0,
                                       "ece_after_pct": 2.0, "mce_raw_pct": 30.0, "mce_after_pct": 9.0}, folder)
    card = _card(other, "other", folder)
    assert card["calibration"]["temperature"] == 0.9 and card["calibration"]["ece_after"] is None
    assert "is not the one this file now carries" in modelcard.render_markdown(card)


def test_nothing_measured_is_said_in_words(tmp_path):
    path = _packaged(tmp_path)
    card = _card(path, "mine", tmp_path / "no-results")
    md = modelcard.render_markdown(card)
    assert card["calibration"] is None and card["robustness"] is None and card["confused_pairs"] is None
    assert "## Calibration (test split)\n\nnot measured." in md
    assert "not measured yet: run `cifarlab evaluate mine --data PATH --corruptions`." in md
    assert "## Most confused pairs\n\nnot measured" in md
    write_sidecar(path, {"temperature": 0.7, "fitted_on": "val"})
    md = modelcard.render_markdown(_card(path, "mine", tmp_path / "no-results"))
    assert "Temperature T = 0.700 (fitted on: the validation split) is applied to the probabilities; the " \
           "calibration error was not measured" in md


def test_bad_or_missing_card_data_is_one_sentence(tmp_path, monkeypatch):
    missing = _card(tmp_path / "gone.pt", "gone")
    assert missing["kind"] == "unavailable" and missing["error"].startswith("No model card for gone: ")
    assert "\n" not in missing["error"] and "does not exist" in missing["error"]
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    bad = _card(junk, "junk")
    assert bad["kind"] == "unavailable" and "\n" not in bad["error"]
    assert modelcard.render_markdown(bad) == f"# Model card: junk\n\n{bad['error']}\n"
    assert modelcard.sections(bad) == [{"key": "error", "title": None, "text": [bad["error"]]}]
    # a results file that cannot be read: the card goes on without its rows
    path = _packaged(tmp_path)

    def broken(kind):
        raise ValueError("damaged csv")
    card = modelcard.card_for(path, "mine", load_meta=load_checkpoint, read_rows=broken)
    assert card["accuracy"]["top1"] == 0.6123 and card["calibration"] is None
    # whatever goes wrong inside, a sentence
    monkeypatch.setattr(modelcard, "checkpoint_card", lambda *a, **k: 1 / 0)
    assert "division by zero" in _card(path, "mine")["error"]


def test_a_file_in_a_run_folder_gets_the_runs_card(tmp_path):
    run = _run_folder(tmp_path)
    write_checkpoint(run / "best.pt", model="lenet5_modern")
    write_run_card(run)
    card = _card(run / "best.pt", "resnet20-x-7")
    assert card["kind"] == "run" and card["name"] == "resnet20-x-7" and card["per_class"]["ship"] == 0.9
    # a damaged model_card.json: the card is built again from the run's files (nothing written)
    (run / "model_card.json").write_text("{not json")
    card = _card(run / "best.pt", "r")
    assert card["accuracy"]["top1"] == 0.75 and card["confused_pairs"][0]["count"] == 11
    assert (run / "model_card.json").read_text() == "{not json"
    # a damaged summary.json as well: the checkpoint's own card
    (run / "summary.json").write_text("[]")
    card = _card(run / "best.pt", "r")
    assert card["kind"] == "checkpoint" and card["accuracy"]["top1"] == 0.42


def test_public_cards_name_no_server_path(tmp_path):
    card = modelcard.public(_card(_packaged(tmp_path), "mine"))
    assert card["training"]["data"]["source"] == "cifar10.tar.gz"
    text = json.dumps(card) + json.dumps(modelcard.sections(card))
    assert "/secret" not in text and str(tmp_path) not in text


@pytest.mark.slow  # two evaluations through the CLI: ~8 s here under load
def test_evaluate_prints_the_card_of_what_it_measured(tmp_path, capsys, monkeypatch):
    """`cifarlab evaluate FILE`: the card's calibration is this evaluation's (recomputed here
    from the printed JSON's confusion-free figures), the robustness a results/ row of the
    file; the card printed is the one written."""
    from cifarlab.cli import main
    from cifarlab.data.synthetic import write_cifar10_python
    data = write_cifar10_python(tmp_path / "data", per_batch=10, n_test=30).path
    path = _packaged(tmp_path)
    write_sidecar(path, {"temperature": 0.9, "fitted_on": "val"})
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setenv("CIFARLAB_RESULTS", str(tmp_path / "results"))
    results.append_row("corruptions", {"checkpoint_sha256": sha[:16], "n": 500, "clean_top1_pct": 80.0,
                                       "mean_corruption_pct": 55.5, "kinds": "fog", "severities": "1 5"})
    assert main(["evaluate", str(path), "--data", str(data), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    card = out["model_card"]
    assert card["accuracy"]["top1"] == out["top1"] and card["per_class"] == out["per_class"]
    assert card["calibration"]["temperature"] == 0.9
    assert card["calibration"]["ece_before"] == out["calibration"]["before"]["ece"]
    assert card["calibration"]["ece_after"] == out["calibration"]["after"]["ece"]
    assert card["robustness"]["mean_corruption_accuracy"] == 0.555
    assert "corruptions.csv" in card["sources"]["robustness"]
    assert json.loads((tmp_path / "model_card.json").read_text()) == card  # beside the file, as its confusion
    assert main(["evaluate", str(path), "--data", str(data), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    lines = printed[printed.index("model card: "):].splitlines()
    assert lines[0] == "model card: mine"
    cal = json.loads((tmp_path / "out" / "model_card.json").read_text())["calibration"]
    assert f"  Calibration (test split): Expected calibration error (15 bins): {cal['ece_before']:.2%} raw, " \
           f"{cal['ece_after']:.2%} after temperature scaling (T = 0.900" in printed
    assert "  Robustness (corrupted test sets): Mean corruption accuracy 55.50% over 1 kinds x 2 severities" in printed
    assert any(line.startswith("  Most confused pairs: ") for line in lines)
