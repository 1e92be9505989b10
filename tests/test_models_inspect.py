"""MACs, memory figures, summaries, diagrams and the `models` / `summary` / `diagram` CLI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import torch
import torch.nn as nn

from cifarlab.cli import main
from cifarlab.models import create_model, list_models
from cifarlab.models.inspect import macs, measure_train_step_memory, notebook_memory_estimate, trace

from conftest import need, need_module


def test_macs_conv_linear_groups_and_stride():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),
                          nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    expected = 32 * 32 * 8 * (3 * 9) + 16 * 16 * 8 * (1 * 9) + 8 * 16 * 16 * 10
    assert macs(model) == expected


def test_macs_of_lenet5_by_hand():
    expected = 28 * 28 * 6 * (3 * 25) + 10 * 10 * 16 * (6 * 25) + 400 * 120 + 120 * 84 + 84 * 10
    assert macs(create_model("lenet5")) == expected


def test_trace_records_shapes_and_own_params():
    records = trace(create_model("lenet5"))
    convs = [r for r in records if r.kind == "Conv2d"]
    assert [r.output_shapes[0] for r in convs] == [(6, 28, 28), (16, 10, 10)]
    assert convs[0].params == 3 * 6 * 25 + 6
    assert records[-1].output_shapes == [(10,)]


def test_notebook_memory_formula_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4096, 10))
    per_image = 3 * 32 * 32 + 4096 + 4096 + 4096 + 10   # input + each layer's output
    params = 3 * 4 * 9 + 4 + 4096 * 10 + 10
    assert notebook_memory_estimate(model, batch_size=2) == 4 * 2 * (per_image + params)


def test_measured_cpu_memory_covers_params_and_grows_with_batch():
    torch.manual_seed(0)
    small = measure_train_step_memory(create_model("lenet5_modern"), batch_size=2)
    large = measure_train_step_memory(create_model("lenet5_modern"), batch_size=256)
    need(small.peak_bytes is not None, f"no CPU memory measurement in this torch: {small.method}")
    param_bytes = 4 * 62_028
    assert small.peak_bytes >= 3 * param_bytes     # weights + grads + momentum
    assert large.peak_bytes > small.peak_bytes + 256 * 3 * 32 * 32 * 4


def _flop_counter_macs(name: str) -> int:
    """MACs of one 32x32 image counted another way: torch's FlopCounterMode (2 FLOPs per
    multiply-add of conv and matmul) on a shape-only forward on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        model = create_model(name).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32, device="meta"))
    return counter.get_total_flops() // 2


def _cli_rows(capsys) -> list[dict]:
    assert main(["models", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_models_json_lists_everything(capsys):
    rows = _cli_rows(capsys)
    assert [r["name"] for r in rows] == list_models()
    by_name = {r["name"]: r for r in rows}
    lenet = 28 * 28 * 6 * (3 * 25) + 10 * 10 * 16 * (6 * 25) + 400 * 120 + 120 * 84 + 84 * 10  # by hand
    assert by_name["lenet5"]["macs"] == lenet and by_name["lenet5_modern"]["macs"] == lenet
    assert by_name["lenet5"]["params"] == (3 * 25 + 1) * 6 + (6 * 25 + 1) * 16 + 401 * 120 + 121 * 84 + 85 * 10
    for name in ("airnet_tiny", "resnet20", "googlenet_small"):  # the small ones; all of them: the slow test
        assert by_name[name]["macs"] == _flop_counter_macs(name), name
    for r in rows:
        if r["ref_params"] is not None:
            assert r["keras_total_matches"] is True, r["name"]


@pytest.mark.slow
def test_cli_models_macs_and_params_of_every_model(capsys):
    for r in _cli_rows(capsys):
        assert r["macs"] == _flop_counter_macs(r["name"]), r["name"]
        model = create_model(r["name"])
        assert r["params"] == sum(p.numel() for p in model.parameters() if p.requires_grad), r["name"]


def test_cli_models_table_and_pattern(capsys):
    assert main(["models", "vgg1*"]) == 0
    out = capsys.readouterr().out
    assert "vgg16_faithful" in out and "resnet18" not in out


@pytest.mark.slow  # ~8 CPU-s
def test_cli_summary_resnet18(capsys):
    assert main(["summary", "resnet18", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "11,183,562" in out and "11,173,962" in out
    assert "blocks.7.conv2" in out
    assert "notebook" in out and "measured on cpu" in out


def test_cli_summary_grayscale(capsys):
    assert main(["summary", "lenet5", "--in-chans", "1", "--batch-size", "2"]) == 0
    assert "61,706" in capsys.readouterr().out   # 62,006 - 2 input channels x 6 x 25


def test_cli_unknown_model_is_one_line_error(capsys):
    assert main(["summary", "resnet181"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("cifarlab: error:") and "resnet18" in err and "\n" not in err


def test_cli_diagram_svg_parses_and_names_layers(tmp_path, capsys):
    path = tmp_path / "x.svg"
    assert main(["diagram", "resnet18", "-o", str(path)]) == 0
    root = ET.parse(path).getroot()
    text = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    assert "stem.0: Conv2d" in text and "blocks.7.conv2: Conv2d" in text and "(512, 4, 4)" in text
    layers = [m for m in create_model("resnet18").modules() if not list(m.children())
              and not isinstance(m, torch.nn.Identity)]
    nodes = [g for g in root.iter() if g.tag.endswith("g") and "node" in (g.get("class") or "")]
    # one box per leaf module, plus input, output and the 8 additions of the residual blocks
    assert len(nodes) == len(layers) + 2 + 8
    assert [p.name for p in tmp_path.iterdir()] == ["x.svg"]   # no temp file left behind


def test_cli_diagram_png(tmp_path):
    need_module("matplotlib", "PNG diagrams need the plots extra")
    path = tmp_path / "g.png"
    assert main(["diagram", "googlenet_small", "-o", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_diagram_rejects_other_suffix(tmp_path, capsys):
    assert main(["diagram", "lenet5", "-o", str(tmp_path / "x.pdf")]) == 1
    assert ".svg or .png" in capsys.readouterr().err
