"""Grad-CAM / Grad-CAM++ (cifarlab.explain): shapes for every registry model, and a map
that points at the patch that decides the class on a synthetic task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from cifarlab.errors import CifarlabError
from cifarlab.explain import colorize, gradcam, heat_png, overlay, target_layer
from cifarlab.models.registry import create_model, list_models

FAST = ["airnet_tiny", "resnet20", "vgg11", "lenet5", "alexnet_modern", "deepcnn15"]


def _check_map(heat, shape):
    assert heat.shape == shape and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1


@pytest.mark.parametrize("name", FAST)
def test_map_has_the_input_shape_fast(name):
    torch.manual_seed(0)
    model = create_model(name)
    for method in ("gradcam", "gradcam++"):
        _check_map(gradcam(model, torch.randn(3, 32, 32), method=method), (32, 32))
        _check_map(gradcam(model, torch.randn(2, 3, 32, 32), target=3, method=method), (2, 32, 32))


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models() if n not in FAST])
def test_every_registry_model_gives_a_map_of_the_picture_shape(name):
    torch.manual_seed(0)
    model = create_model(name)
    heat = gradcam(model, torch.randn(1, 3, 32, 32))
    _check_map(heat, (1, 32, 32))
    picture = Image.new("RGB", (53, 41), (120, 30, 200))
    assert overlay(picture, heat[0]).size == picture.size


def test_layer_is_the_last_conv_stage_not_a_pool():
    m = create_model("vgg11")
    layer = target_layer(m)
    assert isinstance(layer, nn.ReLU)
    # the chosen layer's output still has spatial extent on a 32x32 input; the last pool's has not
    seen = []
    h = layer.register_forward_hook(lambda mod, i, o: seen.append(o.shape))
    m.eval()(torch.randn(1, 3, 32, 32))
    h.remove()
    assert seen[-1][-1] >= 2
    r = create_model("resnet20")
    assert target_layer(r) is r.blocks[-1]


def test_model_mode_and_grads_untouched():
    m = create_model("resnet20").train()
    gradcam(m, torch.randn(3, 32, 32))
    assert m.training
    assert all(p.grad is None for p in m.parameters())
    m.requires_grad_(False).eval()  # frozen weights still explain
    _check_map(gradcam(m, torch.randn(3, 32, 32)), (32, 32))


def test_bad_input_is_one_clear_error():
    m = create_model("lenet5")
    with pytest.raises(CifarlabError, match="method"):
        gradcam(m, torch.randn(3, 32, 32), method="lime")
    with pytest.raises(CifarlabError, match="out of range"):
        gradcam(m, torch.randn(3, 32, 32), target=10)
    with pytest.raises(CifarlabError, match="tensor"):
        gradcam(m, torch.randn(32, 32))


def test_overlay_colours_hot_places_and_keeps_cold_ones():
    picture = Image.new("RGB", (64, 48), (128, 128, 128))
    heat = np.zeros((32, 32), np.float32)
    heat[:, 16:] = 1.0
    out = np.asarray(overlay(picture, heat, alpha=0.5)).astype(int)
    assert out.shape == (48, 64, 3)
    assert (out[:, :20] == 128).all()  # zero heat: the picture unchanged
    # full heat: half-way between grey and jet's dark red (127, 0, 0)
    assert np.abs(out[:, 40:] - np.array([128, 64, 64])).max() <= 1
    # jet's ends: 0 is dark blue, 1 dark red, 0.5 green-dominant
    c = colorize(np.array([[0.0, 0.5, 1.0]]))[0]
    assert tuple(c[0]) == (0, 0, 128) and tuple(c[2]) == (128, 0, 0) and c[1, 1] == 255
    assert heat_png(heat).startswith(b"\x89PNG")


# ---------------------------------------------------------------- the synthetic patch task
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())  # 16x16 maps: the layer explained
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 2))

    def forward(self, x):
        return self.head(self.features(x))


def _patch_images(n, rng):
    """Grey noise with one 8x8 patch at a random place: red for class 0, green for class 1."""
    x = rng.normal(0, 0.3, size=(n, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 2, size=n)
    corners = rng.integers(0, 25, size=(n, 2))
    for i, (r, c) in enumerate(corners):
        x[i, :, r:r + 8, c:c + 8] = -1.0
        x[i, y[i], r:r + 8, c:c + 8] = 2.0
    return torch.from_numpy(x), torch.from_numpy(y), corners


@pytest.mark.slow
def test_heat_map_peak_falls_on_the_patch_that_decides_the_class():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = _Tiny()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y, _ = _patch_images(512, rng)
    for _ in range(6):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    xt, yt, corners = _patch_images(40, rng)
    model.eval()
    with torch.no_grad():
        assert (model(xt).argmax(1) == yt).float().mean() >= 0.9  # it learned the task
    for method in ("gradcam", "gradcam++"):
        heat = gradcam(model, xt, target=yt.tolist(), method=method)
        hits = 0
        for h, (r, c) in zip(heat, corners):
            pr, pc = np.unravel_index(np.argmax(h), h.shape)
            hits += (r - 2 <= pr < r + 10) and (c - 2 <= pc < c + 10)  # the patch, 2 px of blur around it
        # by chance a 12x12 area holds the peak of a 32x32 map about 14% of the time
        assert hits >= 36, (method, hits)
