"""benchmarks/keras_throughput.py, the parts that need no TensorFlow.

The Keras definitions themselves need TensorFlow (not a cifarlab dependency): every run of
the benchmark checks them against cifarlab's models (parameter totals and conv layers) and
gives no ratio where they differ. Here: the cifarlab side of that check, and bad options.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from cifarlab.models import create_model
from cifarlab.models.inspect import macs
from cifarlab.models.registry import count_params

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))  # the script imports its neighbours (_env, train_throughput)
    try:
        spec = importlib.util.spec_from_file_location("keras_throughput", BENCH / "keras_throughput.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("name", ["googlenet_small", "resnet18"])
def test_conv_description_adds_up_to_the_models_macs(bench, name):
    """The conv layers the same-model check compares give the conv MACs that
    cifarlab.models.inspect counts with its own hooks (all MACs less the dense layer's)."""
    model = create_model(name)
    convs = bench.torch_convs(model)
    counts = count_params(model)
    params, nontrainable, layers, conv_macs = bench.describe(
        {"params": counts.keras_total, "nontrainable": counts.keras_nontrainable, "convs": convs})
    dense = model.head[-1]
    assert conv_macs == macs(model) - dense.in_features * dense.out_features
    assert len(layers) == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert (params, nontrainable) == (counts.keras_total, counts.keras_nontrainable)
    # the write-up's totals (five-classic-cnns-code.md), which the Keras side must reach too
    assert params == {"googlenet_small": 121_418, "resnet18": 11_183_562}[name]


def test_the_description_tells_models_apart(bench):
    a = bench.describe({"params": 1, "nontrainable": 0, "convs": [[3, 3, 3, 16, 32, 32, 1]]})
    b = bench.describe({"params": 1, "nontrainable": 0, "convs": [[3, 3, 3, 16, 16, 16, 2]]})
    assert a != b and a[3] == 4 * b[3]


@pytest.mark.parametrize("argv, words", [
    (["--models", "vgg16:32"], ["no Keras definition of 'vgg16'", "googlenet_small"]),
    (["--models", "resnet18"], ["MODEL:BATCH", "resnet18:32"]),
    (["--precisions", "fp16"], ["--precisions", "float32"]),
    (["--rounds", "0"], ["at least 1"]),
    (["--keras-python", "/nonexistent/python"], ["make keras-env"]),
])
def test_bad_options_are_one_clear_line(bench, capsys, argv, words):
    with pytest.raises(SystemExit) as exc:
        bench.parse(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert ": error: " in err
    for word in words:
        assert word in err
