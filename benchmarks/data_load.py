"""Cold (first decode, fresh cache) and warm (cached) load times of a CIFAR source.

    python benchmarks/data_load.py [--source PATH] [--repeats 3]

Prints the environment and the median of each; goals on the shared 2-core machine:
cold <= 20 s, warm <= 1 s for /work/shared/data/cifar10-jpeg75.tar.gz.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
import torch

from cifarlab.data import load_cifar

DEFAULT = "/work/shared/data/cifar10-jpeg75.tar.gz"


def environment() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = "unknown"
    cpu = platform.processor() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"python {platform.python_version()}  torch {torch.__version__}  numpy {np.__version__}  "
            f"pillow {PIL.__version__}\ncpu {cpu}  cores {os.cpu_count()}  commit {commit}")


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
    args = parser.parse_args()
    print(environment())
    print(f"source {args.source}")
    cold, warm = [], []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cold.append(timed(args.source, Path(tmp)))
            warm.append(timed(args.source, Path(tmp)))
        print(f"  repeat {r + 1}: cold {cold[-1]:.2f} s  warm {warm[-1]:.3f} s", flush=True)
    print(f"cold median {statistics.median(cold):.2f} s (goal <= 20 s)  "
          f"warm median {statistics.median(warm):.3f} s (goal <= 1 s)  repeats {args.repeats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
