"""The CPU time-budget recipes and what they add: low-resolution first epochs."""

from __future__ import annotations

import pytest
import torch

from cifarlab.data import DeviceLoader, random_cifar
from cifarlab.data.loader import format_resolutions, parse_resolutions, resize, size_at_epoch
from cifarlab.training import Callback, recipe_config, train
from cifarlab.training.recipes import list_recipes, sgd_values
from cifarlab.errors import ConfigError
from cifarlab.models import model_info

CPU_RECIPES = ["cpu-2min", "cpu-5min", "cpu-15min", "cpu-45min"]


def test_resolution_stages_parse_and_map_epochs():
    stages = parse_resolutions("16:2, 24:1")
    assert stages == [(16, 2), (24, 1)]
    assert format_resolutions(stages) == "16:2,24:1" and format_resolutions([[16, 3]]) == "16:3"
    assert format_resolutions([]) == "" and parse_resolutions(format_resolutions([])) == []
    assert [size_at_epoch(stages, e) for e in range(5)] == [16, 16, 24, None, None]
    assert parse_resolutions("") == [] and parse_resolutions("none") == []


@pytest.mark.parametrize("bad", ["16", "16:0", "4:2", "x:1", "16:2,"])
def test_a_bad_resolution_spec_is_one_config_error(bad):
    with pytest.raises(ConfigError, match="resolutions=.*SIZE:EPOCHS") as info:
        recipe_config("cpu-2min", {"resolutions": bad})
    assert "\n" not in str(info.value)


def test_downscaling_averages_each_block_of_pixels():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    small = resize(x, 2)
    expected = x.reshape(2, 3, 2, 2, 2, 2).mean(dim=(3, 5))  # mean of each 2x2 block
    assert small.shape == (2, 3, 2, 2) and torch.allclose(small, expected)


def test_loader_yields_batches_at_its_size_in_its_memory_format():
    data = random_cifar(n_train=40, n_test=4, seed=0)
    loader = DeviceLoader(data.train, 20, shuffle=False, channels_last=True)
    full = next(iter(loader))[0]
    loader.size = 16
    small = next(iter(loader))[0]
    assert full.shape[-1] == 32 and small.shape == (20, 3, 16, 16)
    assert small.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(small, resize(full, 16), atol=1e-6)


class _Sizes(Callback):
    def __init__(self):
        self.seen, self.costs = [], None

    def before_fit(self, learn):
        self.costs = learn.epoch_costs  # set by the resize callback, which runs first

    def after_batch(self, learn):
        if learn.batch_idx == 0:
            self.seen.append(tuple(learn.x.shape[-2:]))


def test_a_run_trains_its_first_epochs_smaller_and_tests_at_full_size(tmp_path):
    cfg = recipe_config("cpu-2min", {"model": "airnet_tiny", "epochs": 4, "resolutions": "16:1,24:2",
                                     "runs_dir": str(tmp_path), "progress": False, "plots": False,
                                     "tensorboard": False, "batch_size": 50, **sgd_values(11.5, 0.0153, 0.85, 50)})
    spy = _Sizes()
    result = train(cfg, callbacks=[spy], data=random_cifar(n_train=600, n_test=100, seed=1))
    assert spy.seen == [(16, 16), (24, 24), (24, 24), (32, 32)]
    assert spy.costs == pytest.approx([0.25, 0.5625, 0.5625, 1.0])
    assert result.summary["test"]["n"] == 100 and result.summary["test"]["top1"] > 0.3  # chance 0.1


@pytest.mark.parametrize("name", CPU_RECIPES)
def test_cpu_recipes_are_fast_recipes_with_existing_models(name):
    cfg = recipe_config(name)
    assert model_info(cfg.model) is not None
    assert cfg.whiten and cfg.average == "lookahead" and cfg.bias_lr_scale == 64.0 and cfg.channels_last
    assert cfg.val == 0 and cfg.batch_size == 250
    # the mirror where 6 test passes cost a share of an epoch that pays more (2 minutes); the
    # longer budgets spend a third to a half of one on flip-translate's (results/cpu_probes.csv)
    assert cfg.tta == ("flip" if name == "cpu-2min" else "flip-translate")
    assert name in list_recipes() and list_recipes()[name].endswith(f"{cfg.tta} TTA")  # the description says it
    assert cfg.optimizer == "muon" and cfg.muon_normalize  # airnet: BatchNorm after every conv
    # the short budgets test in bf16 where they train in it (a float32 test: 6-8 s of 2 minutes)
    assert cfg.amp_eval is (name in ("cpu-2min", "cpu-5min"))


@pytest.mark.slow  # two 3-epoch trainings on 5,000 real images: minutes on a float32-only CPU
def test_cpu_recipe_learns_a_real_subset(real_data, tmp_path):
    """cpu-2min's pieces on 5,000 real images, 3 epochs (2 at low resolution), with its Muon
    filters and with plain SGD instead; ~15 s each. A broken resize or whitening lands near
    10-30%; a broken Muon step (wrong lr group, no orthogonalization) falls well behind SGD.
    Measured on the shared JPEG copy (AMD EPYC, 65adba6): Muon 53.6%, SGD 47.8%."""
    accs = {}
    for optimizer in ("muon", "sgd"):
        cfg = recipe_config("cpu-2min", {"epochs": 3, "resolutions": "16:1,24:1", "train_subset": 5000,
                                         "test_subset": 2000, "runs_dir": str(tmp_path), "progress": False,
                                         "plots": False, "tensorboard": False, "optimizer": optimizer})
        accs[optimizer] = train(cfg, data=real_data).summary["test"]["top1"]
    print("cpu-2min pieces on a 5k real subset:", accs)
    assert accs["muon"] > 0.40, accs
    assert accs["muon"] > accs["sgd"] - 0.01, accs
