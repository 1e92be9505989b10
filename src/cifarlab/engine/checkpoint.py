"""Self-describing checkpoints: everything needed to rebuild, evaluate or resume a run.

``{"format", "model": {name, kwargs, num_classes}, "state_dict", "optimizer",
"scheduler", "rng", "epoch", "step", "config", "metrics", "classes", "normalize",
"distributed", "versions", "callbacks"}``. The state is the plain module's (no DDP or
compile prefixes), so a checkpoint from a multi-process run loads in one process., written to a temp file beside the target, then ``os.replace``.
"""

from __future__ import annotations

import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarlab.atomic import atomic_path
from cifarlab import __version__
from cifarlab.errors import CifarlabError

FORMAT = "cifarlab-checkpoint/1"


def versions() -> dict[str, str]:
    return {"cifarlab": __version__, "torch": torch.__version__, "python": platform.python_version()}


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_checkpoint(learner) -> dict[str, Any]:
    """The learner's whole state at the end of an epoch, as a plain dict."""
    meta = learner.meta
    return {
        "format": FORMAT,
        "model": meta["model"],
        "state_dict": _cpu_state(unwrap(learner.model).state_dict()),
        "optimizer": learner.optimizer.state_dict(),
        "scheduler": learner.schedule.state_dict(),
        "rng": rng_state(),
        "epoch": learner.epoch,
        "step": learner.step,
        "config": meta["config"],
        "metrics": list(learner.history),
        "classes": meta["classes"],
        "normalize": meta["normalize"],
        "distributed": meta.get("distributed"),  # world size, sync_bn: how it was trained, not needed to load
        "versions": versions(),
        "callbacks": learner.callback_states(),
    }


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under torch.compile / DDP wrappers (their keys carry prefixes)."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _cpu_state(state: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def save_checkpoint(ckpt: dict, path: str | Path) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def resolve_checkpoint(path: str | Path, prefer: str = "best.pt") -> Path:
    """A checkpoint file from a file path or a run folder (best.pt, else last.pt)."""
    path = Path(path)
    if path.is_dir():
        for name in (prefer, "best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CifarlabError(f"run folder {path} holds no best.pt or last.pt; train it first "
                            f"or pass a checkpoint file")
    if not path.is_file():
        raise CifarlabError(f"checkpoint {path} does not exist")
    return path


def load_checkpoint(path: str | Path, prefer: str = "best.pt") -> dict[str, Any]:
    path = resolve_checkpoint(path, prefer)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise CifarlabError(f"{path} is not a readable checkpoint ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CifarlabError(f"{path} is not a cifarlab checkpoint (expected format {FORMAT})")
    ckpt["path"] = str(path)
    return ckpt


def load_model(checkpoint: str | Path | dict, device: str | torch.device | None = None):
    """``(model, meta)`` rebuilt from the checkpoint alone, in eval mode on ``device``.

    ``meta`` is the checkpoint without the tensors: model, classes, normalize, config,
    metrics, epoch, versions, path.
    """
    from cifarlab.models import create_model
    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    spec = ckpt["model"]
    model = create_model(spec["name"], num_classes=spec["num_classes"], **spec.get("kwargs", {}))
    model.load_state_dict(ckpt["state_dict"])
    model.to(device or "cpu").eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer", "rng")}
    return model, meta
