"""The five-classic-cnns §6 study (``cifarlab study --preset reference``), timed.

    python benchmarks/reference_study.py [--data PATH] [--out DIR] [--seeds 1] [--quick]

Full version (a GPU): googlenet_small, 6 factors, 20 distinct runs per seed, 10 epochs at
the base. ``--quick`` (the default when there is no GPU) is a REDUCED study labelled as
such everywhere: 500 training images, 300 validation and 300 test images, every
epoch count x 0.1 (base 1 epoch; the epochs factor 1, 2, 5), about 7 minutes on 2 busy cores. Prints the environment,
the wall time and each factor's table; the report lands in ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from _env import environment  # benchmarks/_env.py
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
