"""Fit the shipped model's temperature and write it beside the file, never into it.

    CIFARLAB_DATA=/path/to/cifar10 .venv/bin/python scripts/calibrate_shipped.py [--write]

The shipped ``src/cifarlab/assets/default.pt`` is left byte for byte as it is; the
temperature goes to ``default.calibration.json`` beside it (with the .pt's SHA-256, so a
new default.pt silently stops using an old temperature), which every Predictor (CLI, web,
desktop, ONNX export) reads.

Where the temperature is fitted: on the checkpoint's validation split when its run kept
one. A run trained with ``val=0`` (all 50,000 training pictures, as the shipped default
was) has no held-out pictures but the test split, and its training pictures are no
substitute (it is near 100% right on them, so a temperature fitted there would be wrong).
Then the test split is cut in two seeded, stratified halves: the temperature fitted on
each half is measured on the other (2-fold cross-fitting: the "after" ECE below never
sees the pictures its temperature was fitted on), and the temperature written is the one
fitted on the whole test split. Probabilities are single-view, as the apps give them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ASSET = Path(__file__).resolve().parents[1] / "src" / "cifarlab" / "assets" / "default.pt"


def measure(checkpoint, data, seed: int = 0, device: str = "cpu") -> dict:
    """The calibration report of ``checkpoint`` (single view, as the apps give probabilities):
    the temperature fitted on its run's validation split when the data has one (``data``: a
    CifarData split as the run split it, or a path loaded so), else the cross-fitted fallback
    on the test split; ECE, MCE and NLL of the test split before and after it."""
    from cifarlab.calibration import calibration_bins, fit_temperature, nll, softmax
    from cifarlab.training.calibrate import collect_logits, cross_fitted_report
    from cifarlab.training.evaluation import checkpoint_with_data, saved_norm_loader
    ckpt, model, meta, _, data, device = checkpoint_with_data(checkpoint, data, device)

    def logits(split):
        return collect_logits(model, saved_norm_loader(split, meta["normalize"], device))

    z, y = logits(data.test)
    top5 = np.argsort(-z, axis=1, kind="stable")[:, :5]
    report = {"checkpoint": str(ckpt["path"]), "n_test": int(len(y)), "accuracy": float((z.argmax(1) == y).mean()),
              "top5": float((top5 == y[:, None]).any(1).mean()),
              "raw": {**{k: v for k, v in calibration_bins(softmax(z), y).items() if k != "bins"}, "nll": nll(z, y)},
              "max_probability_p99_raw": float(np.quantile(softmax(z).max(1), 0.99))}
    if len(data.val):
        zv, yv = logits(data.val)
        t = fit_temperature(zv, yv)
        report.update(fitted_on="val", n_fit=int(len(yv)), val_nll_before=nll(zv, yv), val_nll_after=nll(zv, yv, t))
        report["after"] = {k: v for k, v in calibration_bins(softmax(z, t), y).items() if k != "bins"}
        report["after"]["nll"] = nll(z, y, t)
    else:  # val=0: 2-fold cross-fitting on the test split
        crossed = cross_fitted_report((z, y), seed)  # each half scaled by the other half's T
        t = fit_temperature(z, y)  # the shipped T: fitted on the whole test split
        report.update(fitted_on="test (val=0 run): 2-fold cross-fitted for the 'after' numbers",
                      fold_temperatures=crossed["fold_temperatures"], n_fit=int(len(y)))
        report["after"] = {k: v for k, v in crossed["after"].items() if k != "bins"}
        report["after_full_test_T_same_data"] = {
            k: v for k, v in calibration_bins(softmax(z, t), y).items() if k in ("ece", "mce")}
    report["temperature"] = t
    report["max_probability_p99_scaled"] = float(np.quantile(softmax(z, t).max(1), 0.99))
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", nargs="?", default=str(ASSET))
    ap.add_argument("--data", default=os.environ.get("CIFARLAB_DATA"))
    ap.add_argument("--write", action="store_true", help="write the sidecar (default: only report)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="also write the report as JSON here")
    ap.add_argument("--no-results", action="store_true", help="append no row to results/calibration.csv")
    args = ap.parse_args()
    if not args.data:
        print("calibrate_shipped: set CIFARLAB_DATA (or --data) to the CIFAR-10 copy the model was tested on",
              file=sys.stderr)
        return 2
    from cifarlab.calibration import write_sidecar
    from cifarlab.inference.checkpoint import load_checkpoint
    ckpt = load_checkpoint(args.checkpoint)
    report = measure(args.checkpoint, args.data, seed=args.seed, device=args.device)
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if args.write:
        side = write_sidecar(ckpt["path"], {"temperature": report["temperature"], "fitted_on": report["fitted_on"],
                                            "n": report["n_fit"], "seed": args.seed})
        print(f"wrote {side}", file=sys.stderr)
    if not args.no_results:
        print(f"row appended to {record(report, ckpt)}", file=sys.stderr)
    return 0


def row(report: dict, sha256: str, model: str) -> dict:
    """The results/calibration.csv row of a report (percentages as percent)."""
    return {"model": model, "checkpoint_sha256": sha256[:16], "n": report["n_test"],
            "test_top1_pct": round(100 * report["accuracy"], 2), "fitted_on": report["fitted_on"],
            "n_fit": report["n_fit"], "temperature": round(report["temperature"], 4),
            "ece_raw_pct": round(100 * report["raw"]["ece"], 2), "ece_after_pct": round(100 * report["after"]["ece"], 2),
            "mce_raw_pct": round(100 * report["raw"]["mce"], 2), "mce_after_pct": round(100 * report["after"]["mce"], 2),
            "nll_raw": round(report["raw"]["nll"], 4), "nll_after": round(report["after"]["nll"], 4),
            "max_prob_p99_raw": round(report["max_probability_p99_raw"], 4),
            "max_prob_p99_after": round(report["max_probability_p99_scaled"], 4)}


def record(report: dict, ckpt: dict, command: str | None = None) -> Path:
    """Append the report's row to results/calibration.csv (``command``: default this process's)."""
    from cifarlab import results
    from cifarlab.calibration import file_sha256
    import shlex
    return results.append_row("calibration", {"command": command or shlex.join(["python", *sys.argv]),
                                              **row(report, file_sha256(ckpt["path"]), ckpt["model"]["name"])})


if __name__ == "__main__":
    raise SystemExit(main())
