"""The desktop window: open (or drop) a picture, pick a model, read the class and its probabilities.

What the reference app got wrong and this one does instead: the model is loaded once per
name (``Catalog.predictor``), every class's probability is shown, grayscale / RGBA /
16-bit files are read by the shared ``load_image``, and a file that is not a picture gets
a dialog naming it instead of a crash. Dialogs are opened with ``open()`` (window-modal,
not blocking), so tests can read them from ``last_dialog``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QApplication, QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel,
    QMainWindow, QMessageBox, QProgressBar, QPushButton, QTextBrowser, QVBoxLayout, QWidget,
)

from cifarlab.errors import CifarlabError

PICTURE_FILTER = "Pictures (*.png *.jpg *.jpeg *.bmp *.gif *.tif *.tiff *.webp *.ppm *.pgm);;All files (*)"
_SHOWN_MAX = 1024  # the on-screen copy is shrunk to this: a 40-Mpixel pixmap only costs memory


class ClassifierWindow(QMainWindow):
    def __init__(self, catalog):
        super().__init__()
        self.catalog = catalog
        self.array: np.ndarray | None = None  # the 32x32x3 input of the open picture
        self.path: str | None = None
        self._shown: QPixmap | None = None
        self._shown_image = None  # the open picture (PIL, shrunk for the screen), for the heat-map overlay
        self.last_dialog: QMessageBox | None = None
        self.details: ModelDetails | None = None  # the model card's window, once opened
        self.setWindowTitle("cifarlab: classify a picture")
        self.setAcceptDrops(True)
        self._build()
        self._fill_models()

    # ------------------------------------------------------------ layout
    def _build(self) -> None:
        root = QHBoxLayout()
        root.addLayout(self._picture_column(), 3)
        root.addLayout(self._control_column(), 2)
        central = QWidget()
        central.setLayout(root)
        self.setCentralWidget(central)
        self.resize(820, 480)

    def _picture_column(self) -> QVBoxLayout:
        self.picture = QLabel("Open a picture or drop one here")
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setMinimumSize(320, 300)
        self.picture.setStyleSheet("QLabel { border: 2px dashed #9ca3af; border-radius: 8px; color: #6b7280; }")
        self.view = QLabel()
        self.view.setFixedSize(96, 96)
        self.view.setStyleSheet("QLabel { border: 1px solid #d1d5db; }")
        caption = QLabel("what the model sees\n(32×32, enlarged)")
        caption.setStyleSheet("color: #6b7280;")
        self.file_label = QLabel("")
        self.file_label.setStyleSheet("color: #6b7280;")
        row = QHBoxLayout()
        row.addWidget(self.view)
        row.addWidget(caption)
        row.addStretch(1)
        col = QVBoxLayout()
        col.addWidget(self.picture, 1)
        col.addWidget(self.file_label)
        col.addLayout(row)
        return col

    def _control_column(self) -> QVBoxLayout:
        self.models = QComboBox()
        self.models.currentIndexChanged.connect(self._model_changed)
        self.model_info = QLabel("")
        self.model_info.setWordWrap(True)
        self.model_info.setStyleSheet("color: #6b7280;")
        self.details_button = QPushButton("Model details…")
        self.details_button.setToolTip("The model card: accuracy per class, calibration, robustness, training")
        self.details_button.clicked.connect(self.show_details)
        self.open_button = QPushButton("Open picture…")
        self.open_button.clicked.connect(self.open_dialog)
        self.classify_button = QPushButton("Classify")
        self.classify_button.setEnabled(False)  # the reference app silently did nothing here
        self.classify_button.clicked.connect(self.classify)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.classify_button)
        self.explain_box = QCheckBox("Why? Show where the model looked (Grad-CAM)")
        self.raw_box = QCheckBox("Raw probabilities (no temperature scaling)")
        for box in (self.explain_box, self.raw_box):
            box.toggled.connect(lambda _on: self.classify() if self.array is not None else None)
        self.result = QLabel("")
        self.result.setStyleSheet("font-size: 20px; font-weight: bold;")
        self.timing = QLabel("")
        self.timing.setStyleSheet("color: #6b7280;")
        col = QVBoxLayout()
        col.addWidget(QLabel("Model"))
        col.addWidget(self.models)
        info = QHBoxLayout()
        info.addWidget(self.model_info, 1)
        info.addWidget(self.details_button, 0, Qt.AlignmentFlag.AlignTop)
        col.addLayout(info)
        col.addLayout(buttons)
        col.addWidget(self.explain_box)
        col.addWidget(self.raw_box)
        col.addWidget(self.result)
        col.addLayout(self._bars())
        col.addWidget(self.timing)
        col.addStretch(1)
        return col

    def _bars(self) -> QGridLayout:
        grid = QGridLayout()
        self.bar_names: list[QLabel] = []
        self.bars: list[QProgressBar] = []
        for i in range(10):
            name, bar = QLabel(""), QProgressBar()
            bar.setRange(0, 1000)
            bar.setTextVisible(True)
            bar.setFormat("")
            grid.addWidget(name, i, 0)
            grid.addWidget(bar, i, 1)
            self.bar_names.append(name)
            self.bars.append(bar)
        return grid

    def _fill_models(self) -> None:
        for entry in self.catalog.entries():
            self.models.addItem(entry.label(), entry.name)

    # ------------------------------------------------------------ actions
    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a picture", "", PICTURE_FILTER)
        if path:
            self.open_file(path)

    def open_file(self, path: str | Path) -> bool:
        """Show the picture and classify it; a bad file gets a dialog and leaves the old picture."""
        from cifarlab.inference.predict import load_image, to_input
        try:
            img = load_image(path)
        except CifarlabError as exc:
            self.show_error("Cannot open this file", str(exc))
            return False
        self.path, self.array = str(path), to_input(img)
        shown = img.copy()
        shown.thumbnail((_SHOWN_MAX, _SHOWN_MAX))
        self._shown_image = shown
        self._shown = _pixmap(np.asarray(shown))
        self._show_picture()
        self.view.setPixmap(_pixmap(self.array).scaled(96, 96, Qt.AspectRatioMode.IgnoreAspectRatio,
                                                        Qt.TransformationMode.FastTransformation))
        self.file_label.setText(f"{Path(path).name}: {img.size[0]}×{img.size[1]} pixels")
        self.classify_button.setEnabled(True)
        self.classify()
        return True

    def classify(self) -> list[tuple[str, float]] | None:
        """Classes and probabilities of the open picture, most probable first (also shown)."""
        if self.array is None:
            self.show_error("No picture", "Open a picture first (button or drag and drop).")
            return None
        name = self.models.currentData()
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            start = time.perf_counter()
            predictor = self.catalog.predictor(name)  # loaded on first use, then kept
            loaded = time.perf_counter()
            probs = predictor.probabilities([self.array], raw=self.raw_box.isChecked())[0]
            seconds, loading = time.perf_counter() - loaded, loaded - start
            self._show_saliency(predictor, int(np.argmax(probs)))
        except CifarlabError as exc:
            self.show_error("Cannot classify", str(exc))
            return None
        finally:
            QApplication.restoreOverrideCursor()
        from cifarlab.inference.predict import rank
        ranked = [(c, p) for _, c, p in rank(predictor.classes, probs)]
        self._show_result(ranked, seconds, loading)
        t = getattr(predictor, "temperature", None)
        if t:
            self.timing.setText(self.timing.text() + (" | raw softmax" if self.raw_box.isChecked()
                                                      else f" | calibrated (temperature {t:.2f})"))
        return ranked

    def _show_saliency(self, predictor, index: int) -> None:
        """The big picture with the Grad-CAM heat map of class ``index`` over it, or plain."""
        if self._shown_image is None:
            return
        shown = self._shown_image
        if self.explain_box.isChecked():
            if getattr(predictor, "backend", "torch") != "torch":
                self.explain_box.setChecked(False)
                self.show_error("No heat map", "Heat maps need a PyTorch (.pt) model, not an ONNX export.")
            else:
                from cifarlab.explain import overlay
                shown = overlay(shown, predictor.explain(self.array, target=index))
        self._shown = _pixmap(np.asarray(shown))
        self._show_picture()

    def model_card(self, name: str | None = None) -> dict:
        """The card of model ``name`` (default: the selected one); never raises."""
        from cifarlab import modelcard
        from cifarlab.catalog import model_card
        name = name or self.models.currentData()
        entry = next((e for e in self.catalog.entries() if e.name == name), None)
        if entry is None:
            return modelcard.unavailable(str(name), "no model is selected")
        return model_card(entry.path, entry.name)

    def show_details(self) -> "ModelDetails":
        """The selected model's card in its own window (opened, not run: the app goes on)."""
        if self.details is None:
            self.details = ModelDetails(self)
        self.details.show_card(self.model_card())
        self.details.open()
        return self.details

    def show_error(self, title: str, text: str) -> QMessageBox:
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()  # not exec(): the event loop keeps running, and a test can read the dialog
        self.last_dialog = box
        return box

    # ------------------------------------------------------------ display
    def _show_result(self, ranked: list[tuple[str, float]], seconds: float, loading: float) -> None:
        label, p = ranked[0]
        self.result.setText(f"{label}  {p:.1%}")
        for i, (name_label, bar) in enumerate(zip(self.bar_names, self.bars)):
            cls, prob = ranked[i] if i < len(ranked) else ("", 0.0)
            name_label.setText(cls)
            bar.setValue(round(prob * 1000))
            bar.setFormat(f"{prob:.1%}" if cls else "")
        load = f" (+ {loading * 1000:.0f} ms loading the model)" if loading > 0.005 else ""
        self.timing.setText(f"classified in {seconds * 1000:.0f} ms{load}")

    def _model_changed(self) -> None:
        entry = next((e for e in self.catalog.entries() if e.name == self.models.currentData()), None)
        if entry is not None:
            params = "?" if entry.parameters is None else f"{entry.parameters:,}"
            self.model_info.setText(f"{entry.source} model, {params} parameters. {entry.description}")
            if self.details is not None and self.details.isVisible():  # an open card follows the menu
                self.details.show_card(self.model_card(entry.name))
        if self.array is not None:
            self.classify()

    def _show_picture(self) -> None:
        if self._shown is not None:
            size = self.picture.contentsRect().size()
            self.picture.setPixmap(self._shown.scaled(size, Qt.AspectRatioMode.KeepAspectRatio,
                                                      Qt.TransformationMode.SmoothTransformation))

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._show_picture()

    # ------------------------------------------------------------ drag and drop
    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        files = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if files:
            self.open_file(files[0])
            event.acceptProposedAction()


class ModelDetails(QDialog):
    """The model card of the selected model (``cifarlab.modelcard``), rendered from its markdown."""

    def __init__(self, parent):
        super().__init__(parent)
        self.setWindowModality(Qt.WindowModality.NonModal)
        self.text = QTextBrowser()
        self.text.setOpenLinks(False)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout()
        layout.addWidget(self.text)
        layout.addWidget(buttons)
        self.setLayout(layout)
        self.resize(640, 720)
        self.card: dict | None = None

    def show_card(self, card: dict) -> None:
        from cifarlab.modelcard import render_markdown
        self.card = card
        self.setWindowTitle(f"Model card: {card.get('name', '?')}")
        self.text.setMarkdown(render_markdown(card))


def _pixmap(rgb: np.ndarray) -> QPixmap:
    rgb = np.ascontiguousarray(rgb)
    h, w, _ = rgb.shape
    image = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(image.copy())  # copy: the QImage must not outlive the numpy buffer


def run_window(catalog, image: str | None = None) -> int:
    app = QApplication.instance() or QApplication([])
    window = ClassifierWindow(catalog)
    window.show()
    if image:
        window.open_file(image)
    return app.exec()
