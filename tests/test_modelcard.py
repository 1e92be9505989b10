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
