"""Tables, figures and the report of a study folder; also side-by-side comparison of runs.

Per factor: ``tables/<factor>.csv`` and ``.md`` (one row per value, mean ± sample std over
seeds), ``figures/<factor>.png`` (validation accuracy and loss per epoch, one curve per
value, the band spans the seeds), then ``report.md`` and ``report.html`` embedding them.
Train/val columns are the last epoch, as the reference reported them; best val and test
come from the checkpoint chosen on validation accuracy.
"""

from __future__ import annotations

import csv
import html
import io
import json
import statistics
from pathlib import Path
from typing import Any

from cifarlab.studies.study import DIVERGED, PlannedRun, StudySpec, cell_value_key, load_spec, plan

# column -> (header, how it is read from a run)
METRICS = {
    "train_acc": "train acc", "val_acc": "val acc", "train_loss": "train loss", "val_loss": "val loss",
    "best_val_acc": "best val acc", "test_acc": "test acc", "test_loss": "test loss", "time_s": "time (s)",
}


# ---------------------------------------------------------------- reading runs
def run_record(run_dir: Path) -> dict | None:
    """Final numbers and per-epoch history of a finished run; None while it is not finished."""
    from cifarlab.engine.runs import read_summary
    summary = read_summary(run_dir)
    if summary is None:
        return None
    history = read_history(run_dir)
    last = history[-1] if history else {}
    test = summary.get("test") or {}
    values = {"train_acc": last.get("train_acc"), "val_acc": last.get("val_acc"),
              "train_loss": last.get("train_loss"), "val_loss": last.get("val_loss"),
              "best_val_acc": (summary.get("val_best") or {}).get("val_acc"),
              "test_acc": test.get("top1"), "test_loss": test.get("loss"),
              "time_s": summary.get("training_time_s")}
    return {"values": values, "history": history, "summary": summary}


def read_history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None


# ---------------------------------------------------------------- tables
def factor_rows(out: Path, spec: StudySpec, runs: list[PlannedRun], records: dict[str, dict],
                factor: str) -> list[dict]:
    """One row per value of ``factor`` (grid: per combination): finished and diverged seeds, mean, std."""
    rows = []
    for value in _cells(spec, factor):
        serving = [r for r in runs if _serves(r, factor, value)]
        done = [records[r.name] for r in serving if records.get(r.name)]
        diverged = sum(1 for r in serving if (out / "runs" / r.name / DIVERGED).exists())
        row: dict[str, Any] = {"value": value, "n": len(done), "diverged": diverged}
        for key in METRICS:
            row[f"{key}_mean"], row[f"{key}_std"] = _mean_std([d["values"][key] for d in done])
        rows.append(row)
    return rows


def _cells(spec: StudySpec, factor: str) -> list:
    if factor == "grid":
        return sorted({c[1] for r in plan(spec) for c in r.cells}, key=plan_order(spec))
    return next(v for f, v in spec.factors if f == factor)


def plan_order(spec: StudySpec):
    order = {c[1]: i for i, c in enumerate(c for r in plan(spec) for c in r.cells)}
    return lambda v: order.get(v, 0)


def _cell_set(run: PlannedRun) -> set:
    return {(f, _hashable(v)) for f, v in run.cells}


def _serves(run: PlannedRun, factor: str, value: Any) -> bool:
    return (factor, _hashable(value)) in _cell_set(run)


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _value_text(value: Any) -> str:
    if isinstance(value, tuple):
        return " / ".join(cell_value_key(v) for v in value)
    return cell_value_key(value)


def rows_to_csv(names: list[str], rows: list[dict]) -> str:
    """One column per factor (several for a grid), then n, diverged and each metric's mean and std."""
    buf = io.StringIO()
    stats = [f"{k}_{s}" for k in METRICS for s in ("mean", "std")]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*names, "n", "diverged", *stats])
    for r in rows:
        values = r["value"] if isinstance(r["value"], tuple) else (r["value"],)
        writer.writerow([*map(cell_value_key, values), r["n"], r["diverged"]] + [_num(r[c]) for c in stats])
    return buf.getvalue()


def _num(x: float | None) -> str:
    return "" if x is None else repr(round(x, 6))


def _pm(mean: float | None, std: float | None, digits: int = 4) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def table_cells(names: list[str], rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = [" / ".join(names), "seeds"] + list(METRICS.values())
    body = [[_value_text(r["value"]), str(r["n"]) + (f" (+{r['diverged']} diverged)" if r["diverged"] else "")]
            + [_pm(r[f"{k}_mean"], r[f"{k}_std"], 1 if k == "time_s" else 4) for k in METRICS] for r in rows]
    return head, body


def reference_cells(factor: str, tables: dict) -> tuple[list[str], list[list[str]]] | None:
    from cifarlab.studies.presets import REFERENCE_COLUMNS
    table = tables.get(factor)
    if not table:
        return None
    head = [factor] + [METRICS[c] for c in REFERENCE_COLUMNS]
    body = [[cell_value_key(v)] + [f"{x:.4f}" if i < 4 else f"{x:.0f}" for i, x in enumerate(nums)]
            for v, nums in table.items()]
    return head, body


# ---------------------------------------------------------------- figures
def _pyplot():
    from cifarlab.engine import plots
    return plots.pyplot()  # raises the one-line "pip install 'cifarlab[plots]'" error


def factor_figure(spec: StudySpec, runs: list[PlannedRun], factor: str, path: Path) -> bool:
    """Validation accuracy and loss per epoch, one curve (mean over seeds) per value."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for value in _cells(spec, factor):
        histories = [read_history(path.parent.parent / "runs" / r.name) for r in runs
                     if _serves(r, factor, value)]
        histories = [h for h in histories if h]
        if histories:
            drawn = True
            for ax, metric in zip(axes, ("acc", "loss")):
                _curve(ax, histories, metric, f"{factor}={_value_text(value)}")
    _finish_axes(axes, f" by {factor}")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return drawn


def _finish_axes(axes, suffix: str) -> None:
    from matplotlib.ticker import MaxNLocator
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_title(f"validation {metric}{suffix}")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)


def _curve(ax, histories: list[list[dict]], metric: str, label: str) -> None:
    """Mean over seeds per epoch; the band spans min..max when there are several seeds."""
    key = f"val_{metric}" if any(f"val_{metric}" in h[0] for h in histories) else f"train_{metric}"
    length = max(len(h) for h in histories)
    epochs, mean, low, high = [], [], [], []
    for e in range(length):
        xs = [h[e][key] for h in histories if e < len(h) and key in h[e]]
        if xs:
            epochs.append(e + 1)
            mean.append(statistics.fmean(xs))
            low.append(min(xs))
            high.append(max(xs))
    (line,) = ax.plot(epochs, mean, marker="o", markersize=3,
                      label=label if key.startswith("val") else f"{label} (train: no val split)")
    if len(histories) > 1:
        ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15)


def _save(fig, path: Path) -> None:
    from cifarlab.engine.plots import save_png
    save_png(fig, path, dpi=100)


# ---------------------------------------------------------------- the report
def write_report(out: str | Path) -> Path:
    """tables/, figures/ (when matplotlib is installed), report.md and report.html; returns report.md."""
    from cifarlab.engine import plots
    out = Path(out)
    spec = load_spec(out)
    runs = plan(spec)
    records = {r.name: rec for r in runs if (rec := run_record(out / "runs" / r.name))}
    blocks = _header_blocks(spec, runs, records)
    for factor in (["grid"] if spec.grid else [f for f, _ in spec.factors]):
        blocks += _factor_blocks(out, spec, runs, records, factor, plots.available())
    _write_text(out / "report.md", _render_md(blocks))
    _write_text(out / "report.html", _render_html(blocks, spec.name))
    return out / "report.md"


def _factor_blocks(out: Path, spec, runs, records, factor: str, can_plot: bool) -> list:
    rows = factor_rows(out, spec, runs, records, factor)
    names = [f for f, _ in spec.factors] if factor == "grid" else [factor]
    _write_text(out / "tables" / f"{factor}.csv", rows_to_csv(names, rows))
    head, body = table_cells(names, rows)
    _write_text(out / "tables" / f"{factor}.md", _md_table(head, body))
    title = "grid (" + " / ".join(names) + ")" if factor == "grid" else factor
    blocks: list = [("h2", title), ("table", head, body),
                    ("p", f"CSV: [tables/{factor}.csv](tables/{factor}.csv)")]
    if can_plot and factor_figure(spec, runs, factor, out / "figures" / f"{factor}.png"):
        blocks.append(("img", f"figures/{factor}.png", f"validation curves by {factor}"))
    elif not can_plot:
        blocks.append(("p", "figures skipped: matplotlib is not installed (pip install 'cifarlab[plots]')"))
    if spec.preset:
        from cifarlab.studies.presets import get_preset
        preset = get_preset(spec.preset)
        ref = reference_cells(factor, preset["tables"])
        if ref:
            blocks += [("h3", preset["label"]), ("table", *ref)]
    return blocks


def _header_blocks(spec: StudySpec, runs: list[PlannedRun], records: dict) -> list:
    from cifarlab.engine import TrainConfig
    defaults = TrainConfig().to_dict()
    base = ", ".join(f"{k}={v}" for k, v in spec.base.items()
                     if defaults.get(k) != v and k not in ("runs_dir", "name", "progress"))
    blocks: list = [("h1", f"Study {spec.name}")]
    if spec.preset:
        from cifarlab.studies.presets import get_preset
        preset = TrainConfig.from_dict(get_preset(spec.preset)["base"]).to_dict()
        quiet = ("runs_dir", "name", "progress", "plots", "tensorboard", "data", "device")
        changed = ", ".join(f"{k}={v}" for k, v in spec.base.items() if preset.get(k) != v and k not in quiet)
        if changed:
            blocks.append(("p", f"Changed from the {spec.preset} preset: {changed}."))
    if spec.reduced:
        shrink = ", ".join(f"{k}={v}" for k, v in spec.reduced.items())
        blocks.append(("p", f"**REDUCED study** ({shrink}): numbers are not comparable with full-length runs."))
    cells = sum(len(v) for _, v in spec.factors) if not spec.grid else len(_cells(spec, "grid"))
    blocks += [
        ("p", f"Design: {'full grid' if spec.grid else 'one factor at a time'}; seeds {spec.seeds}; "
              f"{len(runs)} runs ({len(records)} finished) for {cells} table rows x {len(spec.seeds)} seeds"
              + ("" if spec.grid else ", runs equal to the base are trained once and shared") + "."),
        ("p", f"Base (differences from the defaults): {base or 'defaults'}."),
        ("p", "Columns: train/val = last epoch (as the reference reported); best val acc and test = "
              "the checkpoint with the best validation accuracy; time = training seconds; mean ± "
              "sample std over seeds. The validation split is carved from the training set (the "
              "same images for every run: the base seed chooses them); the test set is evaluated "
              "once per run and never used for selection."),
    ]
    env = next((rec["summary"].get("hardware") for rec in records.values()), None)
    if env:
        blocks.append(("p", "Hardware: " + ", ".join(f"{k} {v}" for k, v in env.items())))
    return blocks


# ---------------------------------------------------------------- rendering
def _md_table(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body]) + "\n"


def _render_md(blocks: list) -> str:
    parts = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + rest[0])
        elif kind == "p":
            parts.append(rest[0])
        elif kind == "table":
            parts.append(_md_table(*rest).rstrip())
        elif kind == "img":
            parts.append(f"![{rest[1]}]({rest[0]})")
    return "\n\n".join(parts) + "\n"


def _render_html(blocks: list, title: str) -> str:
    esc = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}</style>"]
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{esc(rest[0])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{esc(rest[0]).replace('**', '')}</p>")
        elif kind == "table":
            head, body = rest
            rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in body)
            parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + f"</tr>{rows}</table>")
        elif kind == "img":
            parts.append(f"<img src='{esc(rest[0])}' alt='{esc(rest[1])}'>")
    return "\n".join(parts) + "\n"


def _write_text(path: Path, text: str) -> None:
    from cifarlab.atomic import atomic_write_text
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


# ---------------------------------------------------------------- comparing runs
def config_diff(configs: list[dict]) -> tuple[list[str], set[str]]:
    """All keys (in first-seen order) and the set whose values differ between the configs."""
    keys: list[str] = []
    for c in configs:
        keys += [k for k in c if k not in keys]
    differing = {k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1}
    return keys, differing


def compare_figure(run_dirs: list[Path], labels: list[str], path: str | Path) -> Path:
    """Accuracy and loss per epoch of several runs overlaid (validation, or train without val)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run_dir, label in zip(run_dirs, labels):
        history = read_history(run_dir)
        if history:
            for ax, metric in zip(axes, ("acc", "loss")):
                _curve(ax, [history], metric, label)
    _finish_axes(axes, "")
    fig.tight_layout()
    _save(fig, Path(path))
    plt.close(fig)
    return Path(path)
