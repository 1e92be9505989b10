"""Inference: checkpoint files, the Predictor, batch prediction, export, picture loading.

What the web page, the desktop app and the catalogue use; it imports nothing of
``cifarlab.training`` (tests/test_import_graph.py). Names are imported on first use.
"""

from __future__ import annotations

from cifarlab.lazy import exports

# public name -> module that defines it
_API = {
    "predict_folder": "batch_predict",
    "convert_checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "load_model": "checkpoint",
    "Prediction": "predict", "Predictor": "predict", "load_image": "predict",
    "OnnxModel": "export",
}

__all__ = sorted(_API)
__getattr__, __dir__ = exports(__name__, _API)
