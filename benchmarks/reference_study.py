"""The five-classic-cnns §6 study (``cifarlab study --preset reference``), timed.

    python benchmarks/reference_study.py [--data PATH] [--out DIR] [--seeds 1] [--quick]

Full version (a GPU): googlenet_small, 6 factors, 20 distinct runs per seed, 10 epochs at
the base. ``--quick`` (the default when there is no GPU) is a REDUCED study labelled as
such everywhere: 500 training images, 300 validation and 300 test images, every
epoch count x 0.1 (base 1 epoch; the epochs factor 1, 2, 5), about 7 minutes on 2 busy cores. Prints the environment,
the wall time and each factor's table; the report lands in ``--out``. Each finished run is
appended as a row to ``results/reference_study.csv`` (its factor values, test top-1, epochs,
training time; ``train_subset`` set for the REDUCED study; ``--results``/``--no-results``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from _env import add_results_args, environment, record, series_name  # benchmarks/_env.py
from cifarlab.studies import build_spec, run_study

DEFAULT_DATA = os.environ.get("CIFARLAB_DATA") or "/work/shared/data/cifar10-jpeg75.tar.gz"
QUICK = {"train_subset": 500, "val": 300, "test_subset": 300, "epoch_scale": 0.1}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", default=None)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="reduced CPU version (default without a GPU)")
    ap.add_argument("--only", default=None, help="keep only these factors, e.g. lr,optimizer")
    add_results_args(ap)
    args = ap.parse_args()
    quick = args.quick or not torch.cuda.is_available()
    sets = {"data": args.data, "progress": False, "tensorboard": False}
    shrink = {}
    if quick:
        sets["val"] = QUICK["val"]
        shrink = {k: QUICK[k] for k in ("train_subset", "test_subset", "epoch_scale")}
    spec = build_spec(preset="reference", sets=sets, seeds=args.seeds,
                      only=args.only.split(",") if args.only else (), **shrink)
    if quick:
        spec.reduced["val"] = QUICK["val"]
        spec.name += "-reduced"
    out = Path(args.out or f"studies/{spec.name}")
    print(environment(torch.device("cuda" if torch.cuda.is_available() else "cpu")))
    print(("REDUCED (CPU quick version): " + ", ".join(f"{k}={v}" for k, v in spec.reduced.items()))
          if quick else "full reference study")
    start = time.perf_counter()
    result = run_study(spec, out, progress=False,
                       on_run=lambda i, n, run, state: print(f"  [{i + 1}/{n}] {run.name} {state} "
                                                             f"({time.perf_counter() - start:.0f}s)", flush=True))
    wall = time.perf_counter() - start
    print(f"\nwall time {wall:.0f} s for {len(result.trained)} runs trained "
          f"({len(result.skipped)} already done); report {out / 'report.md'}\n")
    for factor, _ in spec.factors:
        print(f"## {factor}\n" + (out / "tables" / f"{factor}.md").read_text())
    series = series_name("reference_study")
    for run in result.runs:
        summary = out / "runs" / run.name / "summary.json"
        if not summary.exists():  # diverged, or held by another worker
            continue
        s = json.loads(summary.read_text())
        record("reference_study", {
            "seed": run.seed, "series": series, "study": spec.name, "run": run.name, "model": s.get("model"),
            "set": " ".join(f"{k}={v}" for k, v in run.overrides.items()) or None,
            "train_subset": spec.reduced.get("train_subset"), "test_subset": spec.reduced.get("test_subset"),
            "epochs": s.get("epochs_run"), "test_top1_pct": round(100 * s["test"]["top1"], 2),
            "train_s": round(s.get("training_time_s", 0), 1), "study_wall_s": round(wall),
            "trained_now": run.name in result.trained,
        }, device=torch.device("cuda" if torch.cuda.is_available() else "cpu"), args=args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
