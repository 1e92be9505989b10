"""Saliency and calibrated probabilities where people see them: ``cifarlab predict
--explain/--raw-probs``, the Predictor, the desktop window's toggles, the ONNX export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifarlab.calibration import write_sidecar
from cifarlab.training.calibrate import store_in_checkpoint
from cifarlab.inference.predict import Predictor

from _checkpoints import write_checkpoint

T = 0.5  # a temperature that visibly sharpens the probabilities


def _photo(path: Path) -> Path:
    y, x = np.mgrid[0:90, 0:120]
    rgb = np.stack([x * 255 // 119, y * 255 // 89, np.full_like(x, 90)], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture
def calibrated(tmp_path):
    path = write_checkpoint(tmp_path / "m.pt", model="lenet5_modern")
    store_in_checkpoint(path, {"temperature": T, "fitted_on": "val"})
    return path


def test_predictor_scales_by_the_stored_temperature_and_raw_does_not(calibrated, tmp_path):
    pic = np.asarray(Image.open(_photo(tmp_path / "p.png")).resize((32, 32), Image.BILINEAR))
    pred = Predictor(calibrated, device="cpu")
    assert pred.temperature == T
    with torch.no_grad():
        z = pred.model(pred.preprocess([pic])).double()
    np.testing.assert_allclose(pred.probabilities([pic])[0], torch.softmax(z / T, 1)[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(pred.probabilities([pic], raw=True)[0], torch.softmax(z, 1)[0].numpy(), atol=1e-6)
    raw = Predictor(calibrated, device="cpu", raw_probs=True)
    np.testing.assert_allclose(raw.probabilities([pic])[0], torch.softmax(z, 1)[0].numpy(), atol=1e-6)


def test_a_sidecar_gives_an_untouched_file_its_temperature(tmp_path):
    path = write_checkpoint(tmp_path / "shipped.pt", model="lenet5_modern")
    before = path.read_bytes()
    assert Predictor(path, device="cpu").temperature is None
    write_sidecar(path, {"temperature": 1.25})
    assert Predictor(path, device="cpu").temperature == 1.25
    assert path.read_bytes() == before


def test_predictor_explain_gives_a_map_that_overlays_the_picture(calibrated, tmp_path):
    from cifarlab.explain import overlay
    photo = _photo(tmp_path / "p.png")
    heat = Predictor(calibrated, device="cpu").explain(photo)
    assert heat.shape == (32, 32) and 0 <= heat.min() and heat.max() <= 1
    assert overlay(Image.open(photo), heat).size == (120, 90)


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.run([sys.executable, "-m", "cifarlab", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


@pytest.mark.slow
def test_cli_predict_explain_and_raw_probs(calibrated, tmp_path):
    photo = _photo(tmp_path / "p.png")
    out = tmp_path / "why"
    scaled = _cli("predict", str(calibrated), str(photo), "--json", "--explain", str(out))
    assert scaled.returncode == 0, scaled.stderr
    raw = _cli("predict", str(calibrated), str(photo), "--json", "--raw-probs")
    p_scaled = json.loads(scaled.stdout)["probabilities"]
    p_raw = json.loads(raw.stdout)["probabilities"]
    assert max(p_scaled.values()) > max(p_raw.values())  # T < 1 sharpens
    written = list(out.glob("*.png"))
    assert len(written) == 1 and Image.open(written[0]).size == (120, 90)
    assert not np.array_equal(np.asarray(Image.open(written[0])), np.asarray(Image.open(photo).convert("RGB")))


def test_onnx_export_carries_the_temperature(calibrated, tmp_path):
    from conftest import need_module
    need_module("onnx", "the onnx extra is not installed: pip install 'cifarlab[onnx]'")
    need_module("onnxruntime", "the onnx extra is not installed: pip install 'cifarlab[onnx]'")
    from cifarlab.inference.export import export_checkpoint
    onnx_path = export_checkpoint(calibrated, tmp_path / "m.onnx")
    pics = [np.asarray(Image.open(_photo(tmp_path / "p.png")).resize((32, 32)))] * 2
    po, pt = Predictor(onnx_path), Predictor(calibrated, device="cpu")
    assert po.temperature == T and po.temperature_in_graph
    np.testing.assert_allclose(po.probabilities(pics), pt.probabilities(pics), atol=1e-5)
    np.testing.assert_allclose(po.probabilities(pics, raw=True), pt.probabilities(pics, raw=True), atol=1e-5)
    assert not np.allclose(pt.probabilities(pics), pt.probabilities(pics, raw=True))
