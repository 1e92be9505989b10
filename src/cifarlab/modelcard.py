"""A model card per run and per shipped model: what it scores, how sure it is, how it holds up.

Runs: ``model_card.json`` and ``model_card.md`` in the run folder: test accuracy (top-1,
top-5, per class), the five most confused class pairs, the expected calibration error
before and after temperature scaling, the mean corruption accuracy (once ``cifarlab
evaluate --corruptions`` has run), and the training data and budget. Built from what the
run already wrote (summary.json, confusion.csv, calibration.json, corruptions.json), so it
can be rebuilt at any time with ``write_run_card(run_dir)``.

Checkpoint files (the shipped models, an operator's ``--checkpoint NAME=PATH``):
``checkpoint_card`` builds the card from what travels with the file (its own test record
and provenance, its calibration sidecar) and from the rows of ``results/`` that name the
file by its SHA-256 (``calibration.csv``: ECE before and after the temperature;
``corruptions.csv``: mean corruption accuracy; an installed package, which has no results/,
reads the copy of those rows packaged beside the files, ``catalog.card_rows``). Nothing is trained or measured here: a
figure that was never measured is None, and the card says so in words.

``card_for(path, name, ...)`` is what the faces call: a run's card for a file in a run
folder, else the checkpoint's card, and never an exception (a card with one ``error``
sentence instead). This module sits below ``inference``, ``calibration`` and ``results``
(docs/design.md), so the faces hand it those modules' readers.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

import numpy as np

from cifarlab.atomic import atomic_write_text

CARD_JSON, CARD_MD = "model_card.json", "model_card.md"
N_BINS = 15  # calibration.N_BINS: the bins results/calibration.csv's rows were measured with
MEASURED_KINDS = ("calibration", "corruptions")  # the results/ files a checkpoint's card reads


def confused_pairs(confusion, classes: list[str], k: int = 5) -> list[dict]:
    """The ``k`` class pairs most often mistaken for each other (both directions summed)."""
    conf = np.asarray(confusion, dtype=np.int64)
    pairs = []
    for i in range(len(classes)):
        for j in range(i + 1, len(classes)):
            total = int(conf[i, j] + conf[j, i])
            if total:
                pairs.append({"a": classes[i], "b": classes[j], "count": total,
                              "a_as_b": int(conf[i, j]), "b_as_a": int(conf[j, i])})
    pairs.sort(key=lambda p: (-p["count"], p["a"], p["b"]))
    return pairs[:k]


def read_confusion_csv(path: str | Path) -> tuple[np.ndarray, list[str]] | None:
    path = Path(path)
    try:
        lines = [ln.split(",") for ln in path.read_text().splitlines() if ln.strip()]
        classes = lines[0][1:]
        return np.array([[int(v) for v in row[1:]] for row in lines[1:]]), classes
    except (OSError, ValueError, IndexError):  # missing or damaged: the card goes without its pairs
        return None


def build_card(summary: dict, confusion=None, classes: list[str] | None = None,
               calibration: dict | None = None, corruptions: dict | None = None, name: str | None = None) -> dict:
    """The card as a dict of plain values (every part None when it was not measured)."""
    test = summary.get("test") or {}
    cal = calibration or summary.get("calibration") or {}
    card = {
        "name": name or Path(summary.get("run_dir", "model")).name,
        "kind": "run",
        "model": summary.get("model"),
        "recipe": summary.get("recipe"),
        "params": summary.get("params"),
        "accuracy": {"top1": test.get("top1"), "top5": test.get("top5"), "n": test.get("n"),
                     "tta": test.get("tta")},
        "per_class": test.get("per_class"),
        "confused_pairs": confused_pairs(confusion, classes) if confusion is not None and classes else None,
        "calibration": None,
        "robustness": None,
        "training": {"data": summary.get("data"), "epochs_run": summary.get("epochs_run"),
                     "epochs_planned": summary.get("epochs_planned"), "steps": summary.get("steps_run"),
                     "training_time_s": summary.get("training_time_s"), "hardware": _hw(summary.get("hardware")),
                     "time_budget": summary.get("time_budget")},
        "versions": summary.get("versions"),
    }
    if cal and "before" in cal:
        card["calibration"] = {
            "n_bins": cal.get("n_bins"), "temperature": cal.get("temperature"),
            "ece_before": cal["before"]["ece"], "mce_before": cal["before"]["mce"],
            "ece_after": (cal.get("after") or {}).get("ece"), "mce_after": (cal.get("after") or {}).get("mce"),
            "fitted_on": cal.get("fitted_on"),
            "note": cal.get("note") or (None if cal.get("temperature") else "no validation split: no temperature "
                                                                            "fitted")}
    elif cal.get("error") or cal.get("skipped"):
        card["calibration"] = {"error": cal.get("error") or cal["skipped"]}
    elif cal.get("temperature"):  # a temperature that came without a measurement of what it does
        card["calibration"] = {"n_bins": None, "temperature": cal["temperature"], "ece_before": None,
                               "mce_before": None, "ece_after": None, "mce_after": None,
                               "fitted_on": cal.get("fitted_on"), "note": cal.get("note")}
    if corruptions:
        card["robustness"] = {k: corruptions.get(k) for k in ("clean_accuracy", "mean_corruption_accuracy",
                                                             "relative_drop", "severities", "kinds", "n",
                                                             "precision")}
    return card


def _hw(hw) -> dict | None:
    if not isinstance(hw, dict):
        return None
    return {k: hw[k] for k in ("device", "device_name", "cpu", "threads", "amp") if k in hw}


# ---------------------------------------------------------------- a checkpoint file's card
def checkpoint_card(meta: dict, *, name: str, sidecar: dict | None = None,
                    measured: dict[str, list[dict]] | None = None, sha256: str | None = None) -> dict:
    """The card of a checkpoint file (``load_checkpoint``'s dict), without measuring anything.

    Accuracy and training from the checkpoint's own ``test`` and ``provenance``; the
    temperature from its ``calibration`` entry, else ``sidecar`` (``calibration.read_sidecar``);
    ECE/MCE before and after from the latest ``measured["calibration"]`` row whose
    ``checkpoint_sha256`` is this file's (``sha256``) and whose temperature is the one the
    apps apply; the mean corruption accuracy likewise from ``measured["corruptions"]``.
    """
    summary = checkpoint_summary(meta)
    test = summary["test"]
    prov = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
    measured = measured or {}
    sources: dict[str, str] = {}
    cal = _calibration_from(meta, sidecar, _row_for(measured.get("calibration"), sha256), sources)
    cor = _corruptions_from(_row_for(measured.get("corruptions"), sha256), sources)
    card = build_card(summary, calibration=cal or {}, corruptions=cor, name=name)
    card["kind"] = "checkpoint"
    card["weights"] = meta.get("weights_dtype")
    card["measure_with"] = name
    if test.get("top1") is not None:
        sources["accuracy"] = "the test record stored in the checkpoint when it was packaged"
    if prov:
        sources["training"] = (f"the checkpoint's provenance (run {prov.get('run', '?')}"
                               + (f", packaged {prov['packaged'][:10]}" if isinstance(prov.get("packaged"), str)
                                  else "") + ")")
    order = ("accuracy", "temperature", "calibration", "robustness", "training")
    card["sources"] = {k: sources[k] for k in order if k in sources}
    return card


def _row_for(rows, sha256: str | None) -> dict | None:
    """The last row naming this file by (a prefix of at least 12 hex digits of) its SHA-256."""
    if not rows or not sha256:
        return None
    found = None
    for row in rows:
        tag = str(row.get("checkpoint_sha256") or "")
        if len(tag) >= 12 and sha256.lower().startswith(tag.lower()):
            found = row
    return found


def _fraction(row: dict, key: str) -> float | None:
    v = row.get(key)
    return round(v / 100, 8) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _measured_on(kind: str, row: dict) -> str:
    return f"results/{kind}.csv, row of {str(row.get('date') or '?')[:10]} (commit {row.get('commit') or '?'})"



def checkpoint_summary(meta: dict) -> dict:
    """What a card reads of a run's summary.json, from a checkpoint file alone
    (``load_checkpoint``'s dict): its test record, data, epochs (a time budget's re-planned
    ones where it has a plan), training time, hardware and versions."""
    test = meta.get("test") if isinstance(meta.get("test"), dict) else {}
    prov = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
    cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    data = prov.get("data") or ({"source": cfg["data"]} if isinstance(cfg.get("data"), str) else None)
    params = meta.get("parameters")
    plan = meta.get("plan") if isinstance(meta.get("plan"), dict) else {}
    summary = {"model": (meta.get("model") or {}).get("name"), "recipe": cfg.get("recipe"),
               "params": {"trainable": params} if isinstance(params, int) else None, "test": test, "data": data,
               "epochs_run": meta.get("epoch"), "epochs_planned": plan.get("epochs") or cfg.get("epochs"),
               "time_budget": plan.get("budget") if isinstance(plan.get("budget"), dict) else (
                   {"budget_s": cfg["time_budget"]} if isinstance(cfg.get("time_budget"), (int, float)) else None),
               "training_time_s": prov.get("training_time_s"), "hardware": prov.get("hardware"),
               "versions": prov.get("trained_with") or meta.get("versions")}
    return summary


def _calibration_from(meta: dict, sidecar: dict | None, row: dict | None, sources: dict) -> dict | None:
    own = meta.get("calibration") if isinstance(meta.get("calibration"), dict) else None
    side = own or (sidecar if isinstance(sidecar, dict) else None)
    t = side.get("temperature") if side else None
    t = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 else None
    if t is not None:
        sources["temperature"] = ("the checkpoint's calibration entry" if own else
                                  f"the sidecar {Path(str(meta.get('path', 'model.pt'))).stem}.calibration.json "
                                  f"beside the file")
    if row is not None and _fraction(row, "ece_raw_pct") is not None:
        row_t = row.get("temperature")
        same_t = t is not None and isinstance(row_t, (int, float)) and abs(row_t - t) <= 1e-3 * max(1.0, t)
        sources["calibration"] = _measured_on("calibration", row)
        out = {"n_bins": row.get("n_bins") or N_BINS, "temperature": t, "fitted_on": row.get("fitted_on"),
               "before": {"ece": _fraction(row, "ece_raw_pct"), "mce": _fraction(row, "mce_raw_pct")},
               "n": row.get("n")}
        if same_t:
            out["after"] = {"ece": _fraction(row, "ece_after_pct"), "mce": _fraction(row, "mce_after_pct")}
        elif t is None:
            out["note"] = "no temperature travels with this file: the apps show its raw probabilities"
        else:
            out["note"] = (f"the measured temperature {row_t} is not the one this file now carries ({t:.4g}): "
                           f"its effect was not measured")
        return out
    if t is not None:
        return {"temperature": t, "fitted_on": side.get("fitted_on"),
                "note": "what it does to the calibration error was never measured for this file"}
    return None


def _corruptions_from(row: dict | None, sources: dict) -> dict | None:
    if row is None or _fraction(row, "mean_corruption_pct") is None:
        return None
    sources["robustness"] = _measured_on("corruptions", row)
    clean, mean = _fraction(row, "clean_top1_pct"), _fraction(row, "mean_corruption_pct")
    drop = _fraction(row, "relative_drop_pct")
    if drop is None and clean:
        drop = (clean - mean) / clean
    return {"clean_accuracy": clean, "mean_corruption_accuracy": mean, "relative_drop": drop, "n": row.get("n"),
            "precision": row.get("precision"),
            "kinds": str(row.get("kinds") or "").split() or None,
            "severities": [int(s) for s in str(row.get("severities") or "").split() if s.isdigit()] or None}


# ---------------------------------------------------------------- the card the faces show
def run_card(run_dir: str | Path, name: str | None = None) -> dict | None:
    """A run folder's card: its model_card.json, else built from its files (nothing written);
    None when the folder holds no summary.json."""
    run_dir = Path(run_dir)
    card = _read_json(run_dir / CARD_JSON)
    if not (isinstance(card, dict) and isinstance(card.get("accuracy"), dict)):
        summary = _read_json(run_dir / "summary.json")
        if not isinstance(summary, dict):
            return None
        card = _run_card(run_dir, summary)
    card = dict(card)
    card.setdefault("kind", "run")
    if name:
        card["name"] = name
    card.setdefault("measure_with", name or run_dir.name)
    return card


def card_for(path: str | Path, name: str, *, load_meta: Callable[[str], dict],
             read_sidecar: Callable[[str], dict | None] | None = None,
             sha256: Callable[[str], str] | None = None,
             read_rows: Callable[[str], list[dict]] | None = None) -> dict:
    """The card of the model called ``name`` in ``path`` (a checkpoint, an ONNX export or a run
    folder); never raises. A file that is a finished run's selected checkpoint (or its
    export) gets the run's card, any other file ``checkpoint_card`` from ``load_meta(path)``
    (``inference.checkpoint.load_checkpoint``), ``read_sidecar(path)`` and ``sha256(path)``
    (``cifarlab.calibration``) and ``read_rows(kind)`` (``cifarlab.results.read_rows``).
    On failure: ``{"name", "kind": "unavailable", "error": one sentence}``."""
    try:
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        summary = _read_json(folder / "summary.json")
        if isinstance(summary, dict):
            selected = (summary.get("selection") or {}).get("checkpoint") or "best.pt"
            if path.is_dir() or path.name == selected or path.suffix.lower() == ".onnx":
                card = run_card(folder, name)
                if card is not None:
                    return card
        if path.suffix.lower() == ".onnx":
            return unavailable(name, "an ONNX export outside its run folder carries no test record")
        meta = load_meta(str(path))
        measured = {}
        for kind in MEASURED_KINDS if read_rows else ():
            try:
                measured[kind] = read_rows(kind)
            except Exception:  # a damaged results file: the card goes without its rows
                measured[kind] = []
        side = read_sidecar(str(meta.get("path", path))) if read_sidecar else None
        digest = sha256(str(meta.get("path", path))) if sha256 else None
        return checkpoint_card(meta, name=name, sidecar=side, measured=measured, sha256=digest)
    except Exception as exc:  # a card must never take a page or a window down with it
        return unavailable(name, _reason(exc))


def unavailable(name: str, reason: str) -> dict:
    """The card of a model whose card could not be built: one sentence saying why."""
    return {"name": name, "kind": "unavailable", "error": f"No model card for {name}: {reason}."}


def _reason(exc: Exception) -> str:
    text = str(exc).strip().rstrip(".") or type(exc).__name__
    return text.splitlines()[0]


def public(card: dict) -> dict:
    """The card without the server's paths (a data file is named by its file name only)."""
    out = copy.deepcopy(card)
    data = (out.get("training") or {}).get("data")
    if isinstance(data, dict) and isinstance(data.get("source"), str):
        data["source"] = Path(data["source"]).name or data["source"]
    for key in ("path", "run_dir", "checkpoint"):
        out.pop(key, None)
    return out


# ---------------------------------------------------------------- words
def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.2%}"


def sections(card: dict) -> list[dict]:
    """The card as sections of plain sentences (``text``: paragraphs, commands in backquotes)
    and tables (``header``, ``rows``), each with a ``key`` and a ``title`` (None for the
    opening line): what the markdown, the web page, the desktop app and ``cifarlab evaluate``
    show, in the same words."""
    if card.get("error"):
        return [{"key": "error", "title": None, "text": [card["error"]]}]
    how = card.get("measure_with") or "RUN"
    if card.get("kind") == "checkpoint":  # no run folder to find its data in
        how += " --data PATH"
    acc = card.get("accuracy") or {}
    params = card.get("params") or {}
    out = [{"key": "intro", "title": None, "text": [
        f"Model `{card.get('model')}`" + (f", recipe `{card['recipe']}`" if card.get("recipe") else "")
        + (f", {params['trainable']:,} trainable parameters" if params.get("trainable") else "")
        + (f", weights stored as {card['weights']}" if card.get("weights") else "") + "."]}]
    if acc.get("top1") is not None:
        text = [f"top-1 {_pct(acc['top1'])}, top-5 {_pct(acc.get('top5'))} on {_count(acc.get('n'))} images"
                + (f" (TTA: {acc['tta']})" if acc.get("tta") not in (None, "none") else "") + "."]
    else:
        text = ["not measured."]
    per_class = card.get("per_class")
    table = None
    if per_class:
        table = {"header": ["class", "accuracy"], "rows": [[c, _pct(a)] for c, a in per_class.items()]}
    else:
        text.append(f"Per-class accuracy: not measured for this file; `cifarlab evaluate {how} --out FOLDER` "
                    f"measures it.")
    out.append({"key": "accuracy", "title": "Accuracy (test split)", "text": text, **(table or {})})
    pairs = card.get("confused_pairs")
    if pairs:
        out.append({"key": "pairs", "title": "Most confused pairs", "text": [],
                    "header": ["pair", "mistakes", "a as b", "b as a"],
                    "rows": [[f"{p['a']} / {p['b']}", str(p["count"]), str(p["a_as_b"]), str(p["b_as_a"])]
                             for p in pairs]})
    else:
        out.append({"key": "pairs", "title": "Most confused pairs",
                    "text": ["not measured (no confusion matrix for this model)."]})
    out.append({"key": "calibration", "title": "Calibration (test split)",
                "text": [_calibration_words(card.get("calibration"))]})
    rob = card.get("robustness")
    if rob and rob.get("mean_corruption_accuracy") is not None:
        words = (f"Mean corruption accuracy {_pct(rob['mean_corruption_accuracy'])} over "
                 f"{len(rob.get('kinds') or [])} kinds x {len(rob.get('severities') or [])} severities, against "
                 f"{_pct(rob.get('clean_accuracy'))} clean (relative drop {_pct(rob.get('relative_drop'))})"
                 + (f", on {_count(rob['n'])} test images" if rob.get("n") else "")
                 + (f", in {rob['precision']}" if rob.get("precision") else "") + ".")
    else:
        words = f"not measured yet: run `cifarlab evaluate {how} --corruptions`."
    out.append({"key": "robustness", "title": "Robustness (corrupted test sets)", "text": [words]})
    out.append({"key": "training", "title": "Training", "text": _training_words(card.get("training") or {})})
    if card.get("sources"):
        out.append({"key": "sources", "title": "Where the figures come from",
                    "text": [f"{k.capitalize()}: {v}." for k, v in card["sources"].items()]})
    return out


def _calibration_words(cal: dict | None) -> str:
    if not cal:
        return "not measured."
    if "error" in cal:
        return f"not measured: {cal['error']}"
    t, note = cal.get("temperature"), cal.get("note")
    if cal.get("ece_before") is None:
        if t:
            return (f"Temperature T = {t:.3f} (fitted on: {_fitted(cal.get('fitted_on'))}) is applied to the "
                    f"probabilities; the calibration error was not measured" + (f" ({note})." if note else "."))
        return "not measured."
    bins = f" ({cal['n_bins']} bins)" if cal.get("n_bins") else ""
    if t and cal.get("ece_after") is not None:
        ece = (f", {_pct(cal['ece_after'])} after temperature scaling (T = {t:.3f}, fitted on: "
               f"{_fitted(cal.get('fitted_on'))})")
    else:
        ece = f" ({note})" if note else ""
    mce = f". Maximum calibration error: {_pct(cal.get('mce_before'))} raw" + (
        f", {_pct(cal['mce_after'])} scaled." if cal.get("mce_after") is not None else ".")
    return f"Expected calibration error{bins}: {_pct(cal['ece_before'])} raw{ece}{mce}"


def _training_words(tr: dict) -> list[str]:
    data = tr.get("data") if isinstance(tr.get("data"), dict) else {}
    counts = data.get("counts") if isinstance(data.get("counts"), dict) else data
    sizes = ", ".join(f"{k} {counts[k]:,}" for k in ("train", "val", "test") if isinstance(counts.get(k), int))
    secs = tr.get("training_time_s")
    run, planned = tr.get("epochs_run"), tr.get("epochs_planned")
    budget = [(f"{run} of {planned} epochs" if planned is not None else f"{run} epoch{'' if run == 1 else 's'}")
              if run is not None else None,
              f"{_count(tr['steps'])} steps" if tr.get("steps") is not None else None,
              f"{_duration(secs)} of training" if isinstance(secs, (int, float)) else None]
    limit = (tr.get("time_budget") or {}).get("budget_s")
    if isinstance(limit, (int, float)) and limit > 0:  # 0: no time budget
        budget.append(f"within a time budget of {_duration(limit)}")
    hw = tr.get("hardware") or {}
    where = hw.get("device_name") or hw.get("device")
    return [f"Data: {data.get('source') or data.get('format') or 'not recorded'}" + (f" ({sizes})" if sizes else "")
            + ".",
            "Budget: " + (", ".join(b for b in budget if b) or "not recorded") + (f" on {where}" if where else "")
            + "."]


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def render_markdown(card: dict) -> str:
    lines = [f"# Model card: {card.get('name', '?')}", ""]
    for sec in sections(card):
        lines += [f"## {sec['title']}", ""] if sec["title"] else []
        for para in sec.get("text") or []:
            lines += [para, ""]
        if sec.get("rows"):
            lines += ["| " + " | ".join(sec["header"]) + " |", "|---|" + "---:|" * (len(sec["header"]) - 1)]
            lines += ["| " + " | ".join(r) + " |" for r in sec["rows"]] + [""]
    return "\n".join(lines)


def _fitted(where) -> str:
    return {"val": "the validation split", None: "unknown"}.get(where, str(where))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def write_card(out_dir: str | Path, card: dict) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / CARD_JSON, json.dumps(card, indent=2) + "\n")
    atomic_write_text(out_dir / CARD_MD, render_markdown(card) + "\n")
    return [out_dir / CARD_JSON, out_dir / CARD_MD]


def _run_card(run_dir: Path, summary: dict) -> dict:
    conf = read_confusion_csv(run_dir / "confusion.csv")
    return build_card(summary, *(conf if conf else (None, None)), calibration=_read_json(run_dir / "calibration.json"),
                      corruptions=_read_json(run_dir / "corruptions.json"), name=run_dir.name)


def write_run_card(run_dir: str | Path, summary: dict | None = None) -> list[Path]:
    """model_card.json/.md of the run folder from what the run wrote; returns the paths."""
    run_dir = Path(run_dir)
    summary = summary if summary is not None else (_read_json(run_dir / "summary.json") or {})
    return write_card(run_dir, _run_card(run_dir, summary))
