"""The report of a comparison folder (``cifarlab compare``): what the write-up shows, and more.

``tables/compare.csv`` and ``.md`` (one row per model: parameters, MACs, epochs done, test
top-1 mean ± std over seeds, the write-up's figure, seconds, and how far to trust it: the
ECE before and after temperature scaling, the mean corruption accuracy and its relative
drop), ``figures/accuracy.png`` (ours beside the write-up's, error bars over seeds),
``figures/curves.png`` (validation accuracy and loss of every model against wall-clock
seconds, overlaid), ``figures/trust.png`` (clean against corrupted accuracy, ECE raw and
scaled), the settings each model trained with, the runs' states and the command that
reproduces it; ``report.md`` and ``report.html``. A folder still running gets the same
report of what has finished. Calibration and robustness are read from each run's
``trust.json`` (``studies.compare_trust``, measured after training); a run without one is
"not measured", never an error.
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from cifarlab.studies.compare import (CPU_MODEL_SETTINGS, WRITEUP_MODELS, compare_settings_name, epochs_done,
                                      reproduce_command)
from cifarlab.studies.compare_trust import read_trust
from cifarlab.studies.reading import _mean_std, read_history, run_record, run_states
from cifarlab.studies.render import _finish, _md_table, _pm, _pyplot, _save, _setting_text, _write_text, render_html, render_md
from cifarlab.studies.study import TOO_SLOW, StudySpec, load_spec, plan

WRITEUP = "five-classic-cnns (Keras, 10 epochs, batch 32, one seed, test set used as validation)"


def _facts(models: list[str]) -> dict[str, dict]:
    """Parameters, MACs and the write-up's accuracy of each model (the zoo's stored facts)."""
    try:
        from cifarlab.zoo import facts
        known = {f["name"]: f for f in facts()}
    except ImportError:  # a checkout without the zoo's facts: measure them
        known = {}
    out = {}
    for m in models:
        f = known.get(m)
        if f is None:
            from cifarlab.models import count_params, create_model, model_info
            from cifarlab.models.inspect import macs
            net = create_model(m)
            p = count_params(net)
            f = {"params": p.trainable + p.non_trainable, "macs": macs(net),
                 "ref_accuracy": model_info(m).ref_accuracy, "reproduces": model_info(m).reproduces}
        out[m] = f
    return out


def model_rows(out: Path, spec: StudySpec) -> list[dict]:
    """One row per model: its finished seeds' numbers, mean and std."""
    models = spec.factors[0][1]
    runs = plan(spec)
    facts = _facts(models)
    rows = []
    for m in models:
        mine = [r for r in runs if r.config["model"] == m]
        recs = [(r, rec) for r in mine if (rec := run_record(out / "runs" / r.name))]
        top1 = [rec["summary"]["test"].get("top1") for _, rec in recs if rec["summary"].get("test")]
        epochs = [epochs_done(rec["summary"], rec["history"]) for _, rec in recs]
        wall = [rec["summary"].get("wall_time_s") or rec["summary"].get("training_time_s") for _, rec in recs]
        ref = facts[m].get("ref_accuracy")
        row = {"model": m, "params": facts[m].get("params"), "macs": facts[m].get("macs"), "n": len(recs),
               "planned": len(mine), "writeup": ref, "runs": [r.name for r in mine],
               "too_slow": not recs and any((out / "runs" / r.name / TOO_SLOW).exists() for r in mine)}
        row["top1_mean"], row["top1_std"] = _mean_std(top1)
        row["epochs_mean"], _ = _mean_std(epochs)
        row["seconds_mean"], row["seconds_std"] = _mean_std(wall)
        row["best_val_mean"], _ = _mean_std([(rec["summary"].get("val_best") or {}).get("val_acc") for _, rec in recs])
        row.update(trust_summary([t for r, _ in recs if (t := read_trust(out / "runs" / r.name))]))
        rows.append(row)
    return rows


# (column, where in trust.json) of the numbers averaged over a model's measured seeds
_TRUST_FIELDS = {
    "ece_raw": ("calibration", "before", "ece"), "ece_scaled": ("calibration", "after", "ece"),
    "mce_raw": ("calibration", "before", "mce"), "mce_scaled": ("calibration", "after", "mce"),
    "nll_raw": ("calibration", "before", "nll"), "nll_scaled": ("calibration", "after", "nll"),
    "temperature": ("calibration", "temperature"),
    "clean_sub": ("robustness", "clean_accuracy"), "corrupt": ("robustness", "mean_corruption_accuracy"),
    "drop": ("robustness", "relative_drop"), "trust_seconds": ("seconds", "total"),
}


def _dig(d, path):
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d if isinstance(d, (int, float)) and not isinstance(d, bool) else None


def trust_summary(trusts: list[dict]) -> dict:
    """A model's trust numbers over its measured seeds: ``<field>_mean``/``_std`` for each
    of ``_TRUST_FIELDS``, ``trust_n``, what T was fitted on, the images, the device and each
    corruption kind's accuracy (mean over severities, then over seeds)."""
    out = {"trust_n": len(trusts)}
    for name, path in _TRUST_FIELDS.items():
        out[f"{name}_mean"], out[f"{name}_std"] = _mean_std([_dig(t, path) for t in trusts])
    out["fitted_on"] = sorted({str(t["calibration"].get("fitted_on")) for t in trusts})
    out["bins"] = [{k: (t["calibration"].get(k) or {}).get("bins") for k in ("before", "after")} for t in trusts]
    out["trust_images"] = sorted({t["robustness"].get("n") for t in trusts})
    out["trust_test_n"] = sorted({t["calibration"]["before"].get("n") for t in trusts})
    out["trust_device"] = sorted({str(t.get("device")) for t in trusts})
    kinds = list(dict.fromkeys(k for t in trusts for k in t["robustness"].get("kinds", [])))
    out["per_kind"] = {k: statistics.fmean(statistics.fmean(t["robustness"]["accuracy"][k]) for t in trusts
                                           if k in t["robustness"].get("accuracy", {})) for k in kinds}
    return out


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = ["model", "params", "macs", "n", "epochs_mean", "top1_mean", "top1_std", "best_val_mean", "writeup",
            "seconds_mean", "seconds_std", "trust_n"]
    keys += [f"{name}_{stat}" for name in _TRUST_FIELDS for stat in ("mean", "std")]
    w.writerow(keys)
    for r in rows:
        w.writerow(["" if r[k] is None else (round(r[k], 6) if isinstance(r[k], float) else r[k]) for k in keys])
    return buf.getvalue()


NB = "\u00a0"  # a space a table cell does not break at: a "mean ± std" cell stays on one line


def _pct(mean, std, digits: int = 2) -> str:
    if mean is None:
        return "—"
    return f"{100 * mean:.{digits}f}" + (f"{NB}±{NB}{100 * std:.{digits}f}" if std is not None else "") + "%"


def _measured(r: dict, cell: str) -> str:
    """A trust cell: "not measured" where a finished run has no trust.json, the count where
    only some seeds have one."""
    if not r["n"]:
        return "—"
    if not r["trust_n"]:
        return f"not{NB}measured"
    return cell + (f" ({r['trust_n']} of {r['n']} seeds)" if r["trust_n"] < r["n"] else "")


def _trust_cells(r: dict) -> list[str]:
    ece = _pct(r["ece_raw_mean"], r["ece_raw_std"]) + " → " + _pct(r["ece_scaled_mean"], r["ece_scaled_std"])
    return [_measured(r, ece), _measured(r, _pct(r["corrupt_mean"], r["corrupt_std"], 1)),
            _measured(r, _pct(r["drop_mean"], r["drop_std"], 1))]


def _table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["model", "parameters", "MACs", "epochs done", "test top-1 (ours)", "write-up", "difference",
            "seconds", "seeds", "ECE raw → scaled", "corrupted accuracy", "relative drop"]
    body = []
    for r in rows:
        diff = "—"
        if r["top1_mean"] is not None and r["writeup"]:
            diff = f"{100 * (r['top1_mean'] - r['writeup']):+.2f} points"
        body.append([r["model"], f"{r['params']:,}" if r["params"] else "—",
                     f"{r['macs'] / 1e6:,.1f}{NB}M" if r["macs"] else "—",
                     ("does not fit" if r["too_slow"] else "—") if r["epochs_mean"] is None
                     else f"{r['epochs_mean']:.1f}",
                     _pct(r["top1_mean"], r["top1_std"]),
                     f"≈{100 * r['writeup']:.0f}%" if r["writeup"] else "—", diff,
                     _pm(r["seconds_mean"], r["seconds_std"], 0), f"{r['n']} of {r['planned']}", *_trust_cells(r)])
    return head, body


# ---------------------------------------------------------------- figures
def accuracy_figure(rows: list[dict], path: Path, label: str) -> bool:
    """Ours (mean, error bar = std over seeds) beside the write-up's figure, per model."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) + 2), 4))
    xs = range(len(rows))
    width = 0.38
    ours = [100 * (r["top1_mean"] or 0) for r in rows]
    errs = [100 * (r["top1_std"] or 0) for r in rows]
    bars = ax.bar([x - width / 2 for x in xs], ours, width, yerr=errs, capsize=4, label=f"cifarlab ({label})",
                  color="#3b75af")
    ref = [100 * (r["writeup"] or 0) for r in rows]
    ref_bars = ax.bar([x + width / 2 for x in xs], ref, width, label="the write-up", color="#bbbbbb", hatch="//",
                      edgecolor="#777777")
    for bar, r in zip(bars, rows):
        if r["top1_mean"] is not None:
            ax.annotate(f"{100 * r['top1_mean']:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
        else:
            ax.annotate("does not fit" if r["too_slow"] else "pending", (bar.get_x() + bar.get_width() / 2, 1), ha="center", fontsize=7, rotation=90,
                        va="bottom")
    for bar, r in zip(ref_bars, rows):
        if r["writeup"]:
            ax.annotate(f"≈{100 * r['writeup']:.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8, color="#555555")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["model"] for r in rows], fontsize=9)
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("test accuracy: ours beside the write-up's")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return any(r["top1_mean"] is not None for r in rows)


def curves_figure(out: Path, spec: StudySpec, rows: list[dict], path: Path) -> bool:
    """Validation accuracy and loss of each model against wall-clock seconds of training (the
    mean over seeds, epoch by epoch), overlaid; train metrics where a run had no validation."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for r in rows:
        histories = [h for h in (read_history(out / "runs" / name) for name in r["runs"]) if h]
        if not histories:
            continue
        drawn = True
        for ax, metric in zip(axes, ("acc", "loss")):
            key = f"val_{metric}" if f"val_{metric}" in histories[0][0] else f"train_{metric}"
            length = max(len(h) for h in histories)
            xs, ys = [], []
            for e in range(length):
                at = [h for h in histories if e < len(h) and key in h[e]]
                if at:
                    xs.append(statistics.fmean(sum(x.get("epoch_time", 0) for x in h[:e + 1]) for h in at))
                    ys.append(statistics.fmean(h[e][key] for h in at))
            ax.plot(xs, ys, marker="o", markersize=3, label=r["model"] + ("" if key.startswith("val") else " (train)"))
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.set_xlabel("training seconds")
        ax.set_title(f"validation {metric}")
    _finish(fig, axes, path)
    return drawn


# ---------------------------------------------------------------- the report
def write_compare_report(out: str | Path) -> Path:
    from cifarlab.training import plots
    out = Path(out)
    spec = load_spec(out)
    rows = model_rows(out, spec)
    settings = compare_settings_name(spec)
    runs = plan(spec)
    records = {r.name: rec for r in runs if (rec := run_record(out / "runs" / r.name))}
    _write_text(out / "tables" / "compare.csv", _csv(rows))
    head, body = _table(rows)
    _write_text(out / "tables" / "compare.md", _md_table(head, body))
    budget = spec.base.get("time_budget") or 0
    what = ("cifarlab's CPU settings for each model (listed below)" if settings == "cpu"
            else "the write-up's own settings for every model (Adam 1e-3, batch 32, no augmentation, constant lr)")
    length = (f"a time budget of {budget:g} s each (data loading, training and the final test; the epochs "
              f"are planned to fit on the machine that runs it)" if budget else "each model's planned epochs")
    blocks: list = [("h1", f"Comparison {spec.name}"),
                    ("p", f"{len(rows)} models trained with {what}, {length}; seeds {spec.seeds}. The write-up's "
                          f"figures: {WRITEUP}.")]
    if spec.reduced:
        shrink = ", ".join(f"{k}={v}" for k, v in spec.reduced.items())
        blocks.append(("p", f"**REDUCED comparison** ({shrink}): not the models' figures."))
    done = len(records)
    refused = [r for r in runs if r.name not in records and (out / "runs" / r.name / TOO_SLOW).exists()]
    if done + len(refused) < len(runs):
        blocks.append(("p", f"**Not finished yet**: {done} of {len(runs)} runs finished; the others are listed "
                            f"under Runs."))
    if refused:  # tried and refused: the comparison is not waiting for these
        models = ", ".join(dict.fromkeys(r.config["model"] for r in refused))
        blocks.append(("p", f"{len(refused)} of {len(runs)} runs do not fit their time budget on this machine "
                            f"({models}): even their shortest run would end past it, so they were not trained."))
    blocks += [("p", "Reproduce (rerunning it continues where it stopped):"),
               ("code", reproduce_command(spec, out)),
               ("h2", "Results"), ("table", head, body),
               ("p", f"Test top-1: the checkpoint with the best validation accuracy ({spec.base.get('val')} "
                     f"training images held out for validation), tested once on the test set, which is never "
                     f"used for selection; mean ± sample std over seeds. Epochs done: a cut last epoch counts "
                     f"as its share. Seconds: the whole run, from the start of training to the end of the "
                     f"test. ECE raw → scaled, corrupted accuracy and its relative drop: measured after "
                     f"training, as told under Calibration and robustness. "
                     f"CSV: [tables/compare.csv](tables/compare.csv)")]
    if plots.available():
        if accuracy_figure(rows, out / "figures" / "accuracy.png", settings + " settings"):
            blocks.append(("img", "figures/accuracy.png", "test accuracy, ours beside the write-up's"))
        if curves_figure(out, spec, rows, out / "figures" / "curves.png"):
            blocks.append(("img", "figures/curves.png", "validation curves of every model"))
    else:
        blocks.append(("p", "figures skipped: matplotlib is not installed (pip install 'cifarlab[plots]')"))
    blocks += _trust_blocks(out, rows, plots.available())
    blocks += _settings_blocks(spec, settings)
    env = next((rec["summary"].get("hardware") for rec in records.values()), None)
    if env:
        blocks += [("h2", "Machine"), ("p", ", ".join(f"{k} {v}" for k, v in env.items()))]
    states = run_states(out, runs, records)
    blocks += [("h2", "Runs"), ("table", ["run", "model", "seed", "state", "folder"],
                                [[r.name, r.config["model"], str(r.seed), states[r.name],
                                  f"[runs/{r.name}](runs/{r.name})"] for r in runs])]
    md = render_md(blocks)
    _write_text(out / "report.md", md)
    _write_text(out / "report.html", render_html(md, f"Comparison {spec.name}"))
    return out / "report.md"


def _trust_blocks(out: Path, rows: list[dict], figures: bool) -> list:
    """How far to trust each model: the method, a table of every trust number, per-kind
    accuracy under corruption, the figure; or how to measure it where nothing is measured."""
    blocks: list = [("h2", "Calibration and robustness")]
    measured = [r for r in rows if r["trust_n"]]
    later = [r["model"] for r in rows if r["n"] and r["trust_n"] < r["n"]]
    todo = (f"`cifarlab compare --report-only --out {out}` measures each finished run once and rewrites this "
            f"report: the validation and test splits and 51 sets of 1,000 test pictures (clean and corrupted) "
            f"through the model, from seconds for a small network to an hour for a large one on a CPU; "
            f"kept in the run's folder as trust.json.")
    if not measured:
        return blocks + [("p", ("Not measured yet. " if any(r["n"] for r in rows) else "No run has finished yet. ")
                          + todo)]
    images = sorted({n for r in measured for n in r["trust_images"]})
    test_n = sorted({n for r in measured for n in r["trust_test_n"]})
    fitted = sorted({f for r in measured for f in r["fitted_on"]})
    devices = sorted({d for r in measured for d in r["trust_device"]})
    kinds = list(dict.fromkeys(k for r in measured for k in r["per_kind"]))
    where = ("the validation split the run held out of training (never the test set)" if fitted == ["val"]
             else "; ".join(fitted))
    blocks.append(("p", f"Measured after training (never inside a run's time budget) on each run's tested "
                        f"checkpoint, in float32 with one view, as the apps predict (the top-1 above used the "
                        f"runs' test-time views). **Calibration**: expected calibration error over 15 "
                        f"equal-width confidence bins (ECE), the worst bin's gap (MCE) and the negative "
                        f"log-likelihood (NLL) of the test split ({_list(test_n)} images), raw and after "
                        f"temperature scaling, with T fitted on {where}. **Robustness**: accuracy on "
                        f"{len(kinds)} corruption kinds × 5 severities (CIFAR-10-C's definitions, as "
                        f"`cifarlab evaluate --corruptions`) of the same seeded {_list(images)} test images for "
                        f"every run; the mean over those {5 * len(kinds)} sets, and its drop relative to the "
                        f"clean accuracy of the same images. Mean ± sample std over the measured seeds. "
                        f"Seconds: the measurement's own ({_list(devices)})."))
    if later:
        blocks.append(("p", f"Not measured yet for every seed of {', '.join(later)}: {todo}"))
    head = ["model", "seeds", "T", "ECE raw", "ECE scaled", "MCE raw", "MCE scaled", "NLL raw", "NLL scaled",
            "clean", "corrupted", "relative drop", "seconds"]
    body = [[r["model"], f"{r['trust_n']} of {r['n']}", _pm(r["temperature_mean"], r["temperature_std"], 3),
             _pct(r["ece_raw_mean"], r["ece_raw_std"]), _pct(r["ece_scaled_mean"], r["ece_scaled_std"]),
             _pct(r["mce_raw_mean"], r["mce_raw_std"], 1), _pct(r["mce_scaled_mean"], r["mce_scaled_std"], 1),
             _pm(r["nll_raw_mean"], r["nll_raw_std"], 3), _pm(r["nll_scaled_mean"], r["nll_scaled_std"], 3),
             _pct(r["clean_sub_mean"], r["clean_sub_std"], 1), _pct(r["corrupt_mean"], r["corrupt_std"], 1),
             _pct(r["drop_mean"], r["drop_std"], 1), _pm(r["trust_seconds_mean"], r["trust_seconds_std"], 0)]
            for r in measured]
    blocks.append(("table", head, body))
    blocks.append(("p", "Accuracy under each corruption (mean over its 5 severities):"))
    blocks.append(("table", ["model", *[k.replace("_", " ") for k in kinds]],
                   [[r["model"], *[_pct(r["per_kind"].get(k), None, 1) for k in kinds]] for r in measured]))
    if figures and trust_figure(measured, out / "figures" / "trust.png"):
        blocks.append(("img", "figures/trust.png", "clean against corrupted accuracy, and ECE raw and scaled"))
    if figures and reliability_figure(measured, out / "figures" / "reliability.png"):
        blocks.append(("img", "figures/reliability.png", "reliability diagrams, raw and temperature-scaled"))
    return blocks


def reliability_figure(rows: list[dict], path: Path) -> bool:
    """One reliability diagram per model: accuracy against mean confidence in each non-empty
    bin of the test split, raw and temperature-scaled, one line per measured seed."""
    drawn = [r for r in rows if any(b.get("before") for b in r.get("bins", []))]
    if not drawn:
        return False
    plt = _pyplot()
    cols = min(len(drawn), 5)
    nrows = -(-len(drawn) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(max(2.6 * cols + 0.6, 5.5), 2.6 * nrows + 0.5), squeeze=False,
                             sharex=True, sharey=True)
    for ax, r in zip(axes.flat, drawn):
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        for i, seed_bins in enumerate(r["bins"]):
            for key, color, label in (("before", "#c44e52", "raw"), ("after", "#3b75af", "scaled")):
                full = [b for b in seed_bins.get(key) or [] if b.get("count")]
                ax.plot([b["confidence"] for b in full], [b["accuracy"] for b in full], marker="o", markersize=2.5,
                        lw=1, color=color, alpha=0.85, label=label if i == 0 else None)
        ax.set_title(r["model"], fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    for ax in axes.flat[len(drawn):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    for ax in axes[-1, :]:
        ax.set_xlabel("confidence")
    fig.suptitle("reliability on the test split (dashed: calibrated)", fontsize=10)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def _list(values: list) -> str:
    return " and ".join(f"{v:,}" if isinstance(v, int) else str(v) for v in values) or "—"


def trust_figure(rows: list[dict], path: Path) -> bool:
    """Left: each model's clean accuracy on the corruption subset against its mean corrupted
    accuracy (error bars over seeds; the diagonal is no drop). Right: ECE raw and scaled."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(rows):
        x, y = 100 * r["clean_sub_mean"], 100 * r["corrupt_mean"]
        left.errorbar(x, y, xerr=100 * r["clean_sub_std"] if r["clean_sub_std"] else None,
                      yerr=100 * r["corrupt_std"] if r["corrupt_std"] else None, fmt="o", capsize=3,
                      color=colors[i % len(colors)], label=r["model"])
        left.annotate(r["model"], (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
    lo = min(100 * min(r["corrupt_mean"] for r in rows), 100 * min(r["clean_sub_mean"] for r in rows))
    lo = max(0.0, 10 * (lo // 10) - 5)
    left.plot([lo, 100], [lo, 100], "k--", lw=0.8, label="no drop")
    left.set_xlim(lo, 100)
    left.set_ylim(lo, 100)
    left.set_xlabel("clean accuracy, same pictures (%)")
    left.set_ylabel("mean corrupted accuracy (%)")
    left.set_title("robustness")
    xs = range(len(rows))
    width = 0.38
    for shift, key, label, color in ((-width / 2, "ece_raw", "raw", "#c44e52"),
                                     (width / 2, "ece_scaled", "temperature-scaled", "#3b75af")):
        spread = [100 * (r[f"{key}_std"] or 0) for r in rows]
        right.bar([x + shift for x in xs], [100 * (r[f"{key}_mean"] or 0) for r in rows], width,
                  yerr=spread if any(spread) else None, capsize=3, label=label, color=color)
    right.set_xticks(list(xs))
    right.set_xticklabels([r["model"] for r in rows], fontsize=8, rotation=20 if len(rows) > 5 else 0)
    right.set_ylabel("ECE, 15 bins (%)")
    right.set_title("calibration error on the test split")
    _finish(fig, (left, right), path)
    return True


def _settings_blocks(spec: StudySpec, settings: str) -> list:
    own = (spec.value_settings or {}).get("model", {})
    keys = list(dict.fromkeys(k for m in spec.factors[0][1] for k in own.get(m, {})))
    from cifarlab.training import TrainConfig
    defaults = TrainConfig().to_dict()
    named = ("time_budget", "amp", "channels_last", "batch_size", "optimizer", "lr", "schedule", "augment", "val",
             "tta")  # said even where they are the defaults
    common = [f"{k}={_setting_text(v)}" for k, v in spec.base.items()
              if k not in ("model", "runs_dir", "name", "progress", "seed") and k not in keys
              and (k in named or defaults.get(k) != v)]
    blocks: list = [("h2", "Settings"),
                    ("p", "Every model: " + ", ".join(common) + "; the rest cifarlab's defaults (`cifarlab train "
                          "--help`). amp = bf16 where the CPU computes it natively (float32 elsewhere).")]
    if keys:
        base = spec.base
        body = [[m] + [_setting_text(own.get(m, {}).get(k, base.get(k))) for k in keys] for m in spec.factors[0][1]]
        generic = [m for m in spec.factors[0][1] if m not in CPU_MODEL_SETTINGS]
        blocks += [("p", "Per model (studies/compare.py, CPU_MODEL_SETTINGS"
                         + (f"; {', '.join(generic)}: the generic settings" if generic else "") + "):"),
                   ("table", ["model", *keys], body)]
    if settings == "cpu" and [m for m in spec.factors[0][1] if m in WRITEUP_MODELS]:
        blocks.append(("p", "For the write-up's own settings under the same budget: the same command with "
                            "`--settings reference`."))
    return blocks
