"""Tables, figures and the report of a study folder; also side-by-side comparison of runs.

Per factor: ``tables/<factor>.csv`` and ``.md`` (one row per value, mean ± sample std over
seeds, the base row marked), ``figures/<factor>-value.png`` (test and validation accuracy
against the value, error bars over seeds), ``figures/<factor>.png`` (validation accuracy and
loss per epoch, one curve per value, the band spans the seeds), then ``report.md`` and
``report.html`` (the markdown rendered by markdown-it-py) embedding them.
Train/val columns are the last epoch, as the reference reported them; best val and test
come from the checkpoint chosen on validation accuracy.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Any

from cifarlab.studies.reading import _mean_std, read_history, run_record, run_states
from cifarlab.studies.render import (_finish, _md_table, _pm, _pyplot, _save, _setting_text, _write_text, render_html,
                                     render_md)
from cifarlab.studies.study import DIVERGED, PlannedRun, StudySpec, cell_value_key, load_spec, plan

# column -> (header, how it is read from a run)
METRICS = {
    "train_acc": "train acc", "val_acc": "val acc", "train_loss": "train loss", "val_loss": "val loss",
    "best_val_acc": "best val acc", "test_acc": "test acc", "test_loss": "test loss", "time_s": "time (s)",
}


# ---------------------------------------------------------------- reading runs


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


# ---------------------------------------------------------------- the report
def write_report(out: str | Path) -> Path:
    """tables/, figures/ (when matplotlib is installed), report.md and report.html; returns report.md.

    Works on a study still running or stopped part-way: finished runs fill the tables, the
    others are listed as running or not started. Writes only at the top of ``out`` (tables/,
    figures/, report.*), never in a run folder. A comparison (``kind: compare``) gets its own
    report (``studies.compare_report``)."""
    from cifarlab.training import plots
    out = Path(out)
    spec = load_spec(out)
    if spec.kind == "compare":
        from cifarlab.studies.compare_report import write_compare_report
        return write_compare_report(out)
    runs = plan(spec)
    records = {r.name: rec for r in runs if (rec := run_record(out / "runs" / r.name))}
    blocks = _header_blocks(out, spec, runs, records)
    for factor in (["grid"] if spec.grid else [f for f, _ in spec.factors]):
        blocks += _factor_blocks(out, spec, runs, records, factor, plots.available())
    blocks += _base_blocks(spec) + _status_blocks(out, runs, records)
    md = render_md(blocks)
    _write_text(out / "report.md", md)
    _write_text(out / "report.html", render_html(md, f"Study {spec.name}"))
    return out / "report.md"


def base_value(spec: StudySpec, factor: str) -> Any:
    """The base's value of ``factor`` (what the unmarked runs train with)."""
    if factor == "act":
        return (spec.base.get("model_kwargs") or {}).get("act")
    return spec.base.get(factor)


def _is_base(spec: StudySpec, factor: str, value: Any) -> bool:
    if factor == "grid":
        return all(_is_base(spec, f, v) for (f, _), v in zip(spec.factors, value))
    return cell_value_key(value) == cell_value_key(base_value(spec, factor))


def _factor_blocks(out: Path, spec, runs, records, factor: str, can_plot: bool) -> list:
    rows = factor_rows(out, spec, runs, records, factor)
    base_flags = [_is_base(spec, factor, r["value"]) for r in rows]
    names = [f for f, _ in spec.factors] if factor == "grid" else [factor]
    _write_text(out / "tables" / f"{factor}.csv", _with_base_column(rows_to_csv(names, rows), base_flags))
    head, body = table_cells(names, rows)
    body = [[(f"**{row[0]}** (base)" if flag else row[0]), *row[1:]] for row, flag in zip(body, base_flags)]
    _write_text(out / "tables" / f"{factor}.md", _md_table(head, body))
    title = "grid (" + " / ".join(names) + ")" if factor == "grid" else factor
    blocks: list = [("h2", title), ("table", head, body),
                    ("p", f"The base row is in bold. CSV: [tables/{factor}.csv](tables/{factor}.csv)")]
    preset = _preset_tables(spec)
    if can_plot:
        if factor != "grid" and value_figure(spec, rows, factor, out / "figures" / f"{factor}-value.png",
                                             preset.get(factor) if preset else None):
            blocks.append(("img", f"figures/{factor}-value.png", f"test accuracy by {factor}"))
        if factor_figure(spec, runs, factor, out / "figures" / f"{factor}.png"):
            blocks.append(("img", f"figures/{factor}.png", f"validation curves by {factor}"))
    else:
        blocks.append(("p", "figures skipped: matplotlib is not installed (pip install 'cifarlab[plots]')"))
    if spec.preset and preset:
        from cifarlab.studies.presets import get_preset
        ref = reference_cells(factor, preset)
        side = side_by_side(factor, rows, preset.get(factor) or {})
        if side:
            blocks += [("h3", "ours beside the write-up"), ("table", *side),
                       ("p", "The write-up validated on the test set and reported its last epoch; ours: the last "
                             "epoch on our validation split, and the test set once at the end.")]
        if ref:
            blocks += [("h3", get_preset(spec.preset)["label"]), ("table", *ref)]
    return blocks


def side_by_side(factor: str, rows: list[dict], table: dict) -> tuple[list[str], list[list[str]]] | None:
    """Per value: our test and validation accuracy, train accuracy and seconds beside the
    write-up's (its "val" is the test set)."""
    if not table:
        return None
    head = [factor, "test acc (ours)", "val acc (ours)", "val acc (write-up)", "train acc (ours)",
            "train acc (write-up)", "time s (ours)", "time s (write-up)"]
    body = []
    for r in rows:
        ref = table.get(r["value"])
        body.append([_value_text(r["value"]), _pm(r["test_acc_mean"], r["test_acc_std"]),
                     _pm(r["val_acc_mean"], r["val_acc_std"]), f"{ref[1]:.4f}" if ref else "—",
                     _pm(r["train_acc_mean"], r["train_acc_std"]), f"{ref[0]:.4f}" if ref else "—",
                     _pm(r["time_s_mean"], r["time_s_std"], 0), f"{ref[4]:.0f}" if ref else "—"])
    return head, body


def _preset_tables(spec: StudySpec) -> dict | None:
    if not spec.preset or spec.kind != "study":
        return None
    from cifarlab.studies.presets import get_preset
    return get_preset(spec.preset)["tables"]


def _with_base_column(text: str, flags: list[bool]) -> str:
    lines = text.splitlines()
    out = [lines[0] + ",base"] + [line + ("," + ("yes" if f else "no")) for line, f in zip(lines[1:], flags)]
    return "\n".join(out) + "\n"


def _header_blocks(out: Path, spec: StudySpec, runs: list[PlannedRun], records: dict) -> list:
    blocks: list = [("h1", f"Study {spec.name}")]
    if spec.preset:
        from cifarlab.training import TrainConfig
        from cifarlab.studies.presets import get_preset
        preset = TrainConfig.from_dict(get_preset(spec.preset)["base"]).to_dict()
        quiet = ("runs_dir", "name", "progress", "plots", "tensorboard", "data", "device")
        changed = ", ".join(f"{k}={v}" for k, v in spec.base.items() if preset.get(k) != v and k not in quiet)
        if changed:
            blocks.append(("p", f"Changed from the {spec.preset} preset: {changed}."))
    if spec.kind == "study" and spec.value_settings:
        comes = "; ".join(f"{f}={v}: " + ", ".join(f"{k}={x}" for k, x in kv.items())
                          for f, vals in spec.value_settings.items() for v, kv in vals.items())
        blocks.append(("p", f"Settings that come with a value (and only with it): {comes}."))
    if spec.reduced:
        shrink = ", ".join(f"{k}={v}" for k, v in spec.reduced.items())
        blocks.append(("p", f"**REDUCED study** ({shrink}): numbers are not comparable with full-length runs."))
    cells = sum(len(v) for _, v in spec.factors) if not spec.grid else len(_cells(spec, "grid"))
    done = len(records) + sum(1 for r in runs if (out / "runs" / r.name / DIVERGED).exists())
    blocks += [
        ("p", f"Design: {'full grid' if spec.grid else 'one factor at a time'}; seeds {spec.seeds}; "
              f"{len(runs)} runs ({done} finished) for {cells} table rows x {len(spec.seeds)} seeds"
              + ("" if spec.grid else ", runs equal to the base are trained once and shared") + "."),
    ]
    if done < len(runs):
        blocks.append(("p", f"**Not finished yet**: {len(runs) - done} of {len(runs)} runs are pending (listed "
                            f"under Runs); the tables and figures show the finished ones."))
    blocks += [
        ("p", "Reproduce (rerunning it continues the study where it stopped):"),
        ("code", study_command(spec, out)),
        ("p", "Columns: train/val = last epoch (as the reference reported); best val acc and test = "
              "the checkpoint with the best validation accuracy; time = training seconds by the wall "
              "clock (a run that shared the machine or was paused counts that time too); mean ± "
              "sample std over seeds. The validation split is carved from the training set (the "
              "same images for every run: the base seed chooses them); the test set is evaluated "
              "once per run and never used for selection. The complete base settings are listed "
              "at the end."),
    ]
    blocks += _hardware_blocks(records)
    return blocks


def _hardware_blocks(records: dict) -> list:
    """The machine of the runs; where they ran on more than one kind (a study resumed on
    another machine), each kind with its runs: a CPU with native bf16 trains in bf16 autocast,
    one without in float32, so a factor's rows may differ by their machine too."""
    kinds: dict[str, list[str]] = {}
    for name, rec in records.items():
        env = rec["summary"].get("hardware")
        if env:
            kinds.setdefault(", ".join(f"{k} {v}" for k, v in env.items()), []).append(str(name))
    if len(kinds) <= 1:
        return [("p", f"Hardware: {text}") for text in kinds]
    lines = [f"- {text}: {len(names)} run{'s' * (len(names) != 1)} ({', '.join(sorted(names))})"
             for text, names in kinds.items()]
    return [("p", f"Hardware: the runs ran on {len(kinds)} kinds of machine (a study continued on "
                  f"another machine; each run's own is in its summary.json):\n\n" + "\n".join(lines))]


def _base_blocks(spec: StudySpec) -> list:
    """Every setting of the base, its default beside where it differs."""
    from cifarlab.training import TrainConfig
    defaults = TrainConfig().to_dict()
    skip = ("runs_dir", "name", "progress")
    body = [[k, f"**{_setting_text(v)}**" if defaults.get(k) != v else _setting_text(v),
             _setting_text(defaults.get(k)) if defaults.get(k) != v else ""]
            for k, v in spec.base.items() if k not in skip]
    return [("h2", "Base settings"),
            ("p", "Every run starts from these; a factor's rows change only that setting. In bold where they "
                  "differ from cifarlab's defaults."),
            ("table", ["setting", "base", "default"], body)]


def _status_blocks(out: Path, runs: list[PlannedRun], records: dict) -> list:
    states = run_states(out, runs, records)
    body = [[r.name, str(r.seed), ", ".join(f"{k}={_setting_text(v)}" for k, v in r.overrides.items()) or "base",
             states[r.name]] for r in runs]
    return [("h2", "Runs"), ("table", ["run", "seed", "differs from the base in", "state"], body)]


def study_command(spec: StudySpec, out: str | Path) -> str:
    """A ``cifarlab study`` command that builds this same study (checked by building it), else
    the command the study was started with (command.txt), else the closest reconstruction."""
    guess, same = _rebuild_command(spec, out)
    if same:
        return guess
    saved = Path(out) / "command.txt"
    if saved.exists():
        return saved.read_text().strip()
    return guess + "  # reconstructed: check it before use"


def _rebuild_command(spec: StudySpec, out: str | Path) -> tuple[str, bool]:
    import shlex

    from cifarlab.errors import CifarlabError
    from cifarlab.studies.study import build_spec
    kw = {"preset": spec.preset, "seeds": len(spec.seeds), "grid": spec.grid, "name": spec.name,
          **{k: v for k, v in spec.reduced.items() if k in ("train_subset", "test_subset", "epoch_scale")}}
    try:
        ref_factors = build_spec(**kw).factors if spec.preset else []
    except CifarlabError:
        ref_factors = []
    ref = {f: v for f, v in ref_factors}
    order = [f for f, _ in ref_factors]
    kept, vary, last = [], [], -1
    for f, values in spec.factors:
        if not vary and f in ref and ref[f] == list(values) and order.index(f) > last:
            kept.append(f)
            last = order.index(f)
        else:
            vary.append(f"{f}=" + ",".join(cell_value_key(v) for v in values))
    names = [f for f, _ in spec.factors]
    only = names if spec.preset and set(names) != set(order) else []
    sets: dict = {}
    try:  # the --set the plain build shows missing
        built = build_spec(vary=vary, only=only, **kw)
        sets = {k: _setting_cli(v) for k, v in spec.base.items()
                if k not in ("runs_dir", "name", "progress") and built.base.get(k) != v}
    except CifarlabError:
        pass
    try:
        same = build_spec(vary=vary, only=only, sets=sets, **kw).identity() == spec.identity()
        unnamed = {k: v for k, v in kw.items() if k != "name"}
        default_name = build_spec(vary=vary, only=only, sets=sets, **unnamed).name == spec.name
    except CifarlabError:
        same = default_name = False
    args = ["cifarlab", "study"]
    if spec.preset:
        args += ["--preset", spec.preset]
    if only:
        args += ["--only", ",".join(only)]
    for v in vary:
        args += ["--vary", v]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    if len(spec.seeds) > 1:
        args += ["--seeds", str(len(spec.seeds))]
    if spec.grid:
        args.append("--grid")
    for k in ("train_subset", "test_subset", "epoch_scale"):
        if k in spec.reduced:
            args += [f"--{k.replace('_', '-')}", f"{spec.reduced[k]:g}" if isinstance(spec.reduced[k], float)
                     else str(spec.reduced[k])]
    args += ([] if default_name else ["--name", spec.name]) + ["--out", str(out)]
    return shlex.join(args), same


def _setting_cli(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


# ---------------------------------------------------------------- accuracy by value
def value_figure(spec: StudySpec, rows: list[dict], factor: str, path: Path, reference: dict | None = None) -> bool:
    """Test and best-validation accuracy against the factor's value, mean ± std over seeds
    (error bars), the base value marked; the reference's figures beside ours where given.
    Numbers on a log axis where they span a factor of 10 or more (lr, batch size)."""
    plt = _pyplot()
    values = [r["value"] for r in rows]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = list(values) if numeric else list(range(len(values)))
    fig, ax = plt.subplots(figsize=(6.4, 4))
    drawn = False
    series = (("test_acc", "test (ours)", "o-" if numeric else "o", -0.06),
              ("best_val_acc", "best validation (ours)", "s--" if numeric else "s", 0.06))
    for key, label, fmt, shift in series:  # categories: points side by side, no line between them
        pts = [(x if numeric else x + shift, r[f"{key}_mean"], r[f"{key}_std"] or 0.0)
               for x, r in zip(xs, rows) if r[f"{key}_mean"] is not None]
        if pts:
            drawn = True
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], fmt=fmt, capsize=4,
                        label=label + (" mean ± std" if max(r["n"] for r in rows) > 1 else ""))
    if not drawn:
        ax.text(0.5, 0.5, "no run finished yet", transform=ax.transAxes, ha="center", color="grey")
    if reference:
        ref = [(x, reference[v][1]) for x, v in zip(xs, values) if v in reference]
        if ref:
            drawn = True
            ax.plot([p[0] for p in ref], [p[1] for p in ref], "D", mfc="none", color="grey",
                    label="write-up (its validation = test set)")
    base = [x for x, r in zip(xs, rows) if _is_base(spec, factor, r["value"])]
    for x in base:
        ax.axvline(x, color="grey", lw=0.8, ls=":")
        ax.annotate("base", (x, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8, color="grey")
    if numeric and drawn and min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xlim(min(xs) / 1.3, max(xs) * 1.3)  # every value in view, drawn or not (a diverged one)
        ax.set_xscale("log", base=2 if all(isinstance(v, int) for v in values) else 10)
    if numeric:
        ax.set_xticks(xs)
        ax.set_xticklabels([cell_value_key(v) for v in values])
        ax.minorticks_off()
    else:
        ax.set_xticks(xs)
        ax.set_xticklabels([_value_text(v) for v in values])
        ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_xlabel(factor)
    ax.set_ylim(0, 1.03)
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"accuracy by {factor}")
    _finish(fig, [ax], path)
    return drawn


# ---------------------------------------------------------------- rendering


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
