"""Names a package exports, imported on first use (a package's ``_API`` table)."""

from __future__ import annotations

import importlib
from typing import Callable


def exports(package: str, table: dict[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package`` whose ``table`` maps each public name to the
    submodule (relative to ``package``) that defines it."""
    def __getattr__(name: str):
        if name in table:
            return getattr(importlib.import_module(f"{package}.{table[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(table)
    return __getattr__, __dir__
