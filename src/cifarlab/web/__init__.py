"""The web face: a FastAPI service and a page, over the shared ``Catalog`` and ``Predictor``.

Needs the ``web`` extra (``pip install 'cifarlab[web]'``). Names are imported lazily so
that ``cifarlab --help`` does not pay for numpy to show the limits' defaults.
"""

from __future__ import annotations

import importlib

_API = {"create_app": "cifarlab.web.app", "ServeLimits": "cifarlab.web.limits",
        "MicroBatcher": "cifarlab.web.batcher", "BatchResult": "cifarlab.web.batcher"}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'cifarlab.web' has no attribute {name!r}")
