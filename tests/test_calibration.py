"""Calibration (cifarlab.calibration): ECE/MCE against hand-computed numbers, temperature
scaling against a grid search, and a real (tiny) run that fits, stores and applies T."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cifarlab.calibration import (calibration_bins, fit_temperature, nll, read_sidecar, softmax,
                                  temperature_for, write_sidecar)
from cifarlab.errors import CifarlabError


def _probs(conf, pred, k=2):
    """Rows with ``conf`` on class ``pred`` and the rest spread evenly."""
    p = np.full((len(conf), k), 0.0)
    for i, (c, j) in enumerate(zip(conf, pred)):
        p[i] = (1 - c) / (k - 1)
        p[i, j] = c
    return p


def test_ece_and_mce_match_a_hand_computation():
    # confidences 0.95 (right), 0.95 (wrong), 0.60 (right), 0.62 (right), 0.55 (wrong)
    probs = _probs([0.95, 0.95, 0.60, 0.62, 0.55], [0, 0, 1, 1, 0])
    labels = [0, 1, 1, 1, 1]
    # bins of width 1/15, (lo, hi]: 0.95 -> (14/15, 1]; 0.55 and 0.60 -> (8/15, 9/15]; 0.62 -> (9/15, 10/15]
    # (14/15, 1]: conf 0.95, acc 0.5, gap 0.45, weight 2/5 -> 0.18
    # (8/15, 9/15]: conf 0.575, acc 0.5, gap 0.075, weight 2/5 -> 0.03
    # (9/15, 10/15]: conf 0.62, acc 1.0, gap 0.38, weight 1/5 -> 0.076
    out = calibration_bins(probs, labels)
    assert out["ece"] == pytest.approx(0.286, abs=1e-12)
    assert out["mce"] == pytest.approx(0.45, abs=1e-12)
    assert [b["count"] for b in out["bins"]] == [0] * 8 + [2, 1] + [0] * 4 + [2]
    assert out["n"] == 5 and out["accuracy"] == pytest.approx(0.6)


def test_ece_matches_a_loop_reference_on_random_data():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, size=(2000, 10))
    labels = rng.integers(0, 10, size=2000)
    p = softmax(logits)
    conf, right = p.max(1), p.argmax(1) == labels
    ece, worst = 0.0, 0.0
    for b in range(15):  # a bin by ceil: conf in (b/15, (b+1)/15]
        m = np.array([math.ceil(c * 15) - 1 == b for c in conf])
        if m.any():
            gap = abs(right[m].mean() - conf[m].mean())
            ece += m.mean() * gap
            worst = max(worst, gap)
    out = calibration_bins(p, labels)
    assert out["ece"] == pytest.approx(ece, abs=1e-12) and out["mce"] == pytest.approx(worst, abs=1e-12)


def test_perfectly_calibrated_data_has_small_ece():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 20000)
    right = rng.uniform(size=20000) < conf  # right exactly as often as it claims
    pred = np.zeros(20000, int)
    labels = np.where(right, 0, 1)
    assert calibration_bins(_probs(conf, pred), labels)["ece"] < 0.01


def test_temperature_recovers_a_known_overconfidence():
    rng = np.random.default_rng(1)
    true = rng.normal(0, 2, size=(4000, 10))
    labels = np.array([rng.choice(10, p=row) for row in softmax(true)])
    logits = true * 3.0  # three times too sure
    t = fit_temperature(logits, labels)
    grid = np.linspace(0.5, 6, 1101)
    best = grid[np.argmin([nll(logits, labels, g) for g in grid])]  # reference: a grid search
    assert t == pytest.approx(best, abs=0.01)
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(logits, labels, t) < nll(logits, labels) - 0.05
    before = calibration_bins(softmax(logits), labels)["ece"]
    assert calibration_bins(softmax(logits, t), labels)["ece"] < before / 3


def test_bad_inputs_are_one_line():
    with pytest.raises(CifarlabError, match="labels"):
        calibration_bins(np.ones((3, 2)) / 2, [0, 1])
    with pytest.raises(CifarlabError, match="NaN"):
        fit_temperature(np.array([[np.nan, 0.0]]), [0])


def test_sidecar_names_its_checkpoint(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"weights one")
    side = write_sidecar(ckpt, {"temperature": 1.7})
    assert side.name == "m.calibration.json"
    assert read_sidecar(ckpt)["temperature"] == 1.7
    assert temperature_for({"path": str(ckpt)}) == 1.7
    assert temperature_for({"path": str(ckpt), "calibration": {"temperature": 2.5}}) == 2.5  # stored wins
    ckpt.write_bytes(b"weights two")  # other weights: the sidecar no longer applies
    assert read_sidecar(ckpt) is None and temperature_for({"path": str(ckpt)}) is None


@pytest.mark.slow
def test_a_real_run_fits_stores_and_applies_its_temperature(tmp_path):
    from cifarlab.data.synthetic import random_cifar
    from cifarlab.training.api import train
    from cifarlab.inference.checkpoint import load_checkpoint
    from cifarlab.inference.predict import Predictor
    data = random_cifar(n_train=400, n_test=200, val=200, seed=0)
    cfg = {"model": "lenet5_modern", "epochs": 3, "batch_size": 32, "runs_dir": str(tmp_path), "device": "cpu",
           "progress": False, "plots": True, "tensorboard": False, "augment": "none", "label_smoothing": 0.2}
    r = train(cfg, data=data)
    cal = r.summary["calibration"]
    t = cal["temperature"]
    assert t is not None and t > 0
    # the validation NLL, recomputed here from the checkpoint, falls with T
    ckpt = load_checkpoint(r.run_dir / "best.pt")
    assert ckpt["calibration"]["temperature"] == t
    pred = Predictor(r.run_dir, device="cpu")
    assert pred.temperature == t
    with torch.no_grad():
        z = pred.model(pred.preprocess(list(data.val.images))).double()
    y = torch.as_tensor(data.val.labels)
    raw = float(torch.nn.functional.cross_entropy(z, y))
    scaled = float(torch.nn.functional.cross_entropy(z / t, y))
    assert scaled < raw
    assert cal["val_nll_after"] == pytest.approx(scaled, rel=1e-4)
    assert cal["val_nll_before"] == pytest.approx(raw, rel=1e-4)
    # the predictor applies it; raw_probs shows the model's own softmax
    p = pred.probabilities(list(data.test.images[:5]))
    p_raw = pred.probabilities(list(data.test.images[:5]), raw=True)
    with torch.no_grad():
        zt = pred.model(pred.preprocess(list(data.test.images[:5]))).double()
    assert np.allclose(p, torch.softmax(zt / t, 1).numpy(), atol=1e-5)
    assert np.allclose(p_raw, torch.softmax(zt, 1).numpy(), atol=1e-5)
    # the run folder: calibration.json with the bins, the figure, the card
    report = json.loads((r.run_dir / "calibration.json").read_text())
    assert len(report["before"]["bins"]) == 15 and report["after"]["ece"] == cal["after"]["ece"]
    assert (r.run_dir / "model_card.md").is_file() and (r.run_dir / "model_card.json").is_file()
    from cifarlab.training import plots
    if plots.available():
        assert (r.run_dir / "reliability.png").is_file()


@pytest.mark.slow
def test_temperature_lowers_the_validation_nll_on_a_real_cifar_run(real_data, tmp_path):
    """lenet5_modern, 3k real training pictures, 2 epochs, label smoothing 0.2 (which makes
    a model under-confident): T fitted on the 5k validation pictures lowers their NLL,
    recomputed here from the stored checkpoint."""
    from cifarlab.training.api import train
    from cifarlab.inference.predict import Predictor
    cfg = {"model": "lenet5_modern", "epochs": 2, "batch_size": 64, "runs_dir": str(tmp_path), "device": "cpu",
           "progress": False, "plots": False, "tensorboard": False, "label_smoothing": 0.2,
           "train_subset": 3000, "test_subset": 1000}
    r = train(cfg, data=real_data)
    pred = Predictor(r.run_dir, device="cpu")
    t = pred.temperature
    assert t is not None and t == r.summary["calibration"]["temperature"]
    with torch.no_grad():
        z = torch.cat([pred.model(pred.preprocess(list(real_data.val.images[i:i + 1000]))).double()
                       for i in range(0, len(real_data.val), 1000)])
    y = torch.as_tensor(real_data.val.labels)
    raw, scaled = (float(torch.nn.functional.cross_entropy(z / s, y)) for s in (1.0, t))
    assert scaled < raw - 1e-3, (raw, scaled, t)
    assert r.summary["calibration"]["after"]["ece"] < r.summary["calibration"]["before"]["ece"]
