"""Calibration with a model, a checkpoint or the data: the logits of a split, the temperature
stored in a checkpoint, a run's and a checkpoint's calibration, the reliability diagram.

``calibrate_run`` is what training calls once the test split is evaluated: it fits T on the
validation split, stores it in best.pt/last.pt, and returns the ECE/MCE of the test split
before and after, with the reliability diagram in the run folder's figures. The arithmetic
(ECE, MCE, NLL, fitting T, where T is kept) is ``cifarlab.calibration``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from cifarlab.calibration import brief, calibration_report, write_sidecar
from cifarlab.inference.checkpoint import safe_load, load_checkpoint, load_model, save_checkpoint
from cifarlab.training.evaluation import saved_norm_loader
from cifarlab.training.loop import autocast
from cifarlab.errors import CifarlabError


def collect_logits(model: torch.nn.Module, batches, amp: bool = False,
                   amp_eval: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """float32 logits [N, K] and labels [N] of ``model`` (eval mode) over (x, y) batches, in the
    precision the run's own test used (``amp``/``amp_eval``, as ``training.loop.autocast`` reads them)."""
    was_training = model.training
    model.eval()
    zs, ys = [], []
    try:
        with torch.inference_mode():
            for x, y in batches:
                with autocast(x.device, amp, training=False, amp_eval=amp_eval):
                    zs.append(model(x).float().cpu())
                ys.append(y.cpu())
    finally:
        model.train(was_training)
    return torch.cat(zs).numpy(), torch.cat(ys).numpy()


def store_in_checkpoint(path: str | Path, calibration: dict) -> None:
    """Add ``calibration`` (plain values) to the checkpoint at ``path``, rewritten atomically."""
    ckpt = safe_load(Path(path))
    ckpt["calibration"] = calibration
    save_checkpoint(ckpt, path)


def calibrate_run(model, cfg, data, run_dir: Path, device, normalize: dict) -> dict:
    """Fit T on ``data.val`` (when the run kept one), store it in the run's checkpoints,
    draw the test split's reliability diagram; returns the calibration report (no bins)."""
    from cifarlab.training import plots

    def batches(split):
        return saved_norm_loader(split, normalize, device)

    amp = {"amp": bool(getattr(cfg, "amp", False)), "amp_eval": bool(getattr(cfg, "amp_eval", False))}
    test = collect_logits(model, batches(data.test), **amp)
    val = collect_logits(model, batches(data.val), **amp) if len(data.val) else None
    report = calibration_report(val, test)
    if report["temperature"] is not None:
        cal = {"temperature": report["temperature"], "fitted_on": "val", "n": int(len(val[1])),
               "val_nll_before": report["val_nll_before"], "val_nll_after": report["val_nll_after"]}
        for name in ("best.pt", "last.pt"):
            if (run_dir / name).is_file():
                store_in_checkpoint(run_dir / name, cal)
    run_dir = Path(run_dir)
    from cifarlab.atomic import atomic_write_text
    atomic_write_text(run_dir / "calibration.json", json.dumps(report, indent=2) + "\n")
    if getattr(cfg, "plots", True) and plots.available():
        save_reliability(report, run_dir / "reliability.png", title=f"{getattr(cfg, 'model', '')} test split")
    return brief(report)


def save_reliability(report: dict, path: str | Path, title: str = "") -> Path:
    """The reliability diagram: accuracy against confidence per bin, before (and after)
    temperature scaling, with the bins' share of examples below (matplotlib)."""
    from cifarlab.training import plots
    plt = plots.pyplot()
    panels = [("before", "raw")] + ([("after", f"T = {report['temperature']:.3f}")] if "after" in report else [])
    fig, axes = plt.subplots(2, len(panels), figsize=(4.6 * len(panels), 5.4), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    for col, (key, label) in enumerate(panels):
        m = report[key]
        ax, hist = axes[0, col], axes[1, col]
        width = 1.0 / len(m["bins"])
        mids = [(b["lo"] + b["hi"]) / 2 for b in m["bins"]]
        acc = [b["accuracy"] or 0.0 for b in m["bins"]]
        conf = [b["confidence"] if b["confidence"] is not None else mid for b, mid in zip(m["bins"], mids)]
        ax.bar(mids, acc, width=width, edgecolor="black", color="#4C72B0", label="accuracy")
        ax.bar(mids, [c - a if b["count"] else 0 for c, a, b in zip(conf, acc, m["bins"])], bottom=acc,
               width=width, edgecolor="#C44E52", color="#C44E52", alpha=0.35, hatch="//", label="gap")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title(f"{label}: ECE {m['ece']:.2%}, MCE {m['mce']:.2%}")
        ax.legend(loc="upper left", fontsize=8)
        hist.bar(mids, [b["count"] / m["n"] for b in m["bins"]], width=width, color="grey", edgecolor="black")
        hist.set_xlabel("confidence")
        hist.set_ylabel("share")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    plots.save_png(fig, path)
    plt.close(fig)
    return path


def calibrate_checkpoint(checkpoint, data=None, device: str | None = None, store: str = "checkpoint",
                         cross_fit: bool = False) -> dict:
    """Fit a checkpoint's temperature on its validation split and measure the test split.

    ``store`` is "checkpoint" (rewrite the file with a ``calibration`` entry), "sidecar"
    (``<name>.calibration.json`` beside it: for a file that must not change) or "none".
    ``cross_fit``: where the data has no validation split, measure the test split by 2-fold
    cross-fitting (``cross_fitted_report``) instead of refusing; nothing is stored then.
    """
    from cifarlab.training.evaluation import checkpoint_with_data
    ckpt, model, meta, _, data, dev = checkpoint_with_data(checkpoint, data, device)
    if len(data.val) == 0 and cross_fit:
        return cross_fitted_report(collect_logits(model, saved_norm_loader(data.test, meta["normalize"], dev)))
    if len(data.val) == 0:
        raise CifarlabError("this data has no validation split to fit the temperature on (val=0); "
                            "load it with a validation split")
    norm = meta["normalize"]

    def batches(split):
        return saved_norm_loader(split, norm, dev)

    report = calibration_report(collect_logits(model, batches(data.val)), collect_logits(model, batches(data.test)))
    cal = {"temperature": report["temperature"], "fitted_on": "val", "n": int(len(data.val)),
           "val_nll_before": report["val_nll_before"], "val_nll_after": report["val_nll_after"]}
    if store == "checkpoint":
        store_in_checkpoint(ckpt["path"], cal)
    elif store == "sidecar":
        report["sidecar"] = str(write_sidecar(ckpt["path"], cal))
    return report


def cross_fitted_report(test: tuple, seed: int = 0) -> dict:
    """``calibration_report``'s shape for a model without a validation split: the test split
    (logits, labels) cut in two seeded halves, stratified by class; each half is scaled by
    the temperature fitted on the other (2-fold cross-fitting: the "after" numbers never see
    the pictures their temperature was fitted on). ``temperature`` is the mean of the two."""
    from cifarlab.calibration import N_BINS, calibration_bins, fit_temperature, nll, softmax
    z, y = np.asarray(test[0]), np.asarray(test[1]).astype(np.int64)
    rng = np.random.default_rng(seed)
    a, b = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        a.append(idx[: len(idx) // 2])
        b.append(idx[len(idx) // 2:])
    a, b = np.concatenate(a), np.concatenate(b)
    if len(a) == 0 or len(b) == 0:
        raise CifarlabError(f"cross-fitting a temperature needs at least two test pictures of a class; "
                            f"the test split has {len(y)}")
    ta, tb = fit_temperature(z[a], y[a]), fit_temperature(z[b], y[b])
    p = np.empty((len(y), z.shape[1]))
    p[b], p[a] = softmax(z[b], ta), softmax(z[a], tb)
    after = calibration_bins(p, y)
    after["nll"] = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None)).mean())
    before = calibration_bins(softmax(z), y)
    before["nll"] = nll(z, y)
    return {"n_bins": N_BINS, "temperature": (ta + tb) / 2, "fold_temperatures": [ta, tb],
            "fitted_on": "test halves (no validation split): 2-fold cross-fitted", "seed": seed,
            "views": "single (as the apps predict)", "before": before, "after": after}
