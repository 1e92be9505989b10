"""One meaning for a model name, in every command and in the Python API.

``resolve(ref)`` turns what a user typed into the checkpoint it means:

- ``default`` (and any other shipped name): the trained model inside the package;
- a path: a ``.pt`` or ``.onnx`` file, or a run folder (its best.pt, else last.pt);
- a run's name (``resnet20-20261207-081500``), its id in the run registry (``12``), or
  both as ``NAME-ID`` (``base-s0-12``, what the menus show when two runs share a name).

An ambiguous name (two runs called ``base-s0``, or a folder in the current directory with
the name of a run) is an error that lists the candidates, never a silent pick.
``architecture(ref)`` is the same for commands that need only the layers (``summary``,
``diagram``): a name from the model zoo, or the architecture of any checkpoint above.

``predict``, ``evaluate``, ``export``, ``summary``, ``diagram``, ``serve``/``app``
(``--checkpoint``), ``Predictor`` and ``load_model`` all go through here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cifarlab.errors import ModelError

from cifarlab.shipped import (CHECKPOINT_SUFFIXES, DEFAULT_NAME, default_checkpoint,  # noqa: F401 (resolve's names)
                              looks_like_path, shipped_models)


def default_architecture() -> str:
    """The architecture of the shipped default model (``inference.checkpoint.default_architecture``;
    imported when asked, so that ``cifarlab models`` never imports torch)."""
    from cifarlab.inference.checkpoint import default_architecture as shipped_architecture
    return shipped_architecture()


@dataclass(frozen=True)
class Resolved:
    """What a model reference means: the checkpoint file and where it came from."""
    ref: str  # what was typed
    path: Path  # a .pt or .onnx file
    source: str  # "shipped" | "run" | "file"
    name: str  # a name to show: the shipped name, the run's name, or the file's path
    run: dict | None = field(default=None, compare=False)  # the registry row of a run


def resolve(ref: str | os.PathLike, registry=None) -> Resolved:
    """The checkpoint ``ref`` names (see the module docstring); ModelError when none or several."""
    text = str(ref).strip()
    if not text:
        raise ModelError("empty model name: give `default`, a run's name or id, a run folder or a .pt/.onnx file")
    if looks_like_path(text) or isinstance(ref, os.PathLike):
        return _from_path(text, Path(text).expanduser())
    candidates = _name_candidates(text, registry)
    if Path(text).exists():  # a bare folder or file name in the current directory
        here = _from_path(text, Path(text))
        if not any(c.path.resolve() == here.path.resolve() for c in candidates):
            candidates.append(here)
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        listed = "; ".join(_describe(c) for c in candidates)
        raise ModelError(f"{text!r} is ambiguous: it could mean {listed}. Name one by its run id or path")
    raise ModelError(_unknown(text, registry))


def resolve_path(ref: str | os.PathLike, registry=None) -> Path:
    """``resolve(ref).path``; an existing file is returned as it is (no registry read)."""
    if isinstance(ref, os.PathLike) or looks_like_path(str(ref)):
        return _from_path(str(ref), Path(ref).expanduser()).path
    return resolve(ref, registry).path


def architecture(ref: str, registry=None) -> tuple[str, dict]:
    """``(zoo name, kwargs)`` of ``ref``: a model-zoo name as it is, else the architecture of the
    checkpoint ``resolve(ref)`` finds (its kwargs, ``num_classes`` included)."""
    from cifarlab.models import list_models
    if ref in list_models():
        return ref, {}
    try:
        found = resolve(ref, registry)
    except ModelError as exc:
        from cifarlab.models import model_info
        try:
            model_info(ref)  # an unknown architecture: its own message, with close names
        except ModelError as arch_exc:
            raise ModelError(f"{arch_exc}; nor is it a trained model ({exc})") from None
        raise
    spec = _spec(found.path)
    kwargs = dict(spec.get("kwargs") or {})
    if spec.get("num_classes") is not None:
        kwargs["num_classes"] = int(spec["num_classes"])
    return spec["name"], kwargs


# ---------------------------------------------------------------- internals
def _spec(path: Path) -> dict:
    if path.suffix.lower() == ".onnx":
        from cifarlab.inference.export import OnnxModel
        return OnnxModel(path).meta["model"]
    from cifarlab.inference.checkpoint import load_checkpoint
    return load_checkpoint(path)["model"]


def _from_path(ref: str, path: Path) -> Resolved:
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return Resolved(ref, path / name, "file", str(path))
        raise ModelError(f"run folder {path} holds no best.pt or last.pt; let its training finish, or name "
                         f"a checkpoint file")
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    return Resolved(ref, path, "file", str(path))


def _run_rows(registry) -> list[dict]:
    """Registry rows whose folder holds a checkpoint; [] (with a warning) when it cannot be read."""
    try:
        from cifarlab.runlog import Registry
        rows = (registry or Registry()).list()
    except Exception as exc:  # a broken registry must not take paths and the shipped model down
        import sys
        print(f"cifarlab: warning: run registry unreadable ({_first_line(exc)}); run names are unknown",
              file=sys.stderr)
        return []
    return [r for r in rows if run_checkpoint(r) is not None]


def run_checkpoint(row: dict) -> Path | None:
    """The checkpoint of a registry row: its folder's best.pt, else last.pt; None when neither."""
    folder = Path(row["path"])
    return next((folder / n for n in ("best.pt", "last.pt") if (folder / n).is_file()), None)


def _name_candidates(text: str, registry) -> list[Resolved]:
    out = [Resolved(text, path, "shipped", name) for name, path in shipped_models().items() if name == text]
    for row in _run_rows(registry):
        if text in (row["name"], str(row["id"]), f"{row['name']}-{row['id']}"):
            out.append(Resolved(text, run_checkpoint(row), "run", row["name"], row))
    return out


def _describe(c: Resolved) -> str:
    if c.source == "run":
        row = c.run
        study = f", study {row['study']}" if row.get("study") else ""
        return f"run {row['id']} {row['name']} ({row.get('status')}{study}, {Path(row['path'])})"
    if c.source == "shipped":
        return f"the shipped model {c.name!r}"
    return f"the file {c.path}"


def _unknown(text: str, registry) -> str:
    from cifarlab.models import list_models
    if text in list_models():
        return (f"{text!r} is an untrained architecture, not a trained model: train it with "
                f"`cifarlab train --model {text}`, or give `default`, a run's name or id, a run folder or a "
                f".pt/.onnx file")
    import difflib
    known = list(shipped_models()) + [r["name"] for r in _run_rows(registry)]
    close = difflib.get_close_matches(text, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return (f"no model called {text!r}: {hint}give `default` (the shipped model), a run's name or id "
            f"(`cifarlab runs`), a run folder or a .pt/.onnx file")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


__all__ = ["DEFAULT_NAME", "Resolved", "architecture", "default_architecture", "looks_like_path", "resolve",
           "resolve_path", "run_checkpoint", "shipped_models"]
