"""The model catalogue the faces share: which checkpoints a user may pick, by name.

Three sources, listed in this order:

- ``shipped``: the small trained models inside the package (``cifarlab/assets/NAME.pt``,
  ``default`` first, then the others under their names, each labelled "shipped" in the
  menus), so ``serve``, ``app`` and ``predict default`` work right after installation;
- ``operator``: checkpoints named at start-up (``cifarlab serve --checkpoint NAME=PATH``);
- ``run``: finished runs in the run registry (their ``best.pt``), newest first. Runs of a
  study, a search or a training subset are left out unless asked for (``all_runs=True``,
  ``--all-runs``): a menu shows what a person would pick. A run's name is its folder name
  when no other run with a checkpoint shares it, else ``NAME-ID``, the form
  ``cifarlab.resolve`` accepts everywhere.

A client only ever sends a *name*; ``resolve`` maps it to a path the operator or the
registry put there, so no file path from a browser reaches ``torch.load``. Each entry
carries the test accuracy measured when it was trained (``None`` when never measured),
because a list of models without their accuracy invites picking the wrong one.
Predictors are loaded once per name and kept (``predictor(name)``): the reference app
reloaded its model on every click.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cifarlab.inference.checkpoint import default_checkpoint  # noqa: F401 (catalog.default_checkpoint, as before)
from cifarlab.inference.runfolder import read_summary
from cifarlab.errors import ModelError

DEFAULT_NAME = "default"
_RUNS_TTL_S = 5.0  # the registry is re-read at most this often: new runs appear without a restart


@dataclass
class CatalogEntry:
    name: str  # what a client sends
    path: str  # checkpoint file; never sent by a client
    model: str  # architecture, e.g. resnet20
    accuracy: float | None  # test top-1 in [0, 1] measured after training; None if never measured
    top5: float | None
    parameters: int | None  # trainable parameters
    source: str  # "shipped" | "operator" | "run"
    description: str = ""
    train_images: int | None = None  # set when it trained on a subset: its accuracy is not the model's
    study: str | None = None  # the study or search a run belongs to

    def public(self) -> dict:
        """What the API shows: everything but the server-side path."""
        out = asdict(self)
        out.pop("path")
        out["label"] = self.label()  # the menus' line, the same in the web page and the desktop app
        return out

    def label(self) -> str:
        """One line for menus: name, architecture (a shipped model says so), accuracy. Names are
        unique in a catalogue, so labels are too."""
        acc = "accuracy not measured" if self.accuracy is None else f"{self.accuracy:.2%} test accuracy"
        if self.train_images and self.accuracy is not None:
            acc += f", trained on only {self.train_images:,} images"
        what = self.model
        if self.source == "shipped":
            what = "shipped" if self.name == self.model else f"shipped {self.model}"
        return f"{self.name} ({what}, {acc})"


def parse_named(items: list[str] | None) -> dict[str, str]:
    """``["NAME=PATH", ...]`` (the ``--checkpoint`` flags) as a dict; bad items raise ConfigError."""
    from cifarlab.errors import ConfigError
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise ConfigError(f"--checkpoint {item!r} must look like NAME=PATH, e.g. mine=runs/resnet20-x/best.pt")
        out[name] = path
    return out


class Catalog:
    """The named checkpoints of one server or app, and their loaded predictors."""

    def __init__(self, extra: dict[str, str] | None = None, *, runs: bool = True, shipped: bool = True,
                 registry=None, device: str | None = "cpu", all_runs: bool = False):
        from cifarlab.resolve import shipped_models
        self.device = device
        self._registry = registry
        self._use_runs = runs
        self._all_runs = all_runs
        self._fixed = ([_file_entry(name, path, "shipped") for name, path in shipped_models().items()]
                       if shipped else [])
        self._fixed += [_file_entry(name, path, "operator") for name, path in (extra or {}).items()]
        self._check_unique(self._fixed)
        self._runs: list[CatalogEntry] = []
        self._runs_read = -1e9
        self._predictors: dict[str, object] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ listing
    def entries(self) -> list[CatalogEntry]:
        """Shipped, operator, then finished runs (newest first); names are unique."""
        return self._fixed + self._run_entries()

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def resolve(self, name: str) -> CatalogEntry:
        """The entry called ``name``; anything else (a path included) is an unknown model."""
        for entry in self.entries():
            if entry.name == name:
                return entry
        known = ", ".join(self.names()) or "none (train one with `cifarlab train`)"
        raise ModelError(f"unknown model {name!r}; choose one of: {known}")

    def first(self) -> CatalogEntry:
        entries = self.entries()
        if not entries:
            raise ModelError("no models to choose from: the shipped default model is missing and no run has "
                             "finished; train one with `cifarlab train` or pass --checkpoint NAME=PATH")
        return entries[0]

    # ------------------------------------------------------------ loading
    def predictor(self, name: str):
        """The Predictor of ``name``, loaded on first use and kept."""
        entry = self.resolve(name)
        with self._lock:  # two first requests for one model must not load it twice
            key = f"{entry.name}\0{entry.path}\0{_stamp(entry.path)}"  # a replaced file is loaded afresh
            if key not in self._predictors:
                from cifarlab.inference.predict import Predictor
                from cifarlab.errors import CifarlabError
                try:
                    self._predictors[key] = Predictor(entry.path, device=self.device)
                except CifarlabError as exc:  # remembered: a broken file is not re-read on every request
                    self._predictors[key] = exc
            found = self._predictors[key]
            if isinstance(found, Exception):
                raise found.with_traceback(None)  # not a traceback that grows with every request
            return found

    # ------------------------------------------------------------ runs
    def _run_entries(self) -> list[CatalogEntry]:
        if not self._use_runs:
            return []
        now = time.monotonic()
        if now - self._runs_read > _RUNS_TTL_S:
            self._runs = self._read_runs()
            self._runs_read = now
        return self._runs

    def _read_runs(self) -> list[CatalogEntry]:
        from cifarlab.runlog import Registry
        try:
            rows = (self._registry or Registry()).list(status="finished")
        except Exception as exc:  # a broken registry must not take the shipped model down with it
            import sys
            print(f"cifarlab: warning: run registry unreadable ({exc}); listing no runs", file=sys.stderr)
            return []
        from cifarlab.resolve import run_checkpoint
        with_ckpt = [r for r in rows if run_checkpoint(r) is not None]
        counts: dict[str, int] = {}
        for row in with_ckpt:
            counts[row["name"]] = counts.get(row["name"], 0) + 1
        taken = {e.name for e in self._fixed}
        out = []
        for row in with_ckpt:
            if not self._all_runs and (row.get("study") or _subset(row)):
                continue  # a study's, a search's or a subset's run: not a model to pick
            shared = counts[row["name"]] > 1 or row["name"] in taken
            entry = _run_entry(row, f"{row['name']}-{row['id']}" if shared else row["name"])
            if entry is not None and entry.name not in taken:
                taken.add(entry.name)
                out.append(entry)
        return out

    @staticmethod
    def _check_unique(entries: list[CatalogEntry]) -> None:
        from cifarlab.errors import ConfigError
        seen: set[str] = set()
        for e in entries:
            if e.name in seen:
                raise ConfigError(f"model name {e.name!r} given twice; name each --checkpoint differently")
            seen.add(e.name)


# ---------------------------------------------------------------- entries
def _shipped_entry() -> CatalogEntry:
    return _file_entry(DEFAULT_NAME, default_checkpoint(), "shipped")


def _file_entry(name: str, path, source: str) -> CatalogEntry:
    """An entry from a checkpoint file, run folder or ONNX export; its metadata is read once, here."""
    from cifarlab.inference.checkpoint import load_checkpoint
    from cifarlab.resolve import resolve_path
    path = resolve_path(path)  # a run's name or id as every command takes it; a path as it is
    if str(path).lower().endswith(".onnx"):
        return _onnx_entry(name, Path(path), source)
    ckpt = load_checkpoint(path)  # raises a one-line CifarlabError for a missing or foreign file
    test = ckpt.get("test") or _summary_test(Path(ckpt["path"]).parent)
    return CatalogEntry(
        name=name, path=ckpt["path"], model=ckpt["model"]["name"], accuracy=test.get("top1"),
        top5=test.get("top5"), parameters=ckpt.get("parameters") or _count(ckpt),
        source=source, description=ckpt.get("description", ""))


def _onnx_entry(name: str, path: Path, source: str) -> CatalogEntry:
    """An exported model (``cifarlab export``); its accuracy comes from the run folder it sits in."""
    from cifarlab.inference.export import OnnxModel
    meta = OnnxModel(path).meta  # raises a one-line CifarlabError for a missing or foreign file
    test = _summary_test(path.resolve().parent)
    return CatalogEntry(name=name, path=str(path.resolve()), model=meta["model"]["name"], accuracy=test.get("top1"),
                        top5=test.get("top5"), parameters=None, source=source, description="ONNX export")


def _subset(row: dict) -> int | None:
    """The number of training images of a run trained on a subset, else None."""
    n = (row.get("config") or {}).get("train_subset")
    return int(n) if n else None


def _run_entry(row: dict, name: str) -> CatalogEntry | None:
    from cifarlab.resolve import run_checkpoint
    run_dir = Path(row["path"])
    path = run_checkpoint(row)
    if path is None:
        return None
    summary = read_summary(run_dir) or {}
    params = (summary.get("params") or {}).get("trainable")
    metrics = row.get("metrics") or {}
    test = summary.get("test") or {}
    return CatalogEntry(name=name, path=str(path), model=row.get("model") or "?",
                        accuracy=metrics.get("test_top1", test.get("top1")), top5=test.get("top5"),
                        parameters=params, source="run", description=_run_description(row, summary),
                        train_images=_subset(row), study=row.get("study"))


def _run_description(row: dict, summary: dict) -> str:
    """Run id, epochs and date; not the folder, which is the server's business."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.get("finished") or row.get("created") or 0))
    epochs = summary.get("epochs_run", (row.get("metrics") or {}).get("epochs", "?"))
    text = f"run {row['id']}: {plural(epochs, 'epoch')}, finished {when}"
    if _subset(row):
        text += f"; trained on only {_subset(row):,} images"
    if row.get("study"):
        text += f"; part of {row['study']}"
    return text


def plural(n, word: str) -> str:
    """``1 epoch``, ``2 epochs`` (``n`` may be "?")."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def _stamp(path: str) -> str:
    """Size and modification time of ``path``: changes when the file is replaced."""
    try:
        st = Path(path).stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _summary_test(run_dir: Path) -> dict:
    return (read_summary(run_dir) or {}).get("test") or {}


def _count(ckpt: dict) -> int:
    """Trainable parameters of the model a checkpoint describes (models.count_params counts)."""
    from cifarlab.models import count_params, create_model
    spec = ckpt["model"]
    model = create_model(spec["name"], num_classes=spec.get("num_classes", 10), **spec.get("kwargs", {}))
    return count_params(model).trainable




# ---------------------------------------------------------------- packaging
MAX_SHIPPED_BYTES = 2 * 1024 * 1024  # the repository's limit on a tracked file


WEIGHT_FORMATS = ("float32", "float16", "int8")


def package_run(run_dir, out, half: bool = False, data_file=None, test: dict | None = None,
                weights: str = "float32", keep_calibration: bool = True) -> dict:
    """Write a run's selected checkpoint as a slim, self-describing file to ship; returns its metadata.

    Keeps what inference and evaluation need (model spec, weights, classes, normalization,
    config) and adds the measured test accuracy from summary.json and where it came from;
    drops optimizer, scheduler, RNG and callback state. ``weights``: "float16" halves the size,
    "int8" quarters it (conv and linear weights as int8 with a scale per output channel,
    inference.checkpoint.quantize_state; the loader restores float32); ``half`` means "float16".
    The caller should re-measure accuracy then (scripts/package_model.py does).
    ``test`` replaces the summary's test metrics, e.g. with the single-view accuracy the apps
    give when the run itself was tested with test-time augmentation. The run's ``plan`` (what
    it trained: epochs, stages, the time budget's plan) is kept beside its ``config``.
    ``keep_calibration=False`` leaves out the run's own temperature (fitted on the float32
    weights), for a caller that fits one on the written file and keeps it in a sidecar.
    """
    import datetime
    import hashlib

    from cifarlab.inference.checkpoint import FORMAT, load_checkpoint, quantize_state, save_checkpoint, versions
    from cifarlab.errors import ConfigError
    run_dir = Path(run_dir)
    summary = read_summary(run_dir) or {}
    if not summary.get("test"):
        raise ConfigError(f"{run_dir} has no summary.json with test metrics; let the run finish first")
    ckpt = load_checkpoint(run_dir / summary["selection"]["checkpoint"])
    weights = "float16" if half else weights
    if weights not in WEIGHT_FORMATS:
        raise ConfigError(f"weights={weights!r} is not one of: {', '.join(WEIGHT_FORMATS)}")
    state, scales = ckpt["state_dict"], None
    if weights == "float16":
        state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    elif weights == "int8":
        state, scales = quantize_state(state)
    data = dict(summary.get("data") or {})
    if data_file and Path(data_file).is_file():
        data["file_sha256"] = hashlib.sha256(Path(data_file).read_bytes()).hexdigest()
    test = {k: (test or summary["test"])[k] for k in ("n", "top1", "top5", "loss") if k in (test or summary["test"])}
    slim = {
        "format": FORMAT, "model": ckpt["model"], "state_dict": state, "classes": ckpt["classes"],
        "normalize": ckpt["normalize"], "config": ckpt["config"], "plan": ckpt.get("plan"),
        "epoch": ckpt.get("epoch"), "metrics": ckpt.get("metrics", []), "test": test, "parameters": _count(ckpt),
        "weights_dtype": weights, "description": _package_description(ckpt, summary, test),
        "provenance": {"run": run_dir.name, "selection": summary.get("selection"), "data": data,
                       "training_time_s": summary.get("training_time_s"), "hardware": summary.get("hardware"),
                       "trained_with": ckpt.get("versions"),
                       "packaged": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
        "versions": versions(),
    }
    if scales is not None:
        slim["weight_scales"] = scales
    if keep_calibration and ckpt.get("calibration"):  # the run's temperature: the probabilities its checkpoint gives
        slim["calibration"] = ckpt["calibration"]
    save_checkpoint(slim, out)
    size = Path(out).stat().st_size
    if size > MAX_SHIPPED_BYTES:
        Path(out).unlink()
        raise ConfigError(f"{out} would be {size / 2**20:.2f} MiB, over the {MAX_SHIPPED_BYTES / 2**20:g} MiB "
                          f"limit on a shipped file; pick a smaller model or store its weights as float16 or int8")
    return {k: v for k, v in slim.items() if k not in ("state_dict", "weight_scales")} | {"bytes": size}


def _package_description(ckpt: dict, summary: dict, test: dict) -> str:
    """What a packaged model is, in plain words: architecture, epochs, the time budget it was
    trained in (when it had one), its test accuracy and, for a model from a write-up or a
    paper, where it comes from."""
    from cifarlab.words import plain_words
    name = ckpt["model"]["name"]
    budget = (summary.get("time_budget") or {}).get("budget_s")
    within = f" within a {budget / 60:g}-minute time budget" if budget else ""
    hw = summary.get("hardware") or {}
    if within and hw.get("device") == "cpu" and hw.get("cores"):
        within += f" on a {hw['cores']}-core CPU"
    elif within and hw.get("device_name"):
        within += f" on {hw['device_name']}"
    text = (f"{name} trained {plural(summary.get('epochs_run'), 'epoch')} on CIFAR-10{within} "
            f"(test top-1 {test['top1']:.2%} on {test.get('n')} images)")
    try:
        from cifarlab.models import model_info
        origin = plain_words(model_info(name).reproduces or "")
    except Exception:  # an architecture the registry no longer knows: the plain description
        origin = ""
    source, sep, what = origin.partition(": ")  # "[modern form of ]the Keras tutorial ...: LeNet-5 (...)"
    sep = sep if source.startswith(("the ", "modern form of the ")) else ""  # a write-up named, then the net
    if sep and source.startswith("modern form of "):
        origin = f"a modern form of {what}, as in {source.removeprefix('modern form of ')}"
    elif sep:
        origin = f"{what}, as in {source}"
    elif origin.startswith("modern form of "):
        origin = "a " + origin
    if origin:
        text += f". {origin[0].upper()}{origin[1:]}"
    return text


__all__ = ["Catalog", "CatalogEntry", "DEFAULT_NAME", "MAX_SHIPPED_BYTES", "default_checkpoint", "package_run", "parse_named"]


def model_card(path: str, name: str) -> dict:
    """The model card of a checkpoint the catalogue lists (``modelcard.card_for``, given the
    readers it needs from the layers above it): what the web page and the desktop app show."""
    from cifarlab import modelcard
    from cifarlab.calibration import file_sha256, read_sidecar
    from cifarlab.inference.checkpoint import load_checkpoint
    return modelcard.card_for(path, name, load_meta=load_checkpoint, read_sidecar=read_sidecar, sha256=file_sha256,
                              read_rows=card_rows)


def card_rows(kind: str) -> list[dict]:
    """The measurements a model card reads (``modelcard.MEASURED_KINDS``): the rows packaged with
    the shipped files (``shipped.measured_rows``), then the rows of a results/ folder where there
    is one (a checkout, ``$CIFARLAB_RESULTS``), which, coming later, win for the same file."""
    from cifarlab import results
    from cifarlab.shipped import measured_rows
    return measured_rows(kind) + results.read_rows(kind)
