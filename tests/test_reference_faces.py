"""The web API and the desktop window against the reference of tests/_reference.py.

The faces' own tests (test_web_*.py, test_desktop.py) compare them with the Predictor; here
each is compared with probabilities computed without cifarlab's preprocessing or prediction
code (Pillow resize, numpy normalization, the bare module), so a fault shared by the
Predictor and a face cannot pass.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt starts

from cifarlab.catalog import Catalog  # noqa: E402

from _reference import CLASSES, random_lenet, reference_for, save_ref_checkpoint  # noqa: E402
from conftest import need_module  # noqa: E402


@pytest.fixture(scope="module")
def lenet():
    return random_lenet(seed=3)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, lenet):
    path = save_ref_checkpoint(tmp_path_factory.mktemp("faces") / "ref.pt", lenet, "lenet5_modern", top1=0.57)
    return Catalog({"ref": str(path)}, runs=False, shipped=False)


def _picture(path, size=(300, 200), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(path)
    return path


def test_web_api_answers_the_reference_probabilities(catalog, lenet, tmp_path):
    need_module("fastapi", "web extra not installed: pip install 'cifarlab[web]'")
    from fastapi.testclient import TestClient

    from cifarlab.web import ServeLimits, create_app
    paths = [_picture(tmp_path / "a.png", (300, 200)), _picture(tmp_path / "b.jpg", (17, 45), seed=1),
             _picture(tmp_path / "c.png", (64, 64), "L", seed=2)]
    expected = reference_for(lenet, paths)
    with TestClient(create_app(catalog, ServeLimits(work_timeout_s=120, body_timeout_s=60))) as client:  # busy runners
        listing = client.get("/api/models").json()
        assert [m["accuracy"] for m in listing["models"]] == [0.57]
        files = [("file", (p.name, p.read_bytes(), "image/png")) for p in paths]
        r = client.post("/api/predict", files=files, data={"model": "ref", "top_k": "3"})
    assert r.status_code == 200, r.text
    for res, row in zip(r.json()["results"], expected):
        order = np.argsort(-row, kind="stable")
        assert res["error"] is None and res["label"] == CLASSES[order[0]]
        assert list(res["probabilities"]) == [CLASSES[j] for j in order]
        np.testing.assert_allclose([res["probabilities"][c] for c in CLASSES], row, atol=1e-5)
        assert [t[0] for t in res["top"]] == [CLASSES[j] for j in order[:3]]
        np.testing.assert_allclose([t[1] for t in res["top"]], row[order[:3]], atol=1e-5)


def test_desktop_window_shows_the_reference_probabilities(catalog, lenet, tmp_path):
    need_module("PySide6", "desktop extra not installed: pip install 'cifarlab[desktop]'")
    need_module("PySide6.QtWidgets", "Qt's shared libraries (libEGL, libxkbcommon, ...) are missing: run "
                                      "`make sysdeps` (scripts/sysdeps.sh, as root)")
    from PySide6.QtWidgets import QApplication

    from cifarlab.desktop import ClassifierWindow
    app = QApplication.instance() or QApplication([])
    picture = _picture(tmp_path / "photo.png", (400, 300), "RGBA", seed=5)
    (row,) = reference_for(lenet, [picture])
    order = np.argsort(-row, kind="stable")
    window = ClassifierWindow(catalog)
    try:
        window.show()
        assert window.open_file(picture)
        app.processEvents()
        ranked = window.classify()
        assert [c for c, _ in ranked] == [CLASSES[j] for j in order]
        np.testing.assert_allclose([p for _, p in ranked], row[order], atol=1e-5)
        shown = [(n.text(), b.value(), b.format()) for n, b in zip(window.bar_names, window.bars)]
        assert [name for name, _, _ in shown] == [CLASSES[j] for j in order[:len(shown)]]
        assert [value for _, value, _ in shown] == [round(row[j] * 1000) for j in order[:len(shown)]]
        assert [text for _, _, text in shown] == [f"{row[j]:.1%}" for j in order[:len(shown)]]
        assert window.result.text() == f"{CLASSES[order[0]]}  {row[order[0]]:.1%}"
    finally:
        window.close()
