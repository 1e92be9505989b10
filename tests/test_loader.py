"""DeviceLoader and channel_stats: batches, normalization, and (seed, epoch)-determined randomness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cifarlab.data import DeviceLoader, build_augment, channel_stats, random_cifar
from cifarlab.data.types import Split


@pytest.fixture(scope="module")
def data():
    return random_cifar(n_train=130, n_test=40, seed=3, val=20)


def test_channel_stats_match_numpy(data):
    mean, std = channel_stats(data.train.images)
    x = data.train.images.astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), atol=1e-9)
    np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), atol=1e-7)
    gray_mean, gray_std = channel_stats(data.train.images, grayscale=1)
    luma = x @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(gray_mean, [luma.mean()], atol=1e-9)
    np.testing.assert_allclose(gray_std, [luma.std()], atol=1e-7)


def test_channel_stats_exact_on_strided_and_extreme_images():
    """The histogram path: a strided view, and values piled at 0 and 255 (the largest spread)."""
    rng = np.random.default_rng(0)
    images = rng.choice(np.array([0, 255], dtype=np.uint8), size=(64, 8, 8, 3))
    images[..., 2] = 7  # a constant channel: std exactly 0
    view = images[::2]
    mean, std = channel_stats(view)
    x = view.astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), atol=1e-12)
    np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), atol=1e-12)
    assert std[2] == 0.0


def test_eval_loader_yields_every_image_in_order_normalized(data):
    mean, std = channel_stats(data.train.images)
    loader = DeviceLoader(data.test, 16, "cpu", mean, std, shuffle=False)
    assert len(loader) == 3
    xs, ys = zip(*loader)
    assert [len(y) for y in ys] == [16, 16, 8]
    x = torch.cat(xs)
    assert x.dtype == torch.float32 and x.shape == (40, 3, 32, 32)
    expected = (torch.from_numpy(data.test.images).permute(0, 3, 1, 2).float() / 255
                - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, expected)
    assert torch.equal(torch.cat(ys), torch.from_numpy(data.test.labels))
    assert torch.cat(ys).dtype == torch.int64


def test_drop_last_and_len(data):
    assert len(DeviceLoader(data.train, 32, drop_last=True)) == 110 // 32
    assert len(list(DeviceLoader(data.train, 32, drop_last=True))) == 3
    assert len(DeviceLoader(data.train, 32)) == 4


def test_shuffle_covers_all_and_changes_per_epoch(data):
    loader = DeviceLoader(data.train, 50, seed=1)
    order0 = loader.order(0)
    assert sorted(order0.tolist()) == list(range(110))
    assert not torch.equal(order0, loader.order(1))


def _epochs(loader, epochs):
    out = []
    for e in epochs:
        loader.set_epoch(e)
        out.append([(x.clone(), y.clone()) for x, y in loader])
    return out


def test_resumed_run_gets_identical_batches(data):
    aug = "crop:4:reflect,flip,cutout:8,rotate:10,shift:0.2,altflip"
    straight = _epochs(DeviceLoader(data.train, 32, augment=build_augment(aug), seed=7), [0, 1, 2])
    resumed = _epochs(DeviceLoader(data.train, 32, augment=build_augment(aug), seed=7), [2])
    for (xa, ya), (xb, yb) in zip(straight[2], resumed[0]):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # and the epochs differ from each other
    assert not torch.equal(straight[0][0][0], straight[1][0][0])
    other_seed = _epochs(DeviceLoader(data.train, 32, augment=build_augment(aug), seed=8), [2])
    assert not torch.equal(other_seed[0][0][0], straight[2][0][0])


def test_altflip_in_loader_flips_each_image_on_alternate_epochs(data):
    loader = DeviceLoader(data.train, 200, shuffle=False, augment=build_augment("altflip"))
    plain = next(iter(DeviceLoader(data.train, 200, shuffle=False)))[0]
    (e0, _), = _epochs(loader, [0])[0]
    (e1, _), = _epochs(loader, [1])[0]
    flipped0 = (e0 != plain).flatten(1).any(1)
    flipped1 = (e1 != plain).flatten(1).any(1)
    assert torch.equal(flipped0, ~flipped1)
    torch.testing.assert_close(e0[flipped0], plain[flipped0].flip(-1))


def test_grayscale_dtype_and_channels_last(data):
    one = next(iter(DeviceLoader(data.test, 8, grayscale=1, shuffle=False, mean=[0.5], std=[0.25])))[0]
    three = next(iter(DeviceLoader(data.test, 8, grayscale=3, shuffle=False, mean=[0.5], std=[0.25])))[0]
    assert one.shape == (8, 1, 32, 32) and three.shape == (8, 3, 32, 32)
    torch.testing.assert_close(three, one.expand(-1, 3, -1, -1))
    rgb = torch.from_numpy(data.test.images[:8]).permute(0, 3, 1, 2).float() / 255
    luma = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    torch.testing.assert_close(one, (luma - 0.5) / 0.25)
    half = next(iter(DeviceLoader(data.test, 8, dtype=torch.bfloat16, channels_last=True)))[0]
    assert half.dtype == torch.bfloat16 and half.is_contiguous(memory_format=torch.channels_last)


def test_images_held_once_as_uint8_nchw(data):
    loader = DeviceLoader(data.train, 32)
    assert loader.images.dtype == torch.uint8 and loader.images.shape == (110, 3, 32, 32)


def test_random_cifar_is_learnable_and_stratified():
    d = random_cifar(n_train=500, n_test=200, seed=0, val=100)
    assert len(d.train) == 400 and len(d.val) == 100 and np.bincount(d.val.labels).tolist() == [10] * 10
    # nearest class mean on raw pixels: far above the 10% of chance
    x = d.train.images.reshape(len(d.train), -1).astype(np.float32)
    centroids = np.stack([x[d.train.labels == c].mean(0) for c in range(10)])
    t = d.test.images.reshape(len(d.test), -1).astype(np.float32)
    pred = ((t[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (pred == d.test.labels).mean() > 0.8
    assert not np.array_equal(random_cifar(50, 10, seed=1).train.images, random_cifar(50, 10, seed=2).train.images)


def test_empty_split_loader():
    loader = DeviceLoader(Split.empty(), 8, shuffle=False)
    assert len(loader) == 0 and list(loader) == []
