"""A tiny training run whose logged numbers and kept checkpoint are checked against references
computed another way: the lr by the documented onecycle formula, the validation loss as
label-smoothed cross-entropy of the epoch's own weights computed in numpy, best.pt as the
weights of the epoch with the best validation accuracy (scripted, so that it is not the last).
"""

from __future__ import annotations

import copy
import csv

import numpy as np
import pytest
import torch

from cifarlab.data import random_cifar
from cifarlab.training import Callback, train
from cifarlab.models import create_model

SCRIPTED_VAL_ACC = [0.30, 0.60, 0.45]  # epoch 2 is the best, epoch 3 the last


class ScriptValAcc(Callback):
    """Overwrites each epoch's val_acc with a scripted value (before the checkpointer reads it)
    and keeps a copy of the weights each epoch ended with."""

    def __init__(self):
        self.weights: list[dict] = []

    def after_validate(self, learn) -> None:
        learn.metrics["val_acc_measured"] = learn.metrics["val_acc"]
        learn.metrics["val_acc"] = SCRIPTED_VAL_ACC[learn.epoch]
        self.weights.append(copy.deepcopy({k: v.detach().clone() for k, v in learn.model.state_dict().items()}))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = random_cifar(n_train=100, n_test=20, val=36, seed=1)  # 64 train: batches of 24, 24, 16
    script = ScriptValAcc()
    cfg = dict(model="lenet5_modern", epochs=3, batch_size=24, optimizer="sgd", lr=0.05, schedule="onecycle",
               warmup=0.3, label_smoothing=0.2, augment="none", runs_dir=str(tmp_path_factory.mktemp("runs")),
               tensorboard=False, plots=False, progress=False, channels_last=False)
    result = train(cfg, data=data, callbacks=[script])
    rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    return result, data, script, rows


def _logits(weights: dict, images: np.ndarray, mean, std) -> np.ndarray:
    net = create_model("lenet5_modern")
    net.load_state_dict(weights)
    x = (images / 255.0 - np.asarray(mean)) / np.asarray(std)  # N, H, W, C in float64
    with torch.no_grad():
        return net.eval()(torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float32)).double().numpy()


def test_logged_lr_follows_the_onecycle_formula(run):
    result, data, _, rows = run
    steps = 3
    total, warm = 3 * steps, int(0.3 * 3 * steps)
    for epoch, row in enumerate(rows, 1):
        s = epoch * steps - 1  # the lr logged is that of the epoch's last step
        expected = 0.05 * (0.1 + 0.9 * s / warm) if s < warm else 0.05 * (1 - (s - warm) / (total - warm))
        assert float(row["lr"]) == pytest.approx(expected, rel=1e-9), epoch


def test_logged_val_loss_is_label_smoothed_ce_of_the_epoch_weights(run):
    result, data, script, rows = run
    norm = torch.load(result.run_dir / "best.pt", weights_only=True)["normalize"]
    y = data.val.labels
    for epoch, (row, weights) in enumerate(zip(rows, script.weights), 1):
        log_p = _log_softmax(_logits(weights, data.val.images, norm["mean"], norm["std"]))
        smoothed = (0.8 * -log_p[np.arange(len(y)), y] - 0.2 * log_p.mean(1)).mean()
        assert float(row["val_loss"]) == pytest.approx(smoothed, rel=1e-5), epoch
        assert float(row["val_acc_measured"]) == pytest.approx(np.mean(log_p.argmax(1) == y), abs=1e-12)


def test_best_checkpoint_holds_the_best_epoch_and_test_is_measured_on_it(run):
    result, data, script, rows = run
    best = torch.load(result.run_dir / "best.pt", weights_only=True)
    last = torch.load(result.run_dir / "last.pt", weights_only=True)
    assert best["epoch"] == 2 and last["epoch"] == 3
    assert result.summary["val_best"]["epoch"] == 2
    for key, value in script.weights[1].items():
        assert torch.equal(best["state_dict"][key], value), key
    for key, value in script.weights[2].items():
        assert torch.equal(last["state_dict"][key], value), key
    logits = _logits(script.weights[1], data.test.images, best["normalize"]["mean"], best["normalize"]["std"])
    assert result.summary["test"]["n"] == len(data.test)
    assert result.summary["test"]["top1"] == pytest.approx(np.mean(logits.argmax(1) == data.test.labels), abs=1e-12)
