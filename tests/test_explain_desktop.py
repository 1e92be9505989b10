"""The desktop window's two toggles: the Grad-CAM overlay and raw (uncalibrated) probabilities."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt starts

from conftest import need_module  # noqa: E402

need_module("PySide6", "desktop extra not installed: pip install 'cifarlab[desktop]'")
need_module("PySide6.QtWidgets", "Qt's shared libraries (libEGL, libxkbcommon, ...) are missing: run "
                                  "`make sysdeps` (scripts/sysdeps.sh, as root)")
from PySide6.QtWidgets import QApplication  # noqa: E402

from cifarlab.training.calibrate import store_in_checkpoint  # noqa: E402
from cifarlab.catalog import Catalog  # noqa: E402
from cifarlab.desktop import ClassifierWindow  # noqa: E402
from cifarlab.inference import Predictor  # noqa: E402

from _checkpoints import write_checkpoint  # noqa: E402


def _pixels(label) -> np.ndarray:
    img = label.pixmap().toImage()
    return np.array([[img.pixel(x, y) for x in range(0, img.width(), 7)] for y in range(0, img.height(), 7)])


def test_toggles_show_the_heat_map_and_the_raw_probabilities(tmp_path):
    qapp = QApplication.instance() or QApplication([])
    path = write_checkpoint(tmp_path / "m.pt", model="lenet5_modern")
    store_in_checkpoint(path, {"temperature": 0.5})
    window = ClassifierWindow(Catalog({"m": str(path)}, runs=False, shipped=False))
    window.show()
    try:
        y, x = np.mgrid[0:90, 0:120]
        pic = tmp_path / "p.png"
        Image.fromarray(np.stack([x * 2, y * 2, np.full_like(x, 90)], -1).astype(np.uint8)).save(pic)
        assert window.open_file(pic)
        qapp.processEvents()
        plain = _pixels(window.picture)
        scaled = [float(b.format().rstrip("%")) for b in window.bars]
        assert "calibrated (temperature 0.50)" in window.timing.text()
        window.explain_box.setChecked(True)
        qapp.processEvents()
        assert not np.array_equal(_pixels(window.picture), plain)  # the heat map is drawn over it
        window.raw_box.setChecked(True)
        qapp.processEvents()
        raw = [float(b.format().rstrip("%")) for b in window.bars]
        expected = Predictor(path, raw_probs=True).predict([pic])[0]
        np.testing.assert_allclose(raw, [100 * p for p in expected.probabilities.values()], atol=0.06)
        assert max(raw) < max(scaled)  # T = 0.5 sharpens: the raw top probability is lower
        window.explain_box.setChecked(False)
        qapp.processEvents()
        assert np.array_equal(_pixels(window.picture), plain)
    finally:
        window.close()
