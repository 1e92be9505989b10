"""The loop on tiny data: every optimizer, loss and schedule; resume; guards; run folder."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from cifarlab.data import random_cifar
from cifarlab.inference import load_model
from cifarlab.training import Callback, TrainingInterrupted, evaluate, resume, train
from _callbacks import StopAfter
from cifarlab.inference.checkpoint import FORMAT
from cifarlab.training.optim import OneCycle, Plateau, Step
from cifarlab.errors import CifarlabError, TrainingDiverged

from conftest import need_module


@pytest.fixture(scope="module")
def tiny():
    return random_cifar(n_train=160, n_test=40, val=40, seed=0)


def cfg(tmp_path, **kw):
    base = dict(model="lenet5_modern", epochs=1, batch_size=32, runs_dir=str(tmp_path / "runs"),
                tensorboard=False, plots=False, progress=False, augment="none")
    return {**base, **kw}


@pytest.mark.slow  # several epochs of training: 5-20 CPU-s
@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("muon", 0.05), ("adam", 1e-3), ("adamw", 1e-3),
                                          ("rmsprop", 1e-3), ("adagrad", 0.01), ("adadelta", 1.0)])
def test_every_optimizer_lowers_the_training_loss(tmp_path, tiny, optimizer, lr):
    r = train(cfg(tmp_path, optimizer=optimizer, lr=lr, epochs=3, schedule="constant"), data=tiny)
    hist = [json.loads(line) for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(hist) == 3
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert all(math.isfinite(h["val_loss"]) for h in hist)


@pytest.mark.slow  # several epochs of training: 5-20 CPU-s
@pytest.mark.parametrize("loss", ["ce", "bce", "mse"])
def test_every_loss_trains_and_reports_top1(tmp_path, tiny, loss):
    r = train(cfg(tmp_path, loss=loss, optimizer="adam", lr=3e-3, epochs=3, schedule="constant"), data=tiny)
    test = r.summary["test"]
    assert test["n"] == 40 and test["top1"] * 40 == pytest.approx(round(test["top1"] * 40))  # a count of images
    assert test["top1"] == evaluate(r.run_dir, data=tiny)["top1"] and test["top1"] <= test["top5"]
    assert test["top1"] > 0.2, "tiny structured data is learnable with every loss"
    assert ("binary_accuracy" in test) == (loss == "bce")
    rows = list(csv.DictReader((r.run_dir / "metrics.csv").open()))
    assert ("val_binary_acc" in rows[0]) == (loss == "bce")


def _lrs(schedule, epochs=4, per_epoch=4, **kw):
    """The lr of every step as the schedule gives it (no training)."""
    from cifarlab.training import TrainConfig
    from cifarlab.training.optim import build_schedule
    sched = build_schedule(TrainConfig.from_dict({"schedule": schedule, "epochs": epochs, "lr": 0.1, **kw}), per_epoch)
    return np.array([sched.lr_at(s) for s in range(epochs * per_epoch)])


def test_schedules_follow_their_shape():
    assert np.allclose(_lrs("constant"), 0.1)
    assert np.allclose(_lrs("step", milestones=[2, 3], gamma=0.1), np.repeat([0.1, 0.1, 0.01, 0.001], 4))
    cos = _lrs("cosine", warmup=0.25)
    assert cos[3] == pytest.approx(0.1) and cos[-1] < 0.02 and np.all(np.diff(cos[4:]) < 0)
    one = _lrs("onecycle", warmup=0.25)
    assert one[0] == pytest.approx(0.01) and one.max() == pytest.approx(0.1) and one[-1] < 0.01
    assert np.argmax(one) == 4  # the peak ends the warm-up quarter of 16 steps


@pytest.mark.parametrize("schedule", ["step", "onecycle"])
def test_the_loop_applies_the_schedule(tmp_path, tiny, schedule):
    seen = []

    class Spy(Callback):
        order = 15

        def before_batch(self, learn):
            seen.append(learn.optimizer.param_groups[0]["lr"])

    kw = dict(milestones=[1], gamma=0.1, warmup=0.25)
    train(cfg(tmp_path, schedule=schedule, epochs=2, lr=0.1, **kw), callbacks=[Spy()], data=tiny)
    assert np.allclose(seen, _lrs(schedule, epochs=2, **kw))  # 120 images / 32 = 4 batches per epoch


def test_plateau_reduces_like_keras():
    sched = Plateau(0.1, 100, 10, factor=0.3, patience=2, min_delta=1e-4, monitor="val_loss", min_lr=0.0)
    seen = []
    for value in [1.0, 0.9, 0.89995, 0.9, 0.8, 0.8, 0.8]:
        sched.observe({"val_loss": value})
        seen.append(sched.lr_at(0))
    # 0.89995 is not an improvement (< min_delta); 2 stalls -> x0.3; the wait resets after a cut
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.03, 0.03, 0.03, 0.009])


@pytest.mark.slow  # several epochs of training: 5-20 CPU-s
def test_plateau_schedule_in_a_run(tmp_path, tiny):
    # lr so small nothing improves by min_delta: epoch 1 sets the best, then every stalled epoch
    # (patience 1) halves the lr for the next one
    r = train(cfg(tmp_path, schedule="plateau", optimizer="sgd", lr=1e-6, epochs=4, plateau_patience=1,
                  plateau_min_delta=1.0, plateau_factor=0.5), data=tiny)
    hist = [json.loads(line) for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["lr"] for h in hist] == pytest.approx([1e-6, 1e-6, 5e-7, 2.5e-7])  # lr each epoch trained with


@pytest.mark.slow  # several epochs of training: 5-20 CPU-s
def test_plateau_resumes_with_its_reduced_lr(tmp_path, tiny):
    base = cfg(tmp_path, schedule="plateau", optimizer="sgd", lr=1e-6, epochs=4, plateau_patience=1,
               plateau_min_delta=1.0, plateau_factor=0.5)
    full = train({**base, "name": "full"}, data=tiny)
    with pytest.raises(TrainingInterrupted):
        train({**base, "name": "cut"}, callbacks=[StopAfter(3)], data=tiny)
    last = tmp_path / "runs" / "cut" / "last.pt"
    good = last.read_bytes()
    # as main wrote it before the first release (the plateau's lr in the optimizer, no lr_scale):
    # refused in one line, the folder untouched (no migration path)
    ckpt = torch.load(last, weights_only=True)
    lr = ckpt["scheduler"].pop("lr")
    for group in ckpt["optimizer"]["param_groups"]:
        group["lr"] = lr
        del group["lr_scale"]
    torch.save(ckpt, last)
    old = last.read_bytes()
    with pytest.raises(CifarlabError, match="predates the BatchNorm-bias parameter group") as info:
        resume(last.parent, data=tiny)
    assert "\n" not in str(info.value) and last.read_bytes() == old
    last.write_bytes(good)
    resumed = resume(last.parent, data=tiny)

    def lrs(r):
        return [json.loads(line)["lr"] for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lrs(resumed) == lrs(full) == pytest.approx([1e-6, 1e-6, 5e-7, 2.5e-7])
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_step_and_onecycle_units():
    assert Step(0.01, 0, 1, [100, 200], 0.1).lr_at(150) == pytest.approx(0.001)  # one step per epoch
    assert Step(0.01, 0, 1, [100, 200], 0.1).lr_at(200) == pytest.approx(0.0001)
    assert Step(0.01, 0, 10, [100, 200], 0.1).lr_at(1009) == pytest.approx(0.001)  # step 1009 = epoch 100
    assert OneCycle(1.0, 100, 10, 0.2).lr_at(99) == pytest.approx(1 / 80)


@pytest.mark.slow  # several epochs of training: 5-20 CPU-s
def test_early_stopping_stops_and_says_why(tmp_path, tiny):
    r = train(cfg(tmp_path, epochs=10, lr=1e-7, optimizer="sgd", schedule="constant", early_stop=True,
                  early_patience=2, early_min_delta=1.0), data=tiny)
    assert r.summary["epochs_run"] == 3  # epoch 1 sets the best, 2 and 3 do not improve by 1.0
    assert "early stopping" in r.summary["stopped"]


def test_huge_lr_diverges_with_one_line(tmp_path, tiny):
    with pytest.raises(TrainingDiverged) as info:
        train(cfg(tmp_path, optimizer="adam", lr=1e4, epochs=3, schedule="constant", label_smoothing=0.0),
              data=tiny)
    msg = str(info.value)
    assert "\n" not in msg and "epoch" in msg and "step" in msg
    assert "learning rate 10000 is probably too high for adam; try --lr 1000" in msg


def test_binary_accuracy_is_not_accuracy():
    """All-zero probabilities on 10 balanced classes: 90% binary accuracy, 10% top-1."""
    from cifarlab.training.metrics import Accumulator
    y = torch.arange(100) % 10
    logits = torch.zeros(100, 10)  # softmax 0.1 each: every one-hot output predicted 0
    acc = Accumulator()
    acc.update(logits, y, loss=0.0)
    m = acc.summary("val_", binary=True)
    assert m["val_binary_acc"] == pytest.approx(0.9)
    assert m["val_acc"] == pytest.approx(0.1)


def test_bce_loss_matches_keras_formula():
    from cifarlab.training.losses import softmax_bce
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    p = torch.softmax(logits, 1).clamp(1e-7, 1 - 1e-7)
    t = torch.nn.functional.one_hot(y, 3).float()
    expected = -(t * p.log() + (1 - t) * (1 - p).log()).mean()
    assert softmax_bce(logits, y, 3).item() == pytest.approx(expected.item(), rel=1e-5)


class InputNoise(Callback):
    """Draws from torch's global RNG every batch, as dropout does: resume must restore it."""

    def before_batch(self, learn):
        learn.x = learn.x + 0.1 * torch.randn_like(learn.x)


@pytest.mark.slow  # several epochs of training: 5-20 CPU-s
@pytest.mark.parametrize("stop", [StopAfter(1), StopAfter(1, batch=3)], ids=["after-epoch-1", "mid-epoch-2"])
def test_resume_is_bit_exact(tmp_path, tiny, stop):
    base = cfg(tmp_path, epochs=3, augment="crop:4,flip", schedule="onecycle", lr=0.05)
    full = train({**base, "name": "full"}, callbacks=[InputNoise()], data=tiny)
    with pytest.raises(TrainingInterrupted) as info:
        train({**base, "name": "cut"}, callbacks=[InputNoise(), stop], data=tiny)
    run = tmp_path / "runs" / "cut"
    assert str(info.value) == f"interrupted after epoch {info.value.epoch}; resume with: cifarlab train --resume {run}"
    resumed = resume(run, callbacks=[InputNoise()], data=tiny)
    a = torch.load(full.run_dir / "last.pt", weights_only=True)
    b = torch.load(resumed.run_dir / "last.pt", weights_only=True)
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert [h["train_loss"] for h in a["metrics"]] == [h["train_loss"] for h in b["metrics"]]
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 3
    assert resumed.summary["test"]["top1"] == full.summary["test"]["top1"]


@pytest.mark.slow  # several epochs of training: 5-20 CPU-s
def test_resume_can_extend_epochs(tmp_path, tiny):
    r = train(cfg(tmp_path, epochs=1, name="short"), data=tiny)
    r2 = resume(r.run_dir, epochs=2, data=tiny)
    assert r2.summary["epochs_run"] == 2
    assert json.loads((r.run_dir / "config.json").read_text())["epochs"] == 2


@pytest.mark.slow  # several epochs of training: 5-20 CPU-s
def test_run_folder_is_complete(tmp_path, tiny):
    need_module("matplotlib", "plots need matplotlib (in the dev extras)")
    need_module("tensorboard", "tb/ needs tensorboard (in the dev extras)")
    r = train(cfg(tmp_path, epochs=2, tensorboard=True, plots=True), data=tiny)
    run = r.run_dir
    assert run.name.startswith("lenet5_modern-")
    for name in ["config.json", "metrics.csv", "metrics.jsonl", "best.pt", "last.pt", "curves.png",
                 "confusion.png", "confusion.csv", "summary.json"]:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert json.loads((run / "config.json").read_text())["model"] == "lenet5_modern"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    # every column against a value computed another way
    n_train, steps = len(tiny.train), math.ceil(len(tiny.train) / 32)  # 120 images: 4 steps, the last ragged
    total, warm = 2 * steps, int(0.2 * 2 * steps)  # onecycle, warmup 0.2 (the defaults)

    def onecycle(s):  # the documented shape: lr/10 up to lr over the warm-up, then linear down to 0
        return 0.1 * (0.1 + 0.9 * s / warm) if s < warm else 0.1 * (1 - (s - warm) / (total - warm))

    # val metrics of epoch 2 from the epoch-2 weights (last.pt), hand-normalized in numpy: the
    # val loss is the training loss, CE with label smoothing 0.1 (the default)
    model, meta = load_model(run / "last.pt")
    x = (tiny.val.images / 255.0 - np.array(meta["normalize"]["mean"])) / np.array(meta["normalize"]["std"])
    with torch.no_grad():
        logits = model(torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float32)).double().numpy()
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    y = tiny.val.labels
    smoothed_ce = (0.9 * -log_p[np.arange(len(y)), y] - 0.1 * log_p.mean(1)).mean()
    for epoch, row in enumerate(rows, 1):
        value = {k: float(v) for k, v in row.items()}
        assert value["lr"] == pytest.approx(onecycle(epoch * steps - 1), rel=1e-9)  # the epoch's last step
        assert value["train_acc"] * n_train == pytest.approx(round(value["train_acc"] * n_train), abs=1e-6)
        assert value["val_acc"] * len(tiny.val) == pytest.approx(round(value["val_acc"] * len(tiny.val)), abs=1e-6)
        assert 0 < value["train_loss"] < 2 * math.log(10)  # a per-image mean of CE over 10 classes
        assert value["images_per_s"] == pytest.approx(n_train / value["train_time"], rel=1e-6)
        assert 0 < value["train_time"] <= value["epoch_time"]
        assert value["load_1m"] >= 0  # the machine's load as the epoch ended
    assert float(rows[1]["val_loss"]) == pytest.approx(smoothed_ce, rel=1e-5)
    assert float(rows[1]["val_acc"]) == pytest.approx(np.mean(logits.argmax(1) == y), abs=1e-12)
    assert [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()] == \
        [float(r["lr"]) for r in rows]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["load_1m_max"] == max(float(r["load_1m"]) for r in rows)
    assert set(summary["test"]["per_class"]) == set(tiny.classes)
    assert summary["selection"]["metric"] == "val_acc" and summary["val_best"]["epoch"] in (1, 2)
    assert summary["hardware"]["cores"] >= 1 and summary["hardware"]["cpu"]
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert ckpt["format"] == FORMAT
    assert set(ckpt) >= {"model", "state_dict", "optimizer", "scheduler", "rng", "epoch", "config", "metrics",
                         "classes", "normalize", "versions"}
    assert set(ckpt["rng"]) >= {"torch", "numpy", "python"}
    from cifarlab.inference.checkpoint import git_commit
    assert summary["versions"] == ckpt["versions"] and ckpt["versions"].get("commit") == git_commit()
    model, meta = load_model(run / "best.pt")
    assert meta["classes"] == tiny.classes and sum(p.numel() for p in model.parameters()) > 0
    from PIL import Image
    assert Image.open(run / "curves.png").size[0] > 100


def test_without_validation_the_last_epoch_is_kept_and_said(tmp_path):
    data = random_cifar(n_train=96, n_test=20, val=0, seed=1)
    r = train(cfg(tmp_path, epochs=2, val=0), data=data)
    assert "last epoch" in r.summary["selection"]["note"]
    assert torch.load(r.run_dir / "best.pt", weights_only=True)["epoch"] == 2


def test_grayscale_run_predicts_from_rgb(tmp_path, tiny):
    from cifarlab.inference import Predictor
    r = train(cfg(tmp_path, grayscale=1), data=tiny)
    pred = Predictor(r.run_dir)
    out = pred.predict([tiny.test.images[0]], top_k=2)
    assert out[0].label in tiny.classes and len(out[0].top) == 2


def test_nan_loss_names_epoch_and_step(tmp_path, tiny):
    class PoisonGrads(Callback):
        def after_backward(self, learn):
            if learn.epoch == 1 and learn.batch_idx == 1:
                for p in learn.model.parameters():
                    p.grad.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"^loss became nan at epoch 2 step 3 — the learning rate"):
        train(cfg(tmp_path, epochs=3, schedule="constant", optimizer="sgd", lr=0.01), callbacks=[PoisonGrads()],
              data=tiny)


def test_every_loop_event_is_a_callback_method_and_nothing_else():
    from cifarlab.training.callbacks import Callback
    from cifarlab.training.loop import EVENTS
    hooks = {n for n in vars(Callback) if n.startswith(("before_", "after_"))}
    assert hooks == set(EVENTS)
    import pytest
    from cifarlab.training.loop import Learner
    learn = Learner.__new__(Learner)
    learn.callbacks = []
    with pytest.raises(ValueError, match="unknown event 'after_fitt'"):
        learn.event("after_fitt")


def test_code_version_is_recorded_once_and_never_fails(monkeypatch):
    from cifarlab import __version__
    from cifarlab.inference import checkpoint
    checkpoint.git_commit.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")  # no git: no commit, no error
    assert checkpoint.git_commit() is None
    assert checkpoint.versions()["cifarlab"] == __version__ and "commit" not in checkpoint.versions()
    checkpoint.git_commit.cache_clear()
