"""evaluate(): TTA views, top-k, per-class accuracy, confusion matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cifarlab.data import random_cifar
from cifarlab.training import evaluate, train, tta_views
from cifarlab.training.metrics import confusion_matrix, per_class_accuracy, topk_correct
from cifarlab.errors import ConfigError, DataError


def test_tta_views_are_the_flips_and_shifts():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert len(tta_views(x, "none")) == 1
    plain, flipped = tta_views(x, "flip")
    assert torch.equal(plain, x) and torch.equal(flipped[..., 0], x[..., -1])
    views = tta_views(x, "flip-translate")
    assert len(views) == 6 and all(v.shape == x.shape for v in views)
    up_left = views[2]  # content moved down-right by one pixel, edge replicated
    assert torch.equal(up_left[..., 1:, 1:], x[..., :-1, :-1]) and torch.equal(up_left[..., 0, 1:], x[..., 0, :-1])
    down_right = views[4]
    assert torch.equal(down_right[..., :-1, :-1], x[..., 1:, 1:])
    with pytest.raises(ConfigError):
        tta_views(x, "rotate")


def test_confusion_topk_and_per_class():
    y = np.array([0, 0, 1, 2, 2, 2])
    p = np.array([0, 1, 1, 2, 0, 2])
    conf = confusion_matrix(y, p, 4)
    assert conf.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    acc = per_class_accuracy(conf)
    assert acc[:3] == pytest.approx([0.5, 1.0, 2 / 3]) and np.isnan(acc[3])
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.04, 0.06]])
    assert topk_correct(logits, torch.tensor([2, 1]), 1) == 0
    assert topk_correct(logits, torch.tensor([2, 1]), 2) == 1


@pytest.mark.slow  # trains, then evaluates with every TTA mode: ~8 CPU-s
def test_evaluate_a_run_with_tta(tmp_path):
    data = random_cifar(n_train=120, n_test=40, val=20, seed=2)
    r = train(dict(model="lenet5_modern", epochs=2, batch_size=32, runs_dir=str(tmp_path), tensorboard=False,
                   plots=False, progress=False, augment="flip"), data=data)
    plain = evaluate(r.run_dir, data=data)
    assert plain["top1"] == pytest.approx(r.summary["test"]["top1"])  # the same best.pt, the same test set
    assert np.asarray(plain["confusion"]).sum() == 40 and plain["top1"] <= plain["top5"]
    per_class = plain["per_class"]
    assert np.mean(list(per_class.values())) == pytest.approx(plain["top1"])  # balanced test set
    tta = evaluate(r.run_dir / "last.pt", data=data, tta="flip-translate", split="val")
    assert tta["n"] == 20 and tta["tta"] == "flip-translate"
    other = random_cifar(n_train=50, n_test=10, num_classes=5)
    with pytest.raises(DataError, match="classes"):
        evaluate(r.run_dir, data=other)
    # a slim file without an epoch entry (as a packaged model may be) is evaluated alike
    from cifarlab.inference.checkpoint import load_checkpoint, save_checkpoint
    slim = {k: v for k, v in load_checkpoint(r.run_dir).items() if k not in ("epoch", "path")}
    save_checkpoint(slim, tmp_path / "slim.pt")
    again = evaluate(tmp_path / "slim.pt", data=data)
    assert again["top1"] == plain["top1"] and again["epoch"] is None
