"""CPU inference speed (images/s) of the default model: eager PyTorch vs ONNX Runtime.

Prints the environment (python, torch, onnxruntime, CPU, cores, threads, load, commit),
then, for batch 1 and batch 256, the median images/s over several timed runs of each
engine, side by side, in one process with the same thread count. The model is the
shipped default (``cifarlab.catalog``) when the package has one, else resnet20 with
random weights: the speed of a network does not depend on its weights' values.
Needs the onnx extra: ``pip install 'cifarlab[onnx]'``. One row per batch size is appended
to ``results/infer_cpu.csv`` (``--results``/``--no-results``).

    python benchmarks/infer_cpu.py [--runs 7] [--seconds 1.0] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _env import add_results_args, environment, record  # benchmarks/_env.py
from cifarlab.inference.export import OnnxModel, export_model


def default_model() -> tuple[torch.nn.Module, dict, str]:
    """The shipped default model when there is one, else resnet20 with random weights."""
    from cifarlab.inference.checkpoint import load_model
    try:
        from cifarlab.catalog import default_checkpoint
        path = default_checkpoint()
        if path.is_file():
            model, meta = load_model(path, "cpu")
            return model, meta, f"shipped default {meta['model']['name']} ({path.name})"
    except ImportError:
        pass
    from cifarlab.models import create_model
    model = create_model("resnet20").eval()
    meta = {"model": {"name": "resnet20", "kwargs": {}, "num_classes": 10}, "classes": [str(i) for i in range(10)],
            "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3, "grayscale": None}}
    return model, meta, "resnet20 with random weights (no shipped default model; speed does not depend on weights)"


def images_per_s(run, x, seconds: float, runs: int) -> tuple[float, list[float]]:
    """Median images/s over ``runs`` timed runs of about ``seconds`` each, after warm-up."""
    for _ in range(3):
        run(x)
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 4:  # calls per run, from a short probe
        run(x)
        calls += 1
    calls = max(1, int(calls * 4))
    rates = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(calls):
            run(x)
        rates.append(calls * len(x) / (time.perf_counter() - t))
    return statistics.median(rates), rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7, help="timed runs per cell (median reported, >= 5)")
    p.add_argument("--seconds", type=float, default=1.0, help="length of one timed run")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads for both engines")
    p.add_argument("--batches", default="1,256")
    add_results_args(p)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, meta, what = default_model()
    print(environment(torch.device("cpu"), ("onnxruntime",)))
    print(f"{args.threads} threads for each engine")
    print(f"model: {what}")
    busy = os.getloadavg()[0] + args.threads > (os.cpu_count() or 1) + 0.5
    if busy and args.threads > 1:  # OpenMP workers that wait for a descheduled peer, op after op
        print("note: the machine is busy; with more threads than idle cores eager PyTorch measures "
              "scheduler contention more than compute: compare with --threads 1")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_model = OnnxModel(export_model(model, meta, Path(tmp) / "m.onnx"), threads=args.threads)
        rows = []
        for batch in [int(b) for b in args.batches.split(",")]:
            x = torch.randn(batch, 3, 32, 32)
            xn = x.numpy()
            with torch.inference_mode():
                eager, eager_all = images_per_s(model, x, args.seconds, args.runs)
            onnx, onnx_all = images_per_s(onnx_model, xn, args.seconds, args.runs)
            rows.append((batch, eager, onnx, eager_all, onnx_all))
    print(f"\nimages/s, median of {args.runs} runs of ~{args.seconds:g} s (min-max in brackets)")
    print(f"{'batch':>5}  {'eager PyTorch':>26}  {'ONNX Runtime':>26}  {'ORT / eager':>11}")
    for batch, eager, onnx, e_all, o_all in rows:
        print(f"{batch:>5}  {eager:>10.0f} [{min(e_all):>6.0f}-{max(e_all):>6.0f}]  "
              f"{onnx:>10.0f} [{min(o_all):>6.0f}-{max(o_all):>6.0f}]  {onnx / eager:>10.2f}x")
    print(f"load average {os.getloadavg()[0]:.2f} (at end)")
    for batch, eager, onnx, e_all, o_all in rows:
        record("infer_cpu", {"model": meta["model"]["name"], "weights": what, "batch": batch, "threads": args.threads,
                             "runs": args.runs, "run_s": args.seconds, "eager_images_per_s": round(eager),
                             "eager_min": round(min(e_all)), "eager_max": round(max(e_all)),
                             "onnx_images_per_s": round(onnx), "onnx_min": round(min(o_all)),
                             "onnx_max": round(max(o_all)), "onnx_over_eager": round(onnx / eager, 2),
                             "load_avg": round(os.getloadavg()[0], 2), "torch": torch.__version__},
               args=args)


if __name__ == "__main__":
    main()
