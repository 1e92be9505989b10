"""The desktop face: a PySide6 window over the shared ``Catalog`` and ``Predictor``.

Needs the ``desktop`` extra (``pip install 'cifarlab[desktop]'``).
"""

from __future__ import annotations

from cifarlab.errors import CifarlabError


def _window_module():
    try:
        from cifarlab.desktop import window
    except ImportError as exc:
        if "PySide6" in str(exc) or getattr(exc, "name", "") == "PySide6":
            raise CifarlabError("the desktop app needs PySide6: pip install 'cifarlab[desktop]'") from None
        # PySide6 is there but a system library is not (libEGL.so.1, libxkbcommon.so.0, ...)
        raise CifarlabError(f"Qt cannot start ({exc}); on Debian: apt-get install libegl1 libgl1 "
                            f"libxkbcommon0 libfontconfig1 libdbus-1-3") from None
    return window


def run_window(catalog, image: str | None = None) -> int:
    """Open the window and run Qt's event loop until it is closed; returns the exit code."""
    return _window_module().run_window(catalog, image)


def __getattr__(name: str):
    if name == "ClassifierWindow":
        return _window_module().ClassifierWindow
    raise AttributeError(f"module 'cifarlab.desktop' has no attribute {name!r}")


__all__ = ["ClassifierWindow", "run_window"]
