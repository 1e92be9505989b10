"""How far to trust a probability: calibration errors, reliability diagrams, temperature scaling.

* ``calibration_bins(probs, labels)``: the expected calibration error (ECE) over 15
  equal-width confidence bins (Guo et al., 2017: a bin holds confidences in (lo, hi]), the
  maximum calibration error (MCE, the worst non-empty bin) and the bins themselves.
* ``fit_temperature(logits, labels)``: one scalar T > 0 minimizing the negative
  log-likelihood of softmax(logits / T), by L-BFGS on log T (so T stays positive). It is
  fitted on the validation split, never the test split, and changes no prediction, only
  how sure each one claims to be.
* The temperature lives in the checkpoint's ``calibration`` entry (``{"temperature": T,
  ...}``: plain values, so the checkpoint format is unchanged), or, for a file that must
  not be rewritten (the shipped model), in a sidecar ``<name>.calibration.json`` beside it
  that names the checkpoint's SHA-256; ``temperature_for(meta)`` finds either.
* What needs a model, a checkpoint or the data (collecting logits, storing T, a run's or a
  checkpoint's calibration, the reliability diagram) is in ``cifarlab.training.calibrate``;
  this module is the arithmetic, which the engine, the apps and the reports share.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from cifarlab.errors import CifarlabError

N_BINS = 15
SIDECAR_SUFFIX = ".calibration.json"


# ---------------------------------------------------------------- measures
def calibration_bins(probs, labels, n_bins: int = N_BINS) -> dict:
    """ECE, MCE and the reliability bins of probabilities [N, K] against labels [N].

    ``{"ece", "mce", "n", "accuracy", "confidence", "bins": [{"lo", "hi", "count",
    "confidence", "accuracy"}]}``; empty bins have count 0 and None for the means.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise CifarlabError(f"calibration needs probabilities [N, K] and N labels, got {probs.shape} and "
                            f"{labels.shape}")
    if len(labels) == 0:
        raise CifarlabError("calibration needs at least one example")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # (lo, hi]: searchsorted(side="left") puts a confidence equal to an edge in the bin below it
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    bins, ece, mce = [], 0.0, 0.0
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        if count:
            c, a = float(conf[mask].mean()), float(correct[mask].mean())
            gap = abs(a - c)
            ece += count / len(labels) * gap
            mce = max(mce, gap)
        else:
            c = a = None
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count, "confidence": c, "accuracy": a})
    return {"ece": float(ece), "mce": float(mce), "n": int(len(labels)), "accuracy": float(correct.mean()),
            "confidence": float(conf.mean()), "bins": bins}


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / temperature)."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64) / float(temperature)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    return float(torch.nn.functional.cross_entropy(z, y))


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64) / float(temperature)
    return torch.softmax(z, dim=1).numpy()


def fit_temperature(logits, labels, max_iter: int = 200) -> float:
    """The T > 0 minimizing the NLL of softmax(logits / T): L-BFGS on log T, float64."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise CifarlabError(f"temperature scaling needs logits [N, K] and N labels, got {tuple(z.shape)} "
                            f"and {tuple(y.shape)}")
    if not torch.isfinite(z).all():
        raise CifarlabError("the logits hold NaN or inf; the model is broken, no temperature can be fitted")
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t) or t <= 0:
        raise CifarlabError("temperature scaling did not converge; the validation logits may be degenerate")
    # a model right on every example drives T to 0 (or a wrong-on-all one to inf): keep it sane
    return float(min(max(t, 0.05), 20.0))


@torch.no_grad()
# ---------------------------------------------------------------- where T is kept
def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(checkpoint: str | Path) -> Path:
    p = Path(checkpoint)
    return p.with_name(p.stem + SIDECAR_SUFFIX)


def write_sidecar(checkpoint: str | Path, calibration: dict) -> Path:
    """``<name>.calibration.json`` beside ``checkpoint``, tied to its bytes by SHA-256."""
    from cifarlab.atomic import atomic_write_text
    out = sidecar_path(checkpoint)
    atomic_write_text(out, json.dumps({**calibration, "checkpoint_sha256": file_sha256(checkpoint)}, indent=2) + "\n")
    return out


def read_sidecar(checkpoint: str | Path) -> dict | None:
    """The sidecar's calibration when it exists and names this very file; else None."""
    side = sidecar_path(checkpoint)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("checkpoint_sha256") != file_sha256(checkpoint):
        return None  # written for other weights: using it would mis-scale these ones
    return data


def calibration_of(meta: dict) -> dict | None:
    """A loaded checkpoint's calibration: its ``calibration`` entry, else the sidecar beside
    its file; None when it has none (or one without a usable temperature)."""
    cal = meta.get("calibration")
    if not isinstance(cal, dict) and meta.get("path") and str(meta["path"]).endswith(".pt"):
        if Path(meta["path"]).is_file():
            cal = read_sidecar(meta["path"])
    t = cal.get("temperature") if isinstance(cal, dict) else None
    if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t > 0:
        return cal
    return None


def temperature_for(meta: dict) -> float | None:
    """The temperature of a loaded checkpoint's meta (``calibration_of``), or None."""
    cal = calibration_of(meta)
    return float(cal["temperature"]) if cal else None


# ---------------------------------------------------------------- a checkpoint / a run
def calibration_report(val: tuple | None, test: tuple) -> dict:
    """From (logits, labels) of the validation split (or None) and of the test split: the
    fitted temperature and the test split's ECE/MCE/NLL before and after it."""
    z, y = test
    out = {"n_bins": N_BINS, "temperature": None, "fitted_on": None, "views": "single (as the apps predict)",
           "before": _measures(z, y, 1.0)}
    if val is not None and len(val[1]):
        t = fit_temperature(*val)
        out.update(temperature=t, fitted_on="val", val_nll_before=nll(*val), val_nll_after=nll(*val, t),
                   after=_measures(z, y, t))
    return out


def _measures(z, y, t: float) -> dict:
    m = calibration_bins(softmax(z, t), y)
    m["nll"] = nll(z, y, t)
    return m


def brief(report: dict) -> dict:
    """The report without its bins (for summary.json's headline fields)."""
    out = {k: v for k, v in report.items() if k not in ("before", "after")}
    for k in ("before", "after"):
        if k in report:
            out[k] = {m: report[k][m] for m in ("ece", "mce", "nll", "confidence", "accuracy")}
    return out
