"""Muon: the orthogonalized filter update, the SGD groups, their wiring and a resumed run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cifarlab.data import random_cifar
from cifarlab.training import TrainConfig, TrainingInterrupted, resume, train
from _callbacks import StopAfter
from cifarlab.training.muon import NS_COEFFICIENTS, Muon, orthogonalize
from cifarlab.training.optim import build_optimizer, param_groups
from cifarlab.errors import ConfigError
from cifarlab.models import create_model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(64, 32, 3, 3), (16, 200), (300, 20)], ids=["filter", "wide", "tall"])
def test_orthogonalize_brings_every_singular_value_near_one(shape, dtype):
    g = torch.Generator().manual_seed(0)
    update = torch.randn(shape, generator=g) * torch.logspace(-1, 1, shape[0])[(...,) + (None,) * (len(shape) - 1)]
    out = orthogonalize(update, dtype=dtype)
    assert out.shape == update.shape and out.dtype == update.dtype
    s = torch.linalg.svdvals(out.reshape(shape[0], -1))
    assert s.min() > 0.6 and s.max() < 1.25, s  # the raw rows span 100x (bf16: same band)
    # against the exact polar factor U V^T of the raw update (float64 SVD): the same singular
    # vectors (U^T out V is diagonal), singular values in the quintic's band around 1 ...
    m = update.reshape(shape[0], -1).double()
    u, sv, vh = torch.linalg.svd(m, full_matrices=False)
    o = out.reshape(shape[0], -1).double()
    core = u.T @ o @ vh.T
    tol = 1e-5 if dtype == torch.float32 else 0.06
    assert (core - torch.diag(torch.diagonal(core))).abs().max() < tol
    assert torch.diagonal(core).min() > 0.6 and torch.diagonal(core).max() < 1.25
    assert (o - u @ vh).norm() / (u @ vh).norm() < 0.25
    # ... and exactly where five quintic steps take each singular value of M / |M|_F
    a, b, c = NS_COEFFICIENTS
    x = sv / (m.norm() + 1e-7)
    for _ in range(5):
        x = a * x + b * x ** 3 + c * x ** 5
    exact = u @ torch.diag(x) @ vh
    assert (o - exact).norm() / exact.norm() < tol


def test_groups_without_orthogonalize_step_exactly_as_torch_sgd():
    torch.manual_seed(0)
    a, b = nn.Linear(6, 4), nn.Linear(6, 4)
    b.load_state_dict(a.state_dict())
    ours = Muon(a.parameters(), lr=0.1, momentum=0.85, nesterov=True, weight_decay=0.01)
    ref = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.85, nesterov=True, weight_decay=0.01)
    for step in range(4):
        x = torch.randn(8, 6)
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)


def test_a_muon_step_normalizes_the_filter_then_moves_it_by_the_orthogonalized_update():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(8, 3, 3, 3) * 5)
    w.grad = torch.randn_like(w)
    before, grad = w.detach().clone(), w.grad.clone()
    Muon([{"params": [w], "orthogonalize": True, "normalize": True}], lr=0.1, momentum=0.6).step()
    nesterov = grad + 0.6 * grad  # first step: buffer = gradient
    expected = before * (8 ** 0.5 / before.norm()) - 0.1 * orthogonalize(nesterov)
    torch.testing.assert_close(w.detach(), expected)


@pytest.mark.parametrize("native,amp,expected", [(True, True, torch.bfloat16), (True, False, torch.float32),
                                                 (False, True, torch.float32)])
def test_newton_schulz_runs_in_bf16_only_where_training_does(monkeypatch, native, amp, expected):
    """bf16 iterations where matmuls in it are native and the run trains in it; float32 elsewhere
    (emulated bf16 would be slower). A machine property: the saved state does not carry it."""
    from cifarlab.inference import hardware
    monkeypatch.setattr(hardware, "bf16_native", lambda device: native)
    opt = build_optimizer(create_model("airnet_tiny"), TrainConfig(optimizer="muon", lr=0.1, amp=amp))
    assert opt.ns_dtype == expected
    assert all("ns_dtype" not in g for g in opt.state_dict()["param_groups"])
    w = opt.param_groups[-1]["params"][0]
    w.grad = torch.randn_like(w)
    opt.step()
    assert w.dtype == torch.float32


def test_muon_config_puts_the_filters_in_their_own_last_group():
    cfg = TrainConfig.from_dict({"model": "airnet_tiny", "optimizer": "muon", "lr": 0.02, "muon_lr": 0.08,
                                 "muon_momentum": 0.7, "muon_normalize": True, "bias_lr_scale": 64.0})
    model = create_model("airnet_tiny")
    groups = param_groups(model, cfg)
    filters = {id(p) for p in model.parameters() if p.ndim == 4}
    assert {id(p) for p in groups[-1]["params"]} == filters and groups[-1]["orthogonalize"]
    assert groups[-1]["lr_scale"] == pytest.approx(4.0) and groups[-1]["momentum"] == 0.7
    assert groups[-1]["weight_decay"] == 0.0  # normalized filters need no decay
    assert groups[0]["lr_scale"] == 1.0 and groups[1]["lr_scale"] == 64.0
    assert not any(id(p) in filters for g in groups[:-1] for p in g["params"])
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, Muon) and len(opt.param_groups) == 3
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("bad", [{"muon_lr": 0}, {"muon_momentum": 1.0}, {"muon_momentum": -0.1}])
def test_bad_muon_settings_are_one_config_error(bad):
    with pytest.raises(ConfigError, match="muon_"):
        TrainConfig.from_dict({"optimizer": "muon", **bad})


@pytest.mark.slow  # two trainings and a resume: ~50 CPU-s
def test_a_muon_run_resumes_bit_exact(tmp_path):
    data = random_cifar(n_train=160, n_test=40, val=40, seed=0)
    base = dict(model="airnet_tiny", epochs=2, batch_size=32, runs_dir=str(tmp_path), tensorboard=False,
                plots=False, progress=False, augment="flip", optimizer="muon", lr=0.05, muon_lr=0.1,
                muon_normalize=True, bias_lr_scale=8.0)
    full = train({**base, "name": "full"}, data=data)
    with pytest.raises(TrainingInterrupted):
        train({**base, "name": "cut"}, callbacks=[StopAfter(1, batch=2)], data=data)
    resumed = resume(tmp_path / "cut", data=data)
    a = torch.load(full.run_dir / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(resumed.run_dir / "last.pt", weights_only=True)["state_dict"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
