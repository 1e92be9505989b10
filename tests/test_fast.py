"""The record-speed recipe: whitening init, the BN-bias parameter group, lookahead/EMA, the
augmentation and TTA views it uses, and a CPU run that learns."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cifarlab.data import build_augment, random_cifar
from cifarlab.training import TrainConfig, callbacks_for, recipe_config, train, tta_views
from cifarlab.training import fast
from cifarlab.training.callbacks import Callback
from cifarlab.training.fast import WeightAverage, WhiteningInit, patch_matrix, whitening_filters
from cifarlab.training.optim import build_optimizer
from cifarlab.training.recipes import sgd_values
from cifarlab.errors import CifarlabError, ConfigError
from cifarlab.models import create_model


def _smooth_images(n: int = 64, c: int = 3, seed: int = 0) -> torch.Tensor:
    """Images with strongly correlated neighbouring pixels and channels, like photos."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, 34, 34, generator=g)
    x = F.avg_pool2d(x, 3, 1)  # spatial correlation
    mix = torch.eye(c) + 0.8 * torch.ones(c, c)  # channel correlation
    return torch.einsum("dc,nchw->ndhw", mix, x) + 0.3


# ---------------------------------------------------------------- whitening
def test_patch_matrix_rows_match_conv_layout():
    x = torch.randn(2, 3, 5, 5)
    rows = patch_matrix(x, 2)
    assert rows.shape == (2 * 4 * 4, 12)
    # row for image 1, location (2, 3) is x[1, :, 2:4, 3:5] flattened as (channel, row, col)
    assert torch.equal(rows[1 * 16 + 2 * 4 + 3], x[1, :, 2:4, 3:5].reshape(-1))
    w = torch.randn(7, 3, 2, 2)
    assert torch.allclose(F.conv2d(x, w)[1, :, 2, 3], w.reshape(7, -1) @ rows[1 * 16 + 2 * 4 + 3], atol=1e-5)


def test_whitened_patches_have_identity_covariance():
    x = _smooth_images()
    weight, bias, eigvals = whitening_filters(x, kernel=2, eps=1e-12)
    assert weight.shape == (24, 3, 2, 2) and bias.shape == (24,) and eigvals.shape == (12,)
    out = F.conv2d(x, weight, bias)  # [n, 24, 31, 31]
    z = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    assert z.mean(0).abs().max() < 1e-3
    cov = torch.cov(z.T)
    assert torch.allclose(cov, torch.eye(12, dtype=cov.dtype), atol=2e-3), cov.diagonal()
    assert torch.allclose(out[:, 12:], -out[:, :12])  # the ± pairs
    assert (eigvals[:-1] >= eigvals[1:]).all()  # largest first
    raw = torch.cov(patch_matrix(x, 2).T.double())
    assert raw.diagonal().min() > 0.1 and (raw - torch.diag(raw.diagonal())).abs().max() > 0.1  # was not white


def test_whitening_eps_shrinks_each_direction_by_its_eigenvalue():
    x = _smooth_images(seed=1)
    eps = 0.05
    weight, bias, eigvals = whitening_filters(x, kernel=2, eps=eps)
    z = F.conv2d(x, weight, bias)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    expected = eigvals.double() / (eigvals.double() + eps)
    assert torch.allclose(torch.cov(z.T).diagonal(), expected, rtol=2e-3)


@pytest.mark.parametrize("chans,kernel", [(3, 2), (1, 2), (3, 3)])
def test_whitening_filter_shapes(chans, kernel):
    d = chans * kernel * kernel
    weight, bias, _ = whitening_filters(_smooth_images(8, chans), kernel)
    assert weight.shape == (2 * d, chans, kernel, kernel) and bias.shape == (2 * d,)


def test_airnet_whitening_layer_matches_the_filters():
    model = create_model("airnet_tiny", in_chans=1)
    layer = fast.find_whitening_layer(model)
    assert layer is not None and layer.weight.shape == (8, 1, 2, 2)
    assert fast.find_whitening_layer(create_model("resnet20")) is None


# ---------------------------------------------------------------- BN-bias learning rate
def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


def test_bias_group_is_bit_exactly_the_old_gradient_scaling():
    """The BN-bias group (lr x64, wd /64) steps exactly as main's BiasLRScale did: one SGD
    group with the BN-bias gradients x64 (64 is a power of two, so not even a rounding differs)."""
    lr, wd, s = 0.1, 5e-3, 64.0
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 2, (8,))
    a = _bn_net()
    a(x)  # materialize the lazy layer
    b = copy.deepcopy(a)
    opt_a = torch.optim.SGD(a.parameters(), lr=lr, momentum=0.85, nesterov=True, weight_decay=wd)
    cfg = TrainConfig(optimizer="sgd", lr=lr, momentum=0.85, weight_decay=wd, bias_lr_scale=s)
    opt_b = build_optimizer(b, cfg)
    assert [g["lr_scale"] for g in opt_b.param_groups] == [1.0, s]
    assert opt_b.param_groups[1]["params"] == [b[1].bias] and opt_b.param_groups[1]["weight_decay"] == wd / s
    for _ in range(3):
        for net, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            if net is a:
                a[1].bias.grad.mul_(s)
            for group in opt.param_groups:  # what the loop does before each batch
                group["lr"] = lr * group.get("lr_scale", 1.0)
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.allclose(a[1].bias, _bn_net()[1].bias)  # it did move


def test_sgd_values_convert_airbench_units():
    v = sgd_values(11.5, 0.0153, 0.85, 1024)
    kilostep = 1024 * (1 + 1 / 0.15)
    assert math.isclose(v["lr"], 11.5 / kilostep * 1024)  # ~1.5 on a batch-mean loss
    assert math.isclose(v["lr"] * v["weight_decay"], 0.0153 * 1024 / kilostep)  # shrink per step
    assert math.isclose(sgd_values(11.5, 0.0153, 0.85, 512)["lr"], v["lr"] / 2)  # linear in batch


# ---------------------------------------------------------------- lookahead / EMA
def _avg_learner(values: list[float]) -> SimpleNamespace:
    model = nn.Linear(len(values), 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([values]))
    return SimpleNamespace(model=model, epochs=2, train_loader=[0] * 5, step=0, epoch=0,
                           total_steps=10)


def _set(learn, values):
    with torch.no_grad():
        learn.model.weight.copy_(torch.tensor([values]))


def test_lookahead_arithmetic():
    learn = _avg_learner([0.0, 0.0])
    cb = WeightAverage(decay=0.9, every=2, power=1.0)
    cb.before_fit(learn)  # total = 2 epochs x 5 steps = 10
    assert math.isclose(cb.decay_at(5), 0.9 ** 2 * 0.5)
    learn.step = 1
    _set(learn, [1.0, 2.0])
    cb.after_batch(learn)  # step 1: not a multiple of 2, nothing happens
    assert torch.equal(learn.model.weight, torch.tensor([[1.0, 2.0]]))
    learn.step = 4
    cb.after_batch(learn)
    d = 0.81 * 0.4
    expect = torch.tensor([[(1 - d) * 1.0, (1 - d) * 2.0]])
    assert torch.allclose(cb.avg[0], expect) and torch.allclose(learn.model.weight, expect)  # reset to avg
    learn.step, learn.epoch = 10, 1
    _set(learn, [3.0, 3.0])
    cb.before_validate(learn)  # last epoch: the weights become the average itself
    assert torch.allclose(learn.model.weight, expect)
    assert cb.state_dict() == {}  # nothing to keep: avg == weights at epoch ends


def test_config_rejects_an_unknown_average():
    with pytest.raises(ConfigError, match="average='swa'"):
        TrainConfig.from_dict({"average": "swa"})
    with pytest.raises(ConfigError, match="average_every=0"):
        TrainConfig.from_dict({"average_every": 0})


def test_average_covers_bn_running_stats():
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))
    tensors = fast._float_state(net)
    assert any(t is not None and t.data_ptr() == net[1].running_var.data_ptr() for t in tensors)
    assert len(tensors) == 6  # conv w, b; bn w, b, running mean, var (not num_batches_tracked)


# ---------------------------------------------------------------- augmentation and TTA
def _find_shift(out: torch.Tensor, img: torch.Tensor, pad: int) -> tuple[int, int] | None:
    padded = F.pad(img[None], (pad,) * 4, mode="reflect")[0]
    h, w = img.shape[-2:]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            if torch.equal(out, padded[:, dy:dy + h, dx:dx + w]):
                return dy, dx
    return None


def test_recipe_augmentation_alternates_flips_and_translates_at_most_2px():
    spec = recipe_config("fast").augment
    assert spec == "altflip,translate:2"
    aug = build_augment(spec)
    x = torch.randn(16, 3, 8, 8)
    index = torch.arange(100, 116)
    flipped = []
    for epoch in (4, 5):
        out = aug(x, torch.Generator().manual_seed(epoch), epoch=epoch, index=index, seed=3)
        row = []
        for i in range(len(x)):
            plain, mirrored = _find_shift(out[i], x[i], 2), _find_shift(out[i], x[i].flip(-1), 2)
            assert (plain is None) != (mirrored is None), f"image {i}: not a <=2px shift of it or its mirror"
            row.append(mirrored is not None)
        flipped.append(row)
    assert all(a != b for a, b in zip(*flipped))  # each image mirrored in exactly one of two epochs
    assert 0 < sum(flipped[0]) < len(x)  # and not all the same way


def test_tta_views_are_flips_and_one_pixel_translations():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    views = tta_views(x, "flip-translate")
    assert len(views) == 6 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x) and torch.equal(views[1], x.flip(-1))
    for shifted, base in ((views[2], x), (views[3], x.flip(-1))):  # content moved down-right by 1
        assert torch.equal(shifted[..., 1:, 1:], base[..., :-1, :-1])
        assert torch.equal(shifted[..., 0, 1:], base[..., 0, :-1])  # replicated edge row
    for shifted, base in ((views[4], x), (views[5], x.flip(-1))):  # content moved up-left by 1
        assert torch.equal(shifted[..., :-1, :-1], base[..., 1:, 1:])
    assert len(tta_views(x, "flip")) == 2 and recipe_config("fast").tta == "flip-translate"


# ---------------------------------------------------------------- the recipe end to end
class _Probe(Callback):
    """Records the whitening layer after each epoch."""

    order = 99

    def __init__(self):
        self.weights, self.biases, self.kinds = [], [], set()

    def before_fit(self, learn):
        self.kinds = {type(cb) for cb in learn.callbacks}
        self.lr_scales = [g["lr_scale"] for g in learn.optimizer.param_groups]

    def after_epoch(self, learn):
        layer = fast.find_whitening_layer(learn.model)
        self.weights.append(layer.weight.detach().clone())
        self.biases.append(layer.bias.detach().clone())


def _quick(tmp_path, **over):
    values = {"model": "airnet_tiny", "epochs": 4, "batch_size": 100, "runs_dir": str(tmp_path),
              "tensorboard": False, "plots": False, "progress": False, **sgd_values(11.5, 0.0153, 0.85, 100)}
    return recipe_config("fast", {**values, **over})


@pytest.mark.slow  # 15-30 CPU-s
def test_fast_recipe_learns_on_cpu_and_applies_its_pieces(tmp_path):
    data = random_cifar(n_train=600, n_test=200, seed=2)
    probe = _Probe()
    result = train(_quick(tmp_path), callbacks=[probe], data=data)
    assert result.summary["recipe"] == "fast"
    assert {WhiteningInit, WeightAverage} <= probe.kinds and probe.lr_scales == [1.0, 64.0]  # from the config
    assert result.summary["test"]["top1"] > 0.5, result.summary["test"]  # chance is 0.1
    assert result.summary["test"]["tta"] == "flip-translate"
    # whitening: set from training patches, then frozen; its bias trains 3 epochs, then frozen
    cb = WhiteningInit()
    learn = SimpleNamespace(model=create_model("airnet_tiny"), resumed=False)
    from cifarlab.data import DeviceLoader, channel_stats
    mean, std = channel_stats(data.train.images)
    learn.train_loader = DeviceLoader(data.train, 100, mean=mean, std=std, seed=0)
    cb.before_fit(learn)
    assert all(torch.allclose(w, learn.model.whiten.weight, atol=1e-5) for w in probe.weights)
    assert not torch.equal(probe.biases[0], probe.biases[1])  # epoch 1 -> 2: still training
    assert torch.equal(probe.biases[2], probe.biases[3])  # frozen from epoch 4 on


@pytest.mark.slow  # 15-30 CPU-s
def test_fast_recipe_resumes_bit_exactly(tmp_path):
    """Ctrl-C after epoch 2 and --resume: the same weights as one uninterrupted run (the
    whitening is not recomputed, the lookahead average restarts from the checkpoint)."""
    from cifarlab.training import TrainingInterrupted, resume
    from _callbacks import StopAfter
    data = random_cifar(n_train=100, n_test=20, seed=3)
    over = dict(epochs=3, batch_size=50, name="r", **sgd_values(11.5, 0.0153, 0.85, 50))
    full = train(_quick(tmp_path / "a", **over), data=data)
    with pytest.raises(TrainingInterrupted):
        train(_quick(tmp_path / "b", **over), callbacks=[StopAfter(2)], data=data)
    resumed = resume(tmp_path / "b" / "r", data=data, progress=False)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, differ[:5]


def test_fast_recipes_are_registered_with_their_settings():
    cfg = recipe_config("fast")
    assert (cfg.model, cfg.epochs, cfg.batch_size, cfg.val, cfg.label_smoothing) == ("airnet94", 10, 1000, 0, 0.2)
    assert math.isclose(cfg.lr, 11.5 / (1 + 1 / 0.15) * 1000 / 1024) and cfg.channels_last and cfg.amp
    assert 50_000 % cfg.batch_size == 0  # every batch the same shape (one compiled graph)
    assert (cfg.bias_lr_scale, cfg.whiten, cfg.average, cfg.tta) == (64.0, True, "lookahead", "flip-translate")
    assert recipe_config("fast-wide").model == "airnet95"
    default = recipe_config("default")
    assert (default.bias_lr_scale, default.whiten, default.average) == (1.0, False, "none")


def _kinds(cfg: TrainConfig) -> set[type]:
    return {type(cb) for cb in callbacks_for(cfg, "unused", torch.device("cpu"))}


def test_callbacks_follow_the_config_fields_not_the_recipe_name():
    assert not {WhiteningInit, WeightAverage} & _kinds(TrainConfig(recipe="fast"))
    assert {WhiteningInit, WeightAverage} <= _kinds(TrainConfig(whiten=True, average="lookahead"))
    assert {WhiteningInit, WeightAverage} <= _kinds(recipe_config("fast"))


def test_an_old_fast_checkpoint_says_it_cannot_be_resumed(tmp_path):
    """main before issue 13 kept BN biases in the one param group: resume says so in one line."""
    from cifarlab.training import TrainingInterrupted, resume
    from _callbacks import StopAfter
    data = random_cifar(n_train=100, n_test=20, seed=3)
    with pytest.raises(TrainingInterrupted):
        train(_quick(tmp_path, epochs=2, batch_size=50, name="old"), callbacks=[StopAfter(1)], data=data)
    last = tmp_path / "old" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    groups = ckpt["optimizer"]["param_groups"]
    one = {k: v for k, v in groups[0].items() if k != "lr_scale"}
    one["params"] = sorted(groups[0]["params"] + groups[1]["params"])
    ckpt["optimizer"]["param_groups"] = [one]
    ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k not in ("bias_lr_scale", "whiten", "average")}
    torch.save(ckpt, last)
    with pytest.raises(CifarlabError, match="predates the BatchNorm-bias parameter group") as info:
        resume(last.parent, data=data, progress=False)
    assert "\n" not in str(info.value)


@pytest.mark.realdata
@pytest.mark.slow
def test_fast_recipe_learns_real_cifar_subset(real_data, tmp_path):
    """airnet_tiny, 2k real training images, 3 epochs of batch 50: twice chance or better.

    Budgeted real-data test: ~60 s on the shared 2-core machine (measured 29.2% there)."""
    cfg = _quick(tmp_path, epochs=3, batch_size=50, train_subset=2000, test_subset=1000,
                 **sgd_values(11.5, 0.0153, 0.85, 50))
    result = train(cfg, data=real_data)
    assert result.summary["test"]["top1"] > 0.2, result.summary["test"]
