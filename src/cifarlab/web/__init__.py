"""The web face: a FastAPI service and a page, over the shared ``Catalog`` and ``Predictor``.

Needs the ``web`` extra (``pip install 'cifarlab[web]'``); nothing here is imported by
``import cifarlab``.
"""

from __future__ import annotations

from cifarlab.web.app import ServeLimits, create_app
from cifarlab.web.batcher import BatchResult, MicroBatcher

__all__ = ["BatchResult", "MicroBatcher", "ServeLimits", "create_app"]
