"""The desktop window offscreen: open and classify, drag and drop, dialogs for bad files, screenshot.

Qt runs with QT_QPA_PLATFORM=offscreen (no screen needed). The screenshots are saved to a
temporary folder (``CIFARLAB_ARTIFACTS`` names one to keep them in); the path is printed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt starts
from conftest import need_module, screenshot_dir  # noqa: E402

need_module("PySide6", "desktop extra not installed: pip install 'cifarlab[desktop]'")
need_module("PySide6.QtWidgets", "Qt's shared libraries (libEGL, libxkbcommon, ...) are missing: run "
                                  "`make sysdeps` (scripts/sysdeps.sh, as root)")
from PySide6.QtCore import QMimeData, QPointF, Qt, QTimer, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from cifarlab.catalog import Catalog  # noqa: E402
from cifarlab.desktop import ClassifierWindow, run_window  # noqa: E402
from cifarlab.inference import Predictor  # noqa: E402

from _checkpoints import hostile_run, write_checkpoint  # noqa: E402

ARTIFACTS = screenshot_dir()  # CIFARLAB_ARTIFACTS, else a temporary folder


@pytest.fixture(scope="module")
def qapp():
    return QApplication.instance() or QApplication([])


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for seed, name in enumerate(("first", "second")):
        paths[name] = str(write_checkpoint(folder / f"{name}.pt", top1=0.5 + seed / 10, seed=seed))
    return Catalog(paths, runs=False, shipped=False)


@pytest.fixture
def window(qapp, catalog):
    w = ClassifierWindow(catalog)
    w.show()
    yield w
    w.close()


def _photo(path: Path, mode: str = "RGBA") -> Path:
    y, x = np.mgrid[0:300, 0:400]
    rgb = np.stack([x * 255 // 399, y * 255 // 299, np.full_like(x, 90)], -1).astype(np.uint8)
    Image.fromarray(rgb).convert(mode).save(path)
    return path


def _shown(window) -> list[tuple[str, float]]:
    return [(n.text(), float(b.format().rstrip("%"))) for n, b in zip(window.bar_names, window.bars)]


def test_open_classifies_and_shows_every_probability(window, catalog, qapp, tmp_path):
    picture = _photo(tmp_path / "photo.png")  # RGBA: the reference app crashed on these
    assert window.models.count() == 2 and "50.00% test accuracy" in window.models.itemText(0)
    assert window.open_file(picture)
    qapp.processEvents()
    expected = Predictor(catalog.resolve("first").path).predict([picture])[0]
    shown = _shown(window)
    assert [name for name, _ in shown] == list(expected.probabilities)
    assert window.result.text().startswith(expected.label)
    np.testing.assert_allclose([p for _, p in shown], [100 * p for p in expected.probabilities.values()], atol=0.06)
    assert window.bars[0].value() == round(1000 * expected.top[0][1])
    assert window.view.pixmap().width() == 96 and "400×300" in window.file_label.text()
    assert window.timing.text().startswith("classified in ")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "desktop.png"
    assert window.grab().save(str(shot))
    print(f"screenshot: {shot}")


def test_changing_the_model_reclassifies(window, catalog, qapp, tmp_path):
    picture = _photo(tmp_path / "gray.png", "L")
    window.open_file(picture)
    window.models.setCurrentIndex(1)
    qapp.processEvents()
    expected = Predictor(catalog.resolve("second").path).predict([picture])[0]
    assert [name for name, _ in _shown(window)] == list(expected.probabilities)


def test_a_file_that_is_not_a_picture_gets_a_dialog(window, qapp, tmp_path):
    good = _photo(tmp_path / "ok.png")
    window.open_file(good)
    before = window.result.text()
    bad = tmp_path / "holiday.jpg"
    bad.write_text("this is text, not a JPEG")
    assert window.open_file(bad) is False
    qapp.processEvents()
    dialog = window.last_dialog
    assert dialog is not None and dialog.isVisible()
    assert "holiday.jpg" in dialog.text() and "not a readable image" in dialog.text()
    assert window.result.text() == before and window.path == str(good)  # the old picture stays
    dialog.grab().save(str(ARTIFACTS / "desktop-error.png"))
    dialog.close()
    assert window.open_file(tmp_path / "missing.png") is False
    assert "no such file" in window.last_dialog.text()


def test_classify_without_a_picture_says_so(window):
    assert not window.classify_button.isEnabled()
    assert window.classify() is None
    assert "Open a picture first" in window.last_dialog.text()


def test_dropping_a_file_opens_it(window, qapp, tmp_path):
    picture = _photo(tmp_path / "dropped.png", "RGB")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(picture))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert window.path == str(picture) and window.result.text()


def _beside_a_hostile_run(tmp_path):
    """A window listing a good model and a finished run whose best.pt would run code when
    unpickled (see test_untrusted_checkpoint); and the file that code would create."""
    marker = tmp_path / "code-ran"
    registry = hostile_run(tmp_path / "runs", marker)
    catalog = Catalog({"good": str(write_checkpoint(tmp_path / "good.pt"))}, runs=True, shipped=False,
                      registry=registry)
    return ClassifierWindow(catalog), marker


def test_a_hostile_run_gets_a_dialog_and_runs_no_code(qapp, tmp_path):
    """A finished run whose best.pt would run code when unpickled (see test_untrusted_checkpoint)."""
    w, marker = _beside_a_hostile_run(tmp_path)
    try:
        assert w.open_file(_photo(tmp_path / "pic.png")) and w.result.text()  # "good" classifies it
        w.models.setCurrentIndex(w.models.findData("evil-run"))  # reclassifies with the hostile run
        qapp.processEvents()
        assert "asks to run code" in w.last_dialog.text() and "cifarlab convert" in w.last_dialog.text()
        w.last_dialog.close()
        w.models.setCurrentIndex(w.models.findData("good"))
        assert w.classify() is not None  # the other model still works
    finally:
        w.close()
    assert not marker.exists()


def test_model_details_show_the_selected_models_card(window, catalog, qapp):
    """The card of the selected model in its own window, following the menu; its figures are
    the checkpoint's own (read here with torch.load)."""
    import torch
    dialog = window.show_details()
    qapp.processEvents()
    assert dialog.isVisible() and dialog.windowTitle() == "Model card: first"
    for name in ("first", "second"):
        window.models.setCurrentIndex(window.models.findData(name))
        qapp.processEvents()
        test = torch.load(catalog.resolve(name).path, weights_only=True)["test"]
        text = dialog.text.toPlainText()
        assert dialog.card["name"] == name and dialog.card["accuracy"]["top1"] == test["top1"]
        assert f"top-1 {test['top1']:.2%}, top-5 {test['top5']:.2%} on {test['n']} images." in text
        assert "Calibration (test split)\nnot measured." in text  # no sidecar, no results row
        assert "not measured yet: run cifarlab evaluate" in text
    dialog.grab().save(str(ARTIFACTS / "desktop-model-card.png"))
    dialog.close()


def test_a_models_card_that_cannot_be_read_is_a_sentence(qapp, tmp_path):
    """A hostile run's card: one sentence in the details window, and no code ran."""
    w, marker = _beside_a_hostile_run(tmp_path)
    try:
        w.models.setCurrentIndex(w.models.findData("evil-run"))
        dialog = w.show_details()
        qapp.processEvents()
        assert dialog.card["kind"] == "unavailable" and "asks to run code" in dialog.card["error"]
        assert dialog.text.toPlainText().splitlines()[-1] == dialog.card["error"]
        dialog.close()
    finally:
        w.close()
    assert not marker.exists()


def test_run_window_starts_and_quits(qapp, catalog, tmp_path):
    QTimer.singleShot(300, qapp.quit)
    assert run_window(catalog, str(_photo(tmp_path / "start.png"))) == 0


def test_app_command_opens_the_window(qapp, catalog, tmp_path):
    from cifarlab.cli import main
    QTimer.singleShot(300, qapp.quit)
    path = catalog.resolve("first").path
    assert main(["app", "--no-runs", "--checkpoint", f"mine={path}", str(_photo(tmp_path / "a.png"))]) == 0


def test_app_command_without_a_display_says_so(monkeypatch, capsys):
    from cifarlab.cli import main
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    assert main(["app"]) == 1
    assert "no display" in capsys.readouterr().err
