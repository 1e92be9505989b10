"""A model card per run (and per shipped model): what it scores, how sure it is, how it holds up.

``model_card.json`` and ``model_card.md`` in the run folder: test accuracy (top-1, top-5,
per class), the five most confused class pairs, the expected calibration error before and
after temperature scaling, the mean corruption accuracy (once ``cifarlab evaluate
--corruptions`` has run), and the training data and budget. Built from what the run
already wrote (summary.json, confusion.csv, calibration.json, corruptions.json), so it can
be rebuilt at any time with ``write_run_card(run_dir)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cifarlab.atomic import atomic_write_text

CARD_JSON, CARD_MD = "model_card.json", "model_card.md"


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
    if not path.is_file():
        return None
    lines = [ln.split(",") for ln in path.read_text().splitlines() if ln.strip()]
    classes = lines[0][1:]
    return np.array([[int(v) for v in row[1:]] for row in lines[1:]]), classes


def build_card(summary: dict, confusion=None, classes: list[str] | None = None,
               calibration: dict | None = None, corruptions: dict | None = None, name: str | None = None) -> dict:
    """The card as a dict of plain values (every part None when it was not measured)."""
    test = summary.get("test") or {}
    cal = calibration or summary.get("calibration") or {}
    card = {
        "name": name or Path(summary.get("run_dir", "model")).name,
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
            "note": None if cal.get("temperature") else "no validation split: no temperature fitted"}
    elif cal.get("error") or cal.get("skipped"):
        card["calibration"] = {"error": cal.get("error") or cal["skipped"]}
    if corruptions:
        card["robustness"] = {k: corruptions.get(k) for k in ("clean_accuracy", "mean_corruption_accuracy",
                                                             "relative_drop", "severities", "kinds")}
    return card


def _hw(hw) -> dict | None:
    if not isinstance(hw, dict):
        return None
    return {k: hw[k] for k in ("device", "device_name", "cpu", "threads", "amp") if k in hw}


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.2%}"


def render_markdown(card: dict) -> str:
    acc = card["accuracy"]
    lines = [f"# Model card: {card['name']}", "",
             f"Model `{card['model']}`" + (f", recipe `{card['recipe']}`" if card.get("recipe") else "")
             + (f", {card['params']['trainable']:,} trainable parameters" if card.get("params") else "") + ".", "",
             "## Accuracy (test split)", "",
             f"top-1 {_pct(acc['top1'])}, top-5 {_pct(acc['top5'])} on {acc['n']} images"
             + (f" (TTA: {acc['tta']})" if acc.get("tta") not in (None, "none") else "") + ".", ""]
    if card.get("per_class"):
        lines += ["| class | accuracy |", "|---|---|"]
        lines += [f"| {c} | {_pct(a)} |" for c, a in card["per_class"].items()] + [""]
    if card.get("confused_pairs"):
        lines += ["## Most confused pairs", "", "| pair | mistakes | a as b | b as a |", "|---|---|---|---|"]
        lines += [f"| {p['a']} / {p['b']} | {p['count']} | {p['a_as_b']} | {p['b_as_a']} |"
                  for p in card["confused_pairs"]] + [""]
    cal = card.get("calibration")
    lines += ["## Calibration (test split)", ""]
    if cal and "error" in cal:
        lines += [f"not measured: {cal['error']}", ""]
    elif cal:
        lines += [f"Expected calibration error ({cal['n_bins']} bins): {_pct(cal['ece_before'])} raw"
                  + (f", {_pct(cal['ece_after'])} after temperature scaling (T = {cal['temperature']:.3f}, "
                     f"fitted on: {_fitted(cal.get('fitted_on'))})" if cal.get("temperature") else f" ({cal['note']})")
                  + f". Maximum calibration error: {_pct(cal['mce_before'])} raw"
                  + (f", {_pct(cal['mce_after'])} scaled." if cal.get("mce_after") is not None else "."), ""]
    else:
        lines += ["not measured.", ""]
    rob = card.get("robustness")
    lines += ["## Robustness (corrupted test sets)", ""]
    if rob:
        lines += [f"Mean corruption accuracy {_pct(rob['mean_corruption_accuracy'])} over "
                  f"{len(rob.get('kinds') or [])} kinds x {len(rob.get('severities') or [])} severities, against "
                  f"{_pct(rob['clean_accuracy'])} clean (relative drop {_pct(rob['relative_drop'])}).", ""]
    else:
        lines += ["not measured yet: run `cifarlab evaluate RUN --corruptions`.", ""]
    tr = card["training"]
    data = tr.get("data") or {}
    counts = data.get("counts") if isinstance(data.get("counts"), dict) else data
    sizes = ", ".join(f"{k} {counts[k]}" for k in ("train", "val", "test") if isinstance(counts.get(k), int))
    budget = [f"{tr['epochs_run']} of {tr['epochs_planned']} epochs" if tr.get("epochs_run") is not None else None,
              f"{tr['steps']} steps" if tr.get("steps") is not None else None,
              f"{tr['training_time_s']} s" if tr.get("training_time_s") is not None else None]
    where = (tr.get("hardware") or {}).get("device_name") or (tr.get("hardware") or {}).get("device")
    lines += ["## Training", "",
              f"Data: {data.get('source') or data.get('format') or 'n/a'}" + (f" ({sizes})" if sizes else "") + ".",
              "Budget: " + (", ".join(b for b in budget if b) or "n/a") + (f" on {where}" if where else "") + ".", ""]
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


def write_run_card(run_dir: str | Path, summary: dict | None = None) -> list[Path]:
    """model_card.json/.md of the run folder from what the run wrote; returns the paths."""
    run_dir = Path(run_dir)
    summary = summary if summary is not None else (_read_json(run_dir / "summary.json") or {})
    conf = read_confusion_csv(run_dir / "confusion.csv")
    card = build_card(summary, *(conf if conf else (None, None)), calibration=_read_json(run_dir / "calibration.json"),
                      corruptions=_read_json(run_dir / "corruptions.json"), name=run_dir.name)
    return write_card(run_dir, card)
