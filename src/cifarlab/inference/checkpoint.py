"""Self-describing checkpoints: everything needed to rebuild, evaluate or resume a run.

``{"format", "model": {name, kwargs, num_classes}, "state_dict", "optimizer",
"scheduler", "rng", "epoch", "step", "config", "metrics", "classes", "normalize",
"distributed", "versions", "callbacks"}``. The state is the plain module's (no DDP or
compile prefixes), so a checkpoint from a multi-process run loads in one process; written
to a temp file beside the target, then ``os.replace``.

A checkpoint holds nothing but tensors and plain Python values (dict, list, tuple, str,
int, float, bool, None), RNG states included, so it loads with ``torch.load(...,
weights_only=True)``: a file from a stranger can hold wrong numbers but runs no code.
``save_checkpoint`` refuses anything else rather than write a file the loader would
reject. Files of format /1 (pickled numpy RNG state) are converted once with ``cifarlab
convert`` (``convert_checkpoint``), which reads them with the safe loader allowed exactly those
numpy types. Every loader checks the description (``check_meta``) and fits the weights to the
model they name (``load_weights``) so a malformed file is one line, never a traceback.
``versions`` names the code that wrote it: the cifarlab version, and the git commit when
the package runs from a git checkout.
"""

from __future__ import annotations

import functools
import io
import math
import pickle
import platform
import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarlab.atomic import atomic_path
from cifarlab import __version__
from cifarlab.errors import CifarlabError, ModelError
from cifarlab.shipped import DEFAULT_NAME, default_checkpoint, looks_like_path, shipped_models  # noqa: F401

FORMAT = "cifarlab-checkpoint/2"  # /2: loads with weights_only=True; /1 needed full pickle
_OLD_FORMATS = ("cifarlab-checkpoint/1",)
_PLAIN = (str, int, float, bool, bytes, type(None))


def versions() -> dict[str, str]:
    # str(): torch.__version__ is a TorchVersion, a class the safe loader refuses
    out = {"cifarlab": __version__, "torch": str(torch.__version__), "python": platform.python_version()}
    if commit := git_commit():
        out["commit"] = commit
    return out


@functools.cache  # asked once per process: a run writes many checkpoints
def git_commit() -> str | None:
    """The commit of the git checkout this package runs from ("+dirty" when it has
    uncommitted changes); None when installed elsewhere or git is missing."""
    import subprocess
    here = str(Path(__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def rng_state() -> dict[str, Any]:
    """The torch, numpy and python generators' states as tensors, lists and ints."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": [str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
             "python": [int(version), list(internal), gauss_next]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
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
        "plan": meta.get("plan"),  # what the run trains: model, epochs, stages, the time budget's plan (training/plan.py)
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
    ckpt = _plain(ckpt)
    buf = io.BytesIO()  # serialized here, written by Python: a full disk is an OSError atomic_path explains
    torch.save(ckpt, buf)  # (torch's own file writer reports it as "basic_ios::clear")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getbuffer())


def _plain(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` with numpy scalars and arrays, str/int/float subclasses made plain; anything
    else that the safe loader would refuse raises TypeError naming where it sits."""
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN:
        return obj
    if isinstance(obj, dict):
        return {_plain(k, where): _plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    for kind in _PLAIN[:3]:  # str before int: an IntEnum is both; bool is exact above
        if isinstance(obj, kind):
            return kind(obj)
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; a checkpoint holds only "
                    f"tensors and plain values, so that it loads without running code")


def default_architecture() -> str:
    """The architecture of the shipped default model (what ``--model default`` trains)."""
    path = shipped_models().get(DEFAULT_NAME)
    if path is None:
        raise ModelError("the shipped default model is missing from this installation; name a model "
                         "instead (see `cifarlab models`)")
    return load_checkpoint(path)["model"]["name"]


def resolve_checkpoint(path: str | Path, prefer: str = "best.pt") -> Path:
    """A checkpoint file from a file path or a run folder (best.pt, else last.pt), or from a
    shipped model's name (``default``). A run's name or id needs the run registry, which sits
    above the engine: ``cifarlab.resolve`` (what every command uses) turns it into a path."""
    if isinstance(path, str) and not Path(path).exists() and not looks_like_path(path):
        shipped = shipped_models()
        if path in shipped:
            return shipped[path]
        raise ModelError(f"{path!r} is neither a file nor a shipped model ({', '.join(shipped) or 'none'}); "
                         f"for a run's name or id use cifarlab.resolve({path!r}).path, or the command line")
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
    """The checkpoint at ``path`` (file or run folder), loaded without running any code."""
    path = resolve_checkpoint(path, prefer)
    ckpt = safe_load(path)
    if isinstance(ckpt, dict) and ckpt.get("format") in _OLD_FORMATS:
        raise CifarlabError(f"{path} is in the older format {ckpt['format']}; convert it once "
                            f"with: cifarlab convert {path}")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CifarlabError(f"{path} is not a cifarlab checkpoint (expected format {FORMAT})")
    check_meta(ckpt, path)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise _damaged(path, "its 'state_dict' is not a mapping of names to tensors")
    if ckpt.get("weight_scales") is not None:  # a shipped file with int8 weights: float32 from here on
        if not isinstance(ckpt["weight_scales"], dict):
            raise _damaged(path, "its 'weight_scales' is not a mapping of names to tensors")
        ckpt["state_dict"] = dequantize_state(ckpt["state_dict"], ckpt.pop("weight_scales"), path)
    ckpt["path"] = str(path)
    return ckpt


def _damaged(path, why: str) -> CifarlabError:
    return CifarlabError(f"{path} is damaged or not a cifarlab checkpoint: {why}; use the file as cifarlab wrote "
                         f"it, or train the model again")


def check_meta(meta: dict, path: str | Path) -> None:
    """Refuse, in one line, a description (checkpoint or ONNX metadata) whose model, classes,
    normalization or config are missing or malformed: the one check every loader relies on."""
    spec = meta.get("model")
    if not isinstance(spec, dict):
        raise _damaged(path, "it has no 'model' description")
    name, kwargs, num_classes = spec.get("name"), spec.get("kwargs", {}), spec.get("num_classes")
    if not isinstance(name, str) or not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise _damaged(path, "its 'model' needs a name and a dict of arguments")
    if type(num_classes) is not int or num_classes < 1:
        raise _damaged(path, f"its model's num_classes is {num_classes!r}, not a positive integer")
    classes = meta.get("classes")
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise _damaged(path, "its 'classes' is not a list of class names")
    if len(classes) != num_classes:
        raise _damaged(path, f"it names {len(classes)} classes for a model with {num_classes} outputs")
    norm = meta.get("normalize")
    if not isinstance(norm, dict):
        raise _damaged(path, "it has no 'normalize' mean and std")
    gray = norm.get("grayscale")
    if gray not in (None, 0, 1, 3):
        raise _damaged(path, f"its grayscale setting is {gray!r}, not none, 1 or 3")
    mean, std = norm.get("mean"), norm.get("std")
    if not all(isinstance(v, (list, tuple)) and len(v) == (gray or 3)
               and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
               for v in (mean, std)) or min(std) <= 0:
        raise _damaged(path, f"its normalization needs {gray or 3} finite means and positive stds")
    if not isinstance(meta.get("config", {}), dict):
        raise _damaged(path, "its 'config' is not a dict")


def load_weights(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """``model.load_state_dict(state)``; weights that do not fit the model are one line naming ``path``."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        raise _damaged(path, f"its weights do not fit the model it names ({_first_line(exc)})") from None


def load_resumable(run_dir: str | Path) -> dict[str, Any] | None:
    """A run folder's last.pt, checked for everything a resume restores; None when the run never
    finished an epoch (no last.pt, a config.json: it restarts from that). A folder that cannot be
    resumed is refused in one line before anything in it is touched."""
    run_dir = Path(run_dir)
    last = run_dir / "last.pt"
    if not run_dir.is_dir():
        raise CifarlabError(f"{run_dir} is not a run folder; pass the folder `cifarlab train` made")
    if not last.exists():
        if not (run_dir / "config.json").is_file():
            raise CifarlabError(f"{run_dir} has no last.pt or config.json to resume from; "
                                "start the run again with `cifarlab train`")
        if _finished_epochs(run_dir):  # a restart would write over what they left (best.pt, metrics)
            raise CifarlabError(f"{run_dir} records finished epochs but has no last.pt, so it cannot be resumed; "
                                f"evaluate its best.pt as it is, or train a new run")
        return None  # killed (or out of disk space) before its first last.pt: it restarts from config.json
    if not last.is_file():
        raise CifarlabError(f"{last} is not a file, so {run_dir} cannot be resumed; move it aside and resume "
                            "again, or train a new run")
    ckpt = load_checkpoint(last, prefer="last.pt")
    kinds = {"config": dict, "optimizer": dict, "scheduler": dict, "rng": dict, "epoch": int, "step": int,
             "metrics": list}
    wrong = [k for k, kind in kinds.items() if not isinstance(ckpt.get(k), kind)]
    if not wrong and not isinstance(ckpt["optimizer"].get("param_groups"), list):
        wrong = ["optimizer"]
    if not wrong and not all(k in ckpt["rng"] for k in ("torch", "numpy", "python")):
        wrong = ["rng"]
    if wrong or not ckpt["config"]:
        what = ", ".join(repr(k) for k in wrong) or "'config'"
        raise CifarlabError(f"{last} lacks the training state a resume needs ({what} missing or malformed): "
                            f"it can be evaluated or served, not resumed; train a new run to go on")
    return ckpt


def _finished_epochs(run_dir: Path) -> bool:
    """Whether the folder holds the record of a finished epoch: a summary or a metrics row."""
    if (run_dir / "summary.json").exists():
        return True
    try:
        return bool((run_dir / "metrics.jsonl").read_text().strip())
    except OSError:
        return False


def quantize_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(state, scales)``: every float tensor of 2 or more dimensions (conv and linear weights,
    nearly all of a model's bytes) as int8 with one float32 scale per output channel (symmetric:
    the channel's largest magnitude maps to 127); everything else (BatchNorm, biases) as is.
    A weight is then off by at most half its channel's scale; a quarter of float32's size."""
    out, scales = dict(state), {}
    for key, value in state.items():
        if not (value.is_floating_point() and value.dim() >= 2):
            continue
        w = value.detach().float()
        scale = w.abs().flatten(1).amax(1).clamp_min(1e-12) / 127
        out[key] = torch.round(w / _per_channel(scale, w)).clamp(-127, 127).to(torch.int8)
        scales[key] = scale
    return out, scales


def dequantize_state(state: dict, scales: dict, where: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """``quantize_state`` undone: float32 weights (to within half a scale step)."""
    out = dict(state)
    for key, scale in scales.items():
        q = state.get(key)
        if q is None or q.dtype != torch.int8 or scale.shape != q.shape[:1]:
            raise CifarlabError(f"{where} is damaged: its int8 weight {key!r} does not match its scales; "
                                f"package the model again")
        out[key] = q.float() * _per_channel(scale.float(), q)
    return out


def _per_channel(scale: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return scale.view(-1, *([1] * (like.dim() - 1)))


class _Refused(CifarlabError):
    """The safe loader refused the file: an older checkpoint, a hostile file, or junk.
    ``needs``: the global its pickle asked for (None: the file is junk, it asked for no code)."""

    def __init__(self, message: str, needs: str | None):
        super().__init__(message)
        self.needs = needs


def _check_unpacked_size(path: Path) -> None:
    """Refuse a zip whose members unpack to far more than the file holds, before torch reads it:
    torch.save stores members uncompressed, so a deflated one is a decompression bomb or foreign."""
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as zf:
            unpacked = sum(info.file_size for info in zf.infolist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # torch.load says what is wrong with it
    size = path.stat().st_size
    if unpacked > 2 * size + 2**20:
        raise CifarlabError(f"{path} is not a checkpoint cifarlab wrote: its {size:,} bytes unpack to "
                            f"{unpacked:,} (torch.save stores them uncompressed); it was not loaded")


def safe_load(path: Path, allow: list = ()) -> Any:
    """``torch.load`` with weights_only=True: tensors and plain values only, no code runs.
    ``allow``: data types the unpickler may also build (``torch.serialization.safe_globals``)."""
    _check_unpacked_size(path)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(allow)):
            warnings.simplefilter("ignore")  # torch warns about pickle protocols: not the user's business
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text:
            raise CifarlabError(f"{path} is not a readable checkpoint (UnpicklingError: {_first_line(exc)})") from None
        found = re.search(r"GLOBAL ([\w.]+)", text)
        why = (f"was not loaded: its pickle asks to run code ({found.group(1)}), which a checkpoint of this "
               f"version never does" if found else f"is not a readable checkpoint: the safe loader refused it "
               f"({_refusal(text)})")
        raise _Refused(f"{path} {why}; if it is a checkpoint from an earlier cifarlab, convert it once "
                       f"with: cifarlab convert {path}", found.group(1) if found else None) from None
    except Exception as exc:  # a truncated or foreign file: say which one
        raise CifarlabError(f"{path} is not a readable checkpoint ({type(exc).__name__}: "
                            f"{_first_line(exc)})") from None


def _refusal(text: str) -> str:
    """The unpickler's own reason, e.g. 'Unsupported operand 149', from torch's long message."""
    after = text.split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in after.splitlines() if line.strip()]
    return next((line for line in lines if not line.startswith(("Check the documentation", "Weights only"))),
                "not tensors and plain values")[:120]


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else "no details")[:120]


def convert_checkpoint(src: str | Path, out: str | Path | None = None) -> tuple[Path, bool]:
    """Rewrite a checkpoint of an earlier format (format /1: numpy RNG state, pickled) as one
    that loads with the plain safe loader.

    The old file is read with the safe loader too, allowed exactly the numpy and torch data
    types format /1 stored (``_FORMAT_1_TYPES``): no code in it runs, and a file whose pickle
    asks for anything else is refused in one line. Returns ``(written path, converted)``;
    ``converted`` False: it was already safe.
    """
    src = resolve_checkpoint(src)
    out = Path(out) if out else src
    try:
        ckpt = safe_load(src, _format_1_types())
    except _Refused as exc:
        if exc.needs is None:  # junk, not a request for code
            raise CifarlabError(str(exc).split("; if it is")[0]) from None
        raise CifarlabError(f"{src} was not converted: its pickle asks for {exc.needs}, which no cifarlab "
                            f"checkpoint holds, so it was not loaded (nothing in it ran)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") not in (*_OLD_FORMATS, FORMAT):
        raise CifarlabError(f"{src} is not a cifarlab checkpoint (expected format {FORMAT})")
    converted = ckpt["format"] != FORMAT or _needs_upgrade(ckpt)
    if converted or out != src:
        try:
            save_checkpoint(_upgrade(ckpt), out)
        except (TypeError, ValueError, KeyError, IndexError) as exc:  # an old file with unexpected contents
            raise CifarlabError(f"{src} could not be converted ({' '.join(str(exc).split())[:160]}); "
                                f"train the model again") from None
    return out, converted


def _format_1_types() -> list:
    """What format /1 pickled besides plain values: numpy arrays (the RNG keys), numpy scalars and
    dtypes, and torch's version string; under their numpy 1 and numpy 2 module names."""
    from torch.torch_version import TorchVersion
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    out: list = [np.ndarray, np.dtype, TorchVersion]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 names each dtype's class; the RNG keys are uint32
    out += [getattr(dtypes, n) for n in ("UInt32DType", "Int64DType", "Float64DType", "Float32DType")
            if hasattr(dtypes, n)]
    for name in ("_reconstruct", "scalar"):
        fn = getattr(multiarray, name)
        out += [(fn, f"numpy._core.multiarray.{name}"), (fn, f"numpy.core.multiarray.{name}")]
    return out


def _needs_upgrade(ckpt: dict) -> bool:
    return isinstance((ckpt.get("rng") or {}).get("numpy"), tuple)


def _upgrade(ckpt: dict) -> dict:
    """A format /1 checkpoint as format /2: RNG states as tensors and lists, plain versions."""
    ckpt = dict(ckpt, format=FORMAT)
    rng = ckpt.get("rng")
    if rng and isinstance(rng.get("numpy"), tuple):
        name, keys, pos, has_gauss, gauss = rng["numpy"]
        version, internal, gauss_next = rng["python"]
        ckpt["rng"] = dict(rng, numpy=[str(name), torch.from_numpy(np.asarray(keys).astype(np.int64)), int(pos),
                                       int(has_gauss), float(gauss)],
                           python=[int(version), list(internal), gauss_next])
    if ckpt.get("versions"):
        ckpt["versions"] = {k: str(v) for k, v in ckpt["versions"].items()}
    return ckpt


def load_model(checkpoint: str | Path | dict, device: str | torch.device | None = None):
    """``(model, meta)`` rebuilt from the checkpoint alone, in eval mode on ``device``.

    ``meta`` is the checkpoint without the tensors: model, classes, normalize, config,
    metrics, epoch, versions, path.
    """
    from cifarlab.models import create_model
    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    spec, path = ckpt["model"], ckpt.get("path", "checkpoint")
    try:
        model = create_model(spec["name"], num_classes=spec["num_classes"], **spec.get("kwargs", {}))
    except CifarlabError as exc:  # an unknown name, bad or huge arguments: say which file asked for it
        raise _damaged(path, f"it describes a model that cannot be built ({exc})") from None
    load_weights(model, ckpt["state_dict"], path)
    model.to(device or "cpu").eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer", "rng")}
    return model, meta
