"""Corruptions (cifarlab.corruptions): every kind changes pixels, more at severity 5,
deterministically by seed; the closed forms checked against other computations (Pillow,
colorsys, numpy), the noises against their distributions."""

from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cifarlab.corruptions import (DEFAULT_KINDS, KINDS, box_matrix, corrupt, disk_kernel, parse_kinds,
                                  plasma_fractal, write_corruptions)
from cifarlab.data.synthetic import random_cifar
from cifarlab.errors import CifarlabError, ConfigError


@pytest.fixture(scope="module")
def pictures():
    return random_cifar(n_train=10, n_test=64, seed=0).test.images


def _change(a, b):
    return np.abs(a.astype(int) - b.astype(int)).mean()


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_pixels_and_more_at_severity_5(pictures, kind):
    one, five = corrupt(pictures, kind, 1, seed=0), corrupt(pictures, kind, 5, seed=0)
    assert one.dtype == np.uint8 and one.shape == pictures.shape
    assert _change(one, pictures) > 0.5
    assert _change(five, pictures) > _change(one, pictures)


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_by_seed(pictures, kind):
    a = corrupt(pictures, kind, 3, seed=7)
    assert np.array_equal(a, corrupt(pictures, kind, 3, seed=7))
    random_kinds = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "motion_blur", "fog"}
    if kind in random_kinds:
        assert not np.array_equal(a, corrupt(pictures, kind, 3, seed=8))


def test_default_suite_is_ten_kinds_by_five():
    assert len(DEFAULT_KINDS) == 10 and set(DEFAULT_KINDS) <= set(KINDS)
    assert parse_kinds(None) == DEFAULT_KINDS and parse_kinds("all") == KINDS
    assert parse_kinds("fog, contrast") == ("fog", "contrast")
    with pytest.raises(CifarlabError, match="unknown corruption 'frost'"):
        parse_kinds("fog,frost")
    with pytest.raises(CifarlabError, match="severity"):
        corrupt(np.zeros((1, 32, 32, 3), np.uint8), "fog", 6)
    with pytest.raises(CifarlabError, match="uint8"):
        corrupt(np.zeros((1, 32, 32, 3), np.float32), "fog", 1)


def test_pixelate_matches_pillow(pictures):
    from PIL import Image
    for sev, c in zip((1, 3, 5), (0.95, 0.85, 0.65)):
        ours = corrupt(pictures[:16], "pixelate", sev)
        for img, mine in zip(pictures[:16], ours):
            s = int(32 * c)
            ref = np.asarray(Image.fromarray(img).resize((s, s), Image.BOX).resize((32, 32), Image.BOX))
            assert np.abs(ref.astype(int) - mine.astype(int)).max() <= 1


def test_box_matrix_rows_are_averages():
    m = box_matrix(32, 16).numpy()
    assert np.allclose(m.sum(1), 1) and np.allclose(m[0, :2], 0.5)


def test_brightness_and_saturate_match_colorsys(pictures):
    imgs = pictures[:2, :8, :8]
    for kind, sev, op in (("brightness", 2, lambda h, s, v: (h, s, min(v + 0.1, 1.0))),
                          ("brightness", 5, lambda h, s, v: (h, s, min(v + 0.3, 1.0))),
                          ("saturate", 1, lambda h, s, v: (h, min(max(s * 0.3, 0), 1), v)),
                          ("saturate", 5, lambda h, s, v: (h, min(max(s * 2.5 + 0.2, 0), 1), v))):
        ours = corrupt(imgs, kind, sev)
        ref = np.empty_like(imgs)
        for idx in np.ndindex(imgs.shape[:3]):
            rgb = colorsys.hsv_to_rgb(*op(*colorsys.rgb_to_hsv(*(imgs[idx] / 255.0))))
            ref[idx] = np.round(np.clip(rgb, 0, 1) * 255)
        assert np.abs(ref.astype(int) - ours.astype(int)).max() <= 1, kind


def test_contrast_is_the_reference_formula(pictures):
    x = pictures[:4] / 255.0
    means = x.mean(axis=(1, 2), keepdims=True)
    ref = np.round(np.clip((x - means) * 0.4 + means, 0, 1) * 255)
    assert np.abs(ref - corrupt(pictures[:4], "contrast", 3)).max() <= 1


def test_defocus_matches_a_direct_correlation(pictures):
    # the kernel built another way: the disk, then a 3x3 Gaussian (sigma 0.5), mirrored edges
    r, blur = 0.5, 0.6
    t = np.arange(-8, 9)
    disk = ((t[None] ** 2 + t[:, None] ** 2) <= r * r).astype(float)
    disk /= disk.sum()
    g = np.exp(-0.5 * (np.arange(-1, 2) / blur) ** 2)
    g /= g.sum()
    padded = np.pad(disk, 1, mode="reflect")
    kernel = sum(g[i] * g[j] * padded[i:i + 17, j:j + 17] for i in range(3) for j in range(3))
    assert np.allclose(kernel, disk_kernel(r, blur).numpy(), atol=1e-6)
    x = pictures[:2] / 255.0
    xp = np.pad(x, ((0, 0), (8, 8), (8, 8), (0, 0)), mode="reflect")
    ref = sum(kernel[i, j] * xp[:, i:i + 32, j:j + 32] for i in range(17) for j in range(17))
    ref = np.round(np.clip(ref, 0, 1) * 255)
    assert np.abs(ref - corrupt(pictures[:2], "defocus_blur", 3)).max() <= 1


def test_noises_have_their_distributions():
    grey = np.full((64, 32, 32, 3), 128, np.uint8)
    d = (corrupt(grey, "gaussian_noise", 1).astype(float) - 128) / 255
    assert d.std() == pytest.approx(0.04, rel=0.05) and abs(d.mean()) < 0.002
    shot = corrupt(grey, "shot_noise", 5).astype(float) / 255  # Poisson(x*50)/50: variance x/50
    assert shot.var() == pytest.approx((128 / 255) / 50, rel=0.1)
    imp = corrupt(grey, "impulse_noise", 5)
    changed = imp != 128
    assert changed.mean() == pytest.approx(0.07, rel=0.1)
    assert set(np.unique(imp[changed])) == {0, 255}


def test_motion_blur_smears_a_dot_along_a_line():
    dot = np.zeros((8, 32, 32, 3), np.uint8)
    dot[:, 16, 16] = 255
    out = corrupt(dot, "motion_blur", 1).astype(float)
    assert np.all(out.sum(axis=(1, 2, 3)) > 0)
    lit = (out[..., 0] > 0).sum(axis=(1, 2))
    assert (lit >= 3).all()  # a trail, not a dot


def test_plasma_fractal_is_normalized():
    import torch
    p = plasma_fractal(3, 32, 2.0, torch.Generator().manual_seed(0))
    assert p.shape == (3, 32, 32)
    assert torch.allclose(p.amin(dim=(1, 2)), torch.zeros(3)) and torch.allclose(p.amax(dim=(1, 2)), torch.ones(3))


@pytest.mark.slow
def test_evaluate_corruptions_on_a_tiny_run(tmp_path):
    from cifarlab.corruptions import evaluate_corruptions
    from cifarlab.training.api import train
    data = random_cifar(n_train=300, n_test=100, val=0, seed=0)
    cfg = {"model": "lenet5_modern", "epochs": 2, "batch_size": 32, "runs_dir": str(tmp_path), "device": "cpu",
           "progress": False, "plots": False, "tensorboard": False, "augment": "none"}
    run = train(cfg, data=data).run_dir
    seen = []
    r = evaluate_corruptions(run, data=data, kinds=("contrast", "gaussian_noise"), severities=(1, 5),
                             progress=lambda *a: seen.append(a))
    assert len(seen) == 4 and r["n"] == 100
    acc = [a for k in r["kinds"] for a in r["accuracy"][k]]
    assert r["mean_corruption_accuracy"] == pytest.approx(np.mean(acc))
    assert r["relative_drop"] == pytest.approx((r["clean_accuracy"] - np.mean(acc)) / r["clean_accuracy"])
    written = write_corruptions(r, tmp_path / "out", png=False)
    assert json.loads(written[0].read_text())["accuracy"] == r["accuracy"]
    assert written[1].read_text().splitlines()[0].startswith("kind,s1,s5,mean")
    # cifarlab evaluate --corruptions keeps it as a row of results/corruptions.csv, keyed by the file
    import hashlib

    from cifarlab import results
    from cifarlab.cli.evaluate_extras import _record_corruptions
    _record_corruptions(r, r["checkpoint"])
    row, = results.read_rows("corruptions")  # CIFARLAB_RESULTS: this test's own folder
    assert row["checkpoint_sha256"] == hashlib.sha256(Path(r["checkpoint"]).read_bytes()).hexdigest()
    assert row["mean_corruption_pct"] == pytest.approx(100 * np.mean(acc), abs=0.005)
    assert row["clean_top1_pct"] == pytest.approx(100 * r["clean_accuracy"], abs=0.005)
    assert (row["n"], row["kinds"], str(row["severities"])) == (100, "contrast gaussian_noise", "1 5")
    # auto: bf16 exactly where the CPU computes it natively, and the row says which
    from cifarlab.inference.hardware import bf16_native
    assert r["precision"] == row["precision"] == ("bf16" if bf16_native(torch.device("cpu")) else "float32")
    # float32 (channels-last, batches of 7) against the bare model on hand-normalized NCHW tensors
    f32 = evaluate_corruptions(run, data=data, kinds=("contrast",), severities=(5,), precision="float32",
                               batch_size=7)
    from cifarlab.inference.checkpoint import load_model
    model, meta = load_model(Path(r["checkpoint"]), "cpu")
    mean, std = (torch.tensor(meta["normalize"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))

    def by_hand(images):
        x = (torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 255 - mean) / std
        with torch.no_grad():
            return float((model.eval()(x).argmax(1).numpy() == np.asarray(data.test.labels)).mean())
    assert f32["precision"] == "float32"
    assert f32["clean_accuracy"] == pytest.approx(by_hand(data.test.images), abs=0.011)  # one picture of 100
    assert f32["accuracy"]["contrast"][0] == pytest.approx(by_hand(corrupt(data.test.images, "contrast", 5)),
                                                           abs=0.011)
    with pytest.raises(ConfigError, match="precision 'fp8' is not one of: auto, float32"):
        evaluate_corruptions(run, data=data, precision="fp8")


def test_a_checkpoints_card_counts_the_epochs_its_time_budget_planned():
    """The shipped lenet5 was trained to a time budget that re-planned 40 configured epochs to
    more: its card (``cifarlab evaluate lenet5``) states the planned epochs of the run, not the
    config's starting figure."""
    from pathlib import Path

    import cifarlab
    from cifarlab.cli.evaluate_extras import _card
    from cifarlab.inference.checkpoint import load_checkpoint
    path = Path(cifarlab.__file__).parent / "assets" / "lenet5.pt"
    ckpt = load_checkpoint(path)
    planned, configured = ckpt["plan"]["epochs"], ckpt["config"]["epochs"]
    assert planned != configured  # else this file cannot tell the two apart
    result = {"checkpoint": str(path), "model": "lenet5", "n": 10, "top1": 0.5, "top5": 0.9, "tta": "none",
              "per_class": {}, "confusion": None, "classes": None, "calibration": None}
    card, _ = _card(result, {}, None)
    assert card["training"]["epochs_planned"] == planned and card["training"]["epochs_run"] == ckpt["epoch"]
