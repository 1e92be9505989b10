"""Seconds per corruption kind for the default model: making the corrupted copies of a
test set and classifying them (``cifarlab evaluate --corruptions``'s work).

For each kind of the suite (``--kinds``: default 10 kinds, or ``all``) and each severity:
the seconds to make the copy (``corrupt``) and to classify it with the shipped default
model (single view, batch 250, channels-last, ``--precision``: auto = bf16 where the CPU
computes it natively; the path ``evaluate --corruptions`` takes), then the suite's total against the goal of the 50 test
sets of 10,000 pictures in under 5 minutes. Pictures: the real test split when
``CIFARLAB_DATA`` is set (``--data``), else ``--n`` synthetic ones (the time of a
corruption does not depend on what the picture shows). One row per kind is appended to
``results/corruptions_time.csv`` (``--results``/``--no-results``). A timing: run it on a
quiet machine.

    python benchmarks/corruptions_time.py [--n 10000] [--kinds default|all|fog,contrast]
                                          [--severities 1,2,3,4,5] [--threads N]
    python benchmarks/corruptions_time.py --n 200 --severities 1 --no-results   # smoke
    python benchmarks/corruptions_time.py --classify-sets 5   # every copy made, 5 classified

Classifying a copy takes the same time whatever its corruption (the same model on the
same number of pictures), so ``--classify-sets K`` classifies only the first K copies
and counts the others at their mean: the suite's total is then an estimate, and says so.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from _env import add_results_args, environment, record  # benchmarks/_env.py

GOAL_S = 300.0  # the whole default suite (50 test sets of 10,000 pictures)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="pictures per test set")
    p.add_argument("--kinds", default="default")
    p.add_argument("--severities", default="1,2,3,4,5")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data", default=os.environ.get("CIFARLAB_DATA"))
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--precision", default="auto", choices=["auto", "float32"])
    p.add_argument("--classify-sets", type=int, default=None,
                   help="classify only the first K corrupted copies; the rest count at their mean time")
    add_results_args(p)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from cifarlab.catalog import default_checkpoint
    from cifarlab.corruptions import corrupt, parse_kinds, suite_classifier
    from cifarlab.inference.checkpoint import load_model
    kinds = parse_kinds(args.kinds)
    sevs = tuple(int(s) for s in args.severities.split(","))
    model, meta = load_model(default_checkpoint(), "cpu")
    norm = meta["normalize"]
    if args.data:
        from cifarlab.data import load_cifar
        test = load_cifar(args.data).test
        images, labels, source = test.images[:args.n], test.labels[:args.n], f"test split of {args.data}"
    else:
        from cifarlab.data.synthetic import random_cifar
        test = random_cifar(n_train=10, n_test=args.n, seed=0).test
        images, labels, source = test.images, test.labels, "synthetic pictures (no CIFARLAB_DATA)"
    classify, precision = suite_classifier(model, norm, np.asarray(labels), torch.device("cpu"), args.precision,
                                           args.batch_size)
    print(environment(torch.device("cpu")))
    print(f"model {meta['model']['name']} (shipped default) | {len(images)} pictures: {source} | "
          f"threads {torch.get_num_threads()} | {precision}, batch {args.batch_size}")

    t0 = time.perf_counter()
    classify(images)
    clean_s = time.perf_counter() - t0
    print(f"clean test set classified in {clean_s:.2f} s")
    print(f"{'kind':18s} {'corrupt s':>10s} {'classify s':>10s} {'s / set':>8s}  (means over severities {sevs})")
    budget = len(kinds) * len(sevs) if args.classify_sets is None else max(1, args.classify_sets)
    made, measured = {}, []  # kind -> seconds per copy made; seconds per copy classified
    for kind in kinds:
        make, run = [], []
        for s in sevs:
            t = time.perf_counter()
            copy = corrupt(images, kind, s, seed=0)
            t1 = time.perf_counter()
            make.append(t1 - t)
            if len(measured) < budget:
                classify(copy)
                run.append(time.perf_counter() - t1)
                measured.append(run[-1])
        made[kind] = make
        classify_s = float(np.mean(run)) if run else None
        shown = f"{classify_s:10.2f}" if run else f"{'(mean)':>10s}"
        per_set = float(np.mean(make)) + (classify_s if run else float(np.mean(measured)))
        print(f"{kind:18s} {np.mean(make):10.2f} {shown} {per_set:8.2f}")
        record("corruptions_time", {"model": meta["model"]["name"], "kind": kind, "n": len(images),
                                    "severities": len(sevs), "corrupt_s_mean": round(float(np.mean(make)), 3),
                                    "classify_s_mean": None if classify_s is None else round(classify_s, 3),
                                    "classified_sets": len(run), "threads": torch.get_num_threads(),
                                    "precision": precision, "batch_size": args.batch_size}, args=args)
    sets = len(kinds) * len(sevs)
    total = sum(map(sum, made.values())) + float(np.mean(measured)) * sets
    how = "measured" if len(measured) == sets else f"estimated: {len(measured)} of {sets} copies classified"
    scale = 10_000 / len(images) * 50 / sets
    print(f"suite: {sets} test sets of {len(images)} pictures in {total:.1f} s ({how}); scaled to 50 sets of "
          f"10,000: {total * scale:.0f} s (goal {GOAL_S:.0f} s: {'met' if total * scale <= GOAL_S else 'NOT met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
