"""The model catalogue: shipped, operator and run entries, names only, packaging, the shipped file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cifarlab.catalog import MAX_SHIPPED_BYTES, Catalog, default_checkpoint, package_run, parse_named
from cifarlab.data import random_cifar
from cifarlab.data.synthetic import CIFAR10_CLASSES
from cifarlab.training import train
from cifarlab.inference import Predictor
from cifarlab.inference.checkpoint import FORMAT, dequantize_state, load_model, quantize_state
from cifarlab.errors import CifarlabError, ConfigError, ModelError
from cifarlab.models import count_params, create_model
from cifarlab.runlog import Registry
from cifarlab.training.record import RegistryCallback

from _checkpoints import write_checkpoint
from conftest import need, need_module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished 1-epoch run recorded in its own registry file."""
    home = tmp_path_factory.mktemp("home")
    reg = Registry(home / "runs.sqlite")
    data = random_cifar(n_train=120, n_test=40, val=20, seed=1)
    r = train(dict(model="lenet5_modern", epochs=1, batch_size=32, runs_dir=str(home / "runs"),
                   name="tiny", tensorboard=False, plots=False, progress=False, augment="none"),
              callbacks=[RegistryCallback(registry=reg)], data=data)
    return r, reg


def test_operator_entry_states_accuracy_and_parameters(tmp_path):
    path = write_checkpoint(tmp_path / "a.pt", top1=0.37)
    entry = Catalog({"mine": str(path)}, runs=False, shipped=False).resolve("mine")
    assert entry.accuracy == pytest.approx(0.37)
    assert entry.parameters == count_params(create_model("resnet20")).trainable
    assert (entry.source, entry.model) == ("operator", "resnet20")
    assert "path" not in entry.public() and "37.00%" in entry.label()


def test_resolve_takes_names_never_paths(tmp_path):
    path = write_checkpoint(tmp_path / "a.pt")
    catalog = Catalog({"mine": str(path)}, runs=False, shipped=False)
    for bad in (str(path), "../a.pt", "MINE", ""):
        with pytest.raises(ModelError, match="choose one of: mine"):
            catalog.resolve(bad)


def test_bad_operator_checkpoints_are_one_line_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="does not exist"):
        Catalog({"x": str(tmp_path / "missing.pt")}, runs=False, shipped=False)
    with pytest.raises(Exception, match="not a readable checkpoint"):
        Catalog({"x": str(tmp_path / "junk.pt")}, runs=False, shipped=False)
    with pytest.raises(ConfigError, match="NAME=PATH"):
        parse_named(["nopath"])
    assert parse_named(["a=x.pt", "b = y=z.pt"]) == {"a": "x.pt", "b": "y=z.pt"}


def test_finished_runs_appear_with_their_test_accuracy(tiny_run):
    result, reg = tiny_run
    entries = Catalog(runs=True, shipped=False, registry=reg).entries()
    assert [e.name for e in entries] == ["tiny"]
    entry = entries[0]
    assert entry.source == "run" and entry.path.endswith("best.pt")
    assert entry.accuracy == pytest.approx(result.summary["test"]["top1"])
    assert entry.parameters == count_params(create_model("lenet5_modern")).trainable
    assert "1 epoch," in entry.description and str(result.run_dir) not in str(entry.public())


def test_run_named_like_an_operator_model_gets_a_distinct_name(tiny_run, tmp_path):
    _, reg = tiny_run
    path = write_checkpoint(tmp_path / "a.pt")
    names = Catalog({"tiny": str(path)}, runs=True, shipped=False, registry=reg).names()
    assert names[0] == "tiny" and len(names) == 2 and names[1].startswith("tiny-")


def test_predictor_is_loaded_once(tmp_path):
    catalog = Catalog({"mine": str(write_checkpoint(tmp_path / "a.pt"))}, runs=False, shipped=False)
    assert catalog.predictor("mine") is catalog.predictor("mine")


def test_package_run_is_slim_and_predicts_like_the_run(tiny_run, tmp_path):
    result, _ = tiny_run
    out = tmp_path / "default.pt"
    meta = package_run(result.run_dir, out)
    assert meta["bytes"] == out.stat().st_size <= MAX_SHIPPED_BYTES
    assert torch.load(out, map_location="cpu", weights_only=True)["format"] == FORMAT
    assert out.stat().st_size < (result.run_dir / "best.pt").stat().st_size  # optimizer state dropped
    entry = Catalog({"packed": str(out)}, runs=False, shipped=False).resolve("packed")
    assert entry.accuracy == pytest.approx(result.summary["test"]["top1"])
    assert meta["provenance"]["data"]["source"] == result.summary["data"]["source"]
    pics = list(random_cifar(n_train=10, n_test=0, seed=5).train.images)
    np.testing.assert_allclose(Predictor(out).probabilities(pics),
                               Predictor(result.run_dir / "best.pt").probabilities(pics), atol=1e-6)
    half = package_run(result.run_dir, tmp_path / "half.pt", half=True)
    assert half["weights_dtype"] == "float16" and half["bytes"] < meta["bytes"]
    np.testing.assert_allclose(Predictor(tmp_path / "half.pt").probabilities(pics),
                               Predictor(out).probabilities(pics), atol=2e-2)
    int8 = package_run(result.run_dir, tmp_path / "int8.pt", weights="int8")
    assert int8["weights_dtype"] == "int8" and int8["bytes"] < half["bytes"]
    raw = torch.load(tmp_path / "int8.pt", map_location="cpu", weights_only=True)
    assert raw["state_dict"]["features.0.weight"].dtype == torch.int8  # stored as int8 ...
    model, _ = load_model(tmp_path / "int8.pt")
    assert model.features[0].weight.dtype == torch.float32  # ... and loaded as float32
    np.testing.assert_allclose(Predictor(tmp_path / "int8.pt").probabilities(pics),
                               Predictor(out).probabilities(pics), atol=2e-2)
    with pytest.raises(ConfigError, match="weights='int4' is not one of"):
        package_run(result.run_dir, tmp_path / "int4.pt", weights="int4")


def test_int8_weights_are_within_half_a_step_of_their_channel_and_damage_is_named(tmp_path):
    torch.manual_seed(0)
    state = {"conv.weight": torch.randn(8, 3, 3, 3) * torch.logspace(-3, 0, 8).view(8, 1, 1, 1),
             "bn.weight": torch.rand(8), "bn.num_batches_tracked": torch.tensor(5)}
    q, scales = quantize_state(state)
    assert q["conv.weight"].dtype == torch.int8 and set(scales) == {"conv.weight"}
    assert q["bn.weight"] is state["bn.weight"]  # 1-d tensors stay float32
    back = dequantize_state(q, scales)["conv.weight"]
    step = scales["conv.weight"].view(8, 1, 1, 1)
    assert ((back - state["conv.weight"]).abs() <= step / 2 + 1e-9).all()  # small channels keep their precision
    assert torch.allclose(back.abs().flatten(1).amax(1), state["conv.weight"].abs().flatten(1).amax(1))
    with pytest.raises(CifarlabError, match="damaged: its int8 weight 'conv.weight' does not match its scales"):
        dequantize_state(q, {"conv.weight": torch.ones(4)}, "x.pt")


def test_package_refuses_an_unfinished_run(tmp_path):
    with pytest.raises(ConfigError, match="summary.json"):
        package_run(tmp_path, tmp_path / "x.pt")


def test_shipped_default_model():
    path = _shipped_or_skip()
    assert path.stat().st_size <= MAX_SHIPPED_BYTES
    raw = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code: see test_untrusted_checkpoint
    stated = raw["test"]
    assert raw["format"] == FORMAT and stated["n"] == 10000
    assert stated["top1"] * 10000 == pytest.approx(round(stated["top1"] * 10000), abs=1e-6)  # a count of images
    entry = Catalog(runs=False).resolve("default")
    assert entry.source == "shipped" and entry.accuracy == stated["top1"] and entry.top5 == stated["top5"]
    assert entry.parameters == count_params(create_model(raw["model"]["name"])).trainable
    assert f"{entry.accuracy:.2%}" in entry.description
    probs = Catalog(runs=False).predictor("default").probabilities([np.full((32, 32, 3), 128, np.uint8)])
    assert probs.shape == (1, 10) and probs.sum() == pytest.approx(1.0, abs=1e-4)


def test_an_onnx_export_can_be_offered(tiny_run, tmp_path):
    need_module("onnxruntime", "onnx extra not installed: pip install 'cifarlab[onnx]'")
    from cifarlab.inference.export import export_checkpoint
    result, _ = tiny_run
    onnx = export_checkpoint(result.run_dir / "best.pt")  # beside best.pt, so summary.json is found
    catalog = Catalog({"fast": str(onnx)}, runs=False, shipped=False)
    entry = catalog.resolve("fast")
    assert entry.model == "lenet5_modern" and entry.accuracy == pytest.approx(result.summary["test"]["top1"])
    pics = list(random_cifar(n_train=4, n_test=0, seed=2).train.images)
    np.testing.assert_allclose(catalog.predictor("fast").probabilities(pics),
                               Predictor(result.run_dir / "best.pt").probabilities(pics), atol=1e-4)


def _shipped_or_skip():
    path = default_checkpoint()
    need(path.is_file(), f"no shipped model at {path}: run scripts/package_model.py RUN_DIR to make one")
    return path


def test_predict_cli_takes_a_model_name(tmp_path, capsys):
    from PIL import Image

    from cifarlab.cli import main
    _shipped_or_skip()
    pic = tmp_path / "pic.png"
    Image.fromarray(np.full((40, 30, 4), 200, np.uint8), "RGBA").save(pic)
    assert main(["predict", "default", str(pic), "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{pic}: ") and line.split()[1] in CIFAR10_CLASSES
    assert main(["predict", "no-such-model", str(pic)]) == 1
    err = capsys.readouterr().err
    assert "no model called 'no-such-model'" in err and "default" in err


# the shipped models' stated accuracies are re-measured through the Predictor, the path the
# apps use: tests/test_reference_predict.py::test_shipped_model_states_what_the_predictor_measures
