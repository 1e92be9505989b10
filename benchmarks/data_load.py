"""Cold (first decode, fresh cache) and warm (cached) load times of a CIFAR source.

    python benchmarks/data_load.py [--source PATH] [--repeats 3]

Prints the environment and the median of each; goals on the shared 2-core machine:
cold <= 20 s, warm <= 1 s for /work/shared/data/cifar10-jpeg75.tar.gz. The medians are
appended as a row to ``results/data_load.csv`` (``--results``/``--no-results``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from _env import add_results_args, environment, record  # benchmarks/_env.py
from cifarlab.data import load_cifar

DEFAULT = "/work/shared/data/cifar10-jpeg75.tar.gz"


def timed(source: str, cache_dir: Path) -> float:
    start = time.perf_counter()
    data = load_cifar(source, cache_dir=cache_dir, progress=False)
    elapsed = time.perf_counter() - start
    assert len(data.train) + len(data.val) + len(data.test) > 0
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=os.environ.get("CIFARLAB_DATA", DEFAULT))
    parser.add_argument("--repeats", type=int, default=3)
    add_results_args(parser)
    args = parser.parse_args()
    print(environment(torch.device("cpu"), ("numpy", "PIL")))
    print(f"source {args.source}")
    cold, warm = [], []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cold.append(timed(args.source, Path(tmp)))
            warm.append(timed(args.source, Path(tmp)))
        print(f"  repeat {r + 1}: cold {cold[-1]:.2f} s  warm {warm[-1]:.3f} s", flush=True)
    print(f"cold median {statistics.median(cold):.2f} s (goal <= 20 s)  "
          f"warm median {statistics.median(warm):.3f} s (goal <= 1 s)  repeats {args.repeats}")
    record("data_load", {"source_file": Path(args.source).name, "repeats": args.repeats,
                         "cold_s": round(statistics.median(cold), 2), "cold_min_s": round(min(cold), 2),
                         "cold_max_s": round(max(cold), 2), "warm_s": round(statistics.median(warm), 3),
                         "warm_min_s": round(min(warm), 3), "warm_max_s": round(max(warm), 3),
                         "load_avg": round(os.getloadavg()[0], 2)}, args=args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
