"""TrainConfig: typed overrides, unknown keys fatal, recipes, CLI precedence."""

from __future__ import annotations

import json

import pytest

from cifarlab.cli import build_parser
from cifarlab.cli.train_cmd import config_from_args
from cifarlab.training import TrainConfig, list_recipes, recipe_config
from cifarlab.errors import ConfigError


def test_defaults_are_the_documented_recipe():
    cfg = TrainConfig()
    assert (cfg.model, cfg.optimizer, cfg.nesterov, cfg.lr, cfg.batch_size) == ("resnet20", "sgd", True, 0.1, 128)
    assert cfg.augment == "crop:4,flip" and cfg.label_smoothing == 0.1 and cfg.weight_decay == 5e-4


def test_unknown_key_is_fatal_and_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown config key 'lrr'.*valid keys: .*lr"):
        TrainConfig.from_dict({"lrr": 0.1})


@pytest.mark.parametrize("key,value", [("epochs", "ten"), ("lr", True), ("nesterov", 3), ("milestones", {"a": 1}),
                                       ("model_kwargs", [1]), ("epochs", 2.5)])
def test_wrong_types_are_rejected(key, value):
    with pytest.raises(ConfigError, match=key):
        TrainConfig.from_dict({key: value})


def test_text_values_are_parsed_like_cli_flags():
    cfg = TrainConfig.from_dict({"epochs": "3", "lr": "1e-3", "nesterov": "false", "milestones": "100,200",
                                 "train_subset": "null", "model_kwargs": '{"act": "gelu"}'})
    assert cfg.epochs == 3 and cfg.lr == 0.001 and cfg.nesterov is False
    assert cfg.milestones == [100, 200] and cfg.train_subset is None and cfg.model_kwargs == {"act": "gelu"}


@pytest.mark.parametrize("values,message", [
    ({"optimizer": "lbfgs"}, "optimizer='lbfgs' is not one of: sgd, muon, adam"),
    ({"loss": "hinge"}, "loss='hinge' is not one of: ce, bce, mse"),
    ({"schedule": "warmup"}, "schedule='warmup' is not one of: constant, step, cosine, onecycle, plateau"),
    ({"lr": 0}, "lr=0.0 must be > 0"),
    ({"label_smoothing": 1.0}, r"label_smoothing=1.0 must be in \[0, 1\)"),
    ({"grayscale": 2}, "grayscale=2 must be 1, 3 or null"),
    ({"device": "tpu"}, "device='tpu' is not one of: auto, cpu, cuda, mps")])
def test_out_of_range_values_are_rejected(values, message):
    """One line naming the setting, the bad value and what is allowed."""
    with pytest.raises(ConfigError, match=f"^{message}") as err:
        TrainConfig.from_dict(values)
    assert "\n" not in str(err.value)


def test_reference_recipe_matches_the_five_classic_settings():
    cfg = recipe_config("reference")
    assert (cfg.optimizer, cfg.lr, cfg.loss, cfg.batch_size, cfg.epochs, cfg.augment) == \
        ("adam", 1e-3, "ce", 32, 10, "none")
    assert cfg.label_smoothing == 0 and cfg.schedule == "constant"
    assert {"default", "reference"} <= set(list_recipes())


def test_unknown_recipe_names_known_ones():
    with pytest.raises(ConfigError, match="known recipes: .*reference"):
        recipe_config("fastest")


def test_cli_precedence_recipe_file_flags_set(tmp_path):
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"epochs": 7, "batch_size": 64, "lr": 0.5}))
    args = build_parser().parse_args(["train", "--recipe", "reference", "--config", str(cfg_file),
                                      "--lr", "0.02", "--set", "batch_size=16"])
    cfg = config_from_args(args)
    assert cfg.optimizer == "adam" and cfg.augment == "none"  # from the recipe
    assert cfg.epochs == 7  # file over recipe
    assert cfg.lr == 0.02  # flag over file
    assert cfg.batch_size == 16  # --set over everything
    assert cfg.recipe == "reference"


def test_act_flag_fills_model_kwargs():
    cfg = config_from_args(build_parser().parse_args(["train", "--act", "gelu", "--set", "epochs=2"]))
    assert cfg.model_kwargs == {"act": "gelu"} and cfg.epochs == 2


def test_cli_without_flags_is_the_main_job_and_a_flag_keeps_the_defaults():
    """`cifarlab train` alone trains what `make train` does (cpu-5min on a CPU, fast on a GPU);
    a flag that changes what is trained starts from the plain defaults instead."""
    import torch
    cfg = config_from_args(build_parser().parse_args(["train"]))
    assert cfg.to_dict() == recipe_config("fast" if torch.cuda.is_available() else "cpu-5min").to_dict()
    cfg = config_from_args(build_parser().parse_args(["train", "--epochs", "3"]))
    assert cfg.to_dict() == TrainConfig(epochs=3).to_dict()


def test_bad_config_file_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{epochs: 3")
    with pytest.raises(ConfigError, match="bad.json is not valid JSON"):
        TrainConfig.from_json(bad)
