"""Accuracy and training time of a record-speed recipe over several seeds, on the shared loop.

    python benchmarks/speedrun.py --recipe fast --runs 10
    python benchmarks/speedrun.py --recipe fast --runs 5 --frontier 6,8,10,12
    python benchmarks/speedrun.py --recipe fast --runs 2 --device cpu --model airnet_tiny \
        --train-subset 2000 --test-subset 1000 --epochs 2 --batch-size 100 --lr 0.1465

Every run is ``cifarlab.training.train`` with the recipe's config (seed = run number), so
it measures the same loop the CLI uses. Printed: the environment, then per seed the test
accuracy without and with the recipe's TTA and the times, finally mean ± std accuracy and
median times. Each seed is also appended as a row to ``results/speedrun.csv``
(``--results``/``--no-results``).

What "train" time is (CUDA events, synchronized once at the end of each run, on GPU;
``time.perf_counter`` on CPU): the sum over epochs of first batch -> last batch of the
epoch (the loop synchronizes there), data already resident on the device. It includes
on-device normalization and augmentation and every per-batch callback; it excludes the
whitening initialisation (reported separately as "whiten": all before_fit work, which is
the whitening plus negligible callback set-up), per-epoch checkpoint writes,
the final test evaluation and run-folder I/O (all inside "wall", the whole ``train()``
call). With ``--compile`` (default on CUDA) an untimed warm-up run compiles first and the
timed runs reuse its graphs, so compilation is not in the train time (each run builds a
fresh model; with torch 2.13 on CPU a fresh instance of the same model reused the graphs:
first call 40 s for the first instance, 0.01 s for the second). Check on GPU with
``TORCH_LOGS=recompiles``: a recompile would show as a slow first epoch in a timed run.
Goals on an H100: ``fast`` >= 93.0% mean over 10 runs with median train time <= 3.0 s;
``fast-wide`` >= 95.0%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

from _env import add_results_args, environment, record, series_name  # benchmarks/_env.py
from cifarlab.training import Callback, recipe_config, train
from cifarlab.inference.hardware import bf16_native


# ---------------------------------------------------------------- environment
# ---------------------------------------------------------------- timing
class SpeedTimer(Callback):
    """Times each epoch's batches (and the before_fit work) with CUDA events or perf_counter."""

    order = 0  # first on every event: starts before whitening and before any epoch work

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, object]] = []

    def _mark(self, name: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append((name, event))
        else:
            self.marks.append((name, time.perf_counter()))

    def before_fit(self, learn) -> None:
        self._mark("fit")

    def before_epoch(self, learn) -> None:
        self._mark("epoch")

    def before_validate(self, learn) -> None:
        self._mark("end")  # the loop has synchronized after the last batch

    def seconds(self) -> dict[str, float]:
        """{"whiten": before_fit -> first epoch, "train": sum of epoch batch loops} in seconds."""
        if self.cuda:
            torch.cuda.synchronize()
        gap = (lambda a, b: a.elapsed_time(b) / 1000) if self.cuda else (lambda a, b: b - a)
        out = {"whiten": gap(self.marks[0][1], self.marks[1][1]), "train": 0.0}
        starts = [m for n, m in self.marks if n == "epoch"]
        ends = [m for n, m in self.marks if n == "end"]
        out["train"] = sum(gap(a, b) for a, b in zip(starts, ends))
        return out


# ---------------------------------------------------------------- runs
def _load(args):
    from cifarlab.data import load_cifar
    data = load_cifar(args.data, val=0, seed=0, progress=False)
    if args.train_subset or args.test_subset:
        data = data.subset(train=args.train_subset, test=args.test_subset, seed=0)
    return data


def _evaluate(model, data, device: torch.device, tta: str, channels_last: bool, amp: bool) -> float:
    from cifarlab.data import DeviceLoader, channel_stats
    from cifarlab.training import evaluate_model
    mean, std = channel_stats(data.train.images)
    loader = DeviceLoader(data.test, 500, device, mean, std, shuffle=False, channels_last=channels_last)
    return evaluate_model(model, loader, data.classes, device, tta=tta, amp=amp)["top1"]


def one_run(args, data, device: torch.device, seed: int, epochs: int | None, runs_dir: str) -> dict:
    over = {"seed": seed, "device": device.type, "progress": False, "tensorboard": False, "plots": False,
            "runs_dir": runs_dir, "name": f"{args.recipe}-e{epochs}-s{seed}", "compile": args.compile_on}
    if epochs is not None:
        over["epochs"] = epochs
    if args.batch_size:  # lr scales linearly with the batch (airbench's lr is per 1024 examples)
        over["batch_size"] = args.batch_size
    if args.model:
        over["model"] = args.model
    if args.lr:
        over["lr"] = args.lr
    cfg = recipe_config(args.recipe, over)
    timer = SpeedTimer(device)
    start = time.perf_counter()
    result = train(cfg, callbacks=[timer], data=data)
    wall = time.perf_counter() - start
    amp = cfg.amp and bf16_native(device)
    plain = _evaluate(result.model, data, device, "none", cfg.channels_last, amp)
    tta = _evaluate(result.model, data, device, cfg.tta, cfg.channels_last, amp)
    return {"seed": seed, "epochs": cfg.epochs, "acc": plain, "acc_tta": tta, "wall": wall,
            "model": cfg.model, "tta": cfg.tta,
            "summary_top1": result.summary["test"].get("top1"), **timer.seconds()}


def _mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}%"


def series(args, data, device, epochs: int | None, runs_dir: str) -> list[dict]:
    rows = []
    for seed in range(args.runs):
        r = one_run(args, data, device, seed, epochs, runs_dir)
        rows.append(r)
        print(f"  seed {seed}  epochs {r['epochs']}  test {100 * r['acc']:.2f}%  tta {100 * r['acc_tta']:.2f}%  "
              f"train {r['train']:.3f} s  whiten {r['whiten']:.3f} s  wall {r['wall']:.2f} s", flush=True)
        record("speedrun", {
            "seed": seed, "series": args.series, "recipe": args.recipe, "model": r["model"], "epochs": r["epochs"],
            "batch_size": args.batch_size, "lr": args.lr, "compile": args.compile_on,
            "train_subset": args.train_subset, "test_subset": args.test_subset,
            "test_top1_pct": round(100 * r["acc_tta"], 2), "tta": r["tta"],
            "test_top1_plain_pct": round(100 * r["acc"], 2), "train_s": round(r["train"], 3),
            "whiten_s": round(r["whiten"], 3), "wall_s": round(r["wall"], 2), "torch": torch.__version__,
        }, device=device, args=args)
    return rows


def report(rows: list[dict], label: str) -> str:
    return (f"{label}: runs {len(rows)}  test {_mean_std([r['acc'] for r in rows])}  "
            f"tta {_mean_std([r['acc_tta'] for r in rows])}  "
            f"median train {statistics.median(r['train'] for r in rows):.3f} s  "
            f"median whiten {statistics.median(r['whiten'] for r in rows):.3f} s  "
            f"median wall {statistics.median(r['wall'] for r in rows):.2f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="fast")
    p.add_argument("--runs", type=int, default=10, help="seeds 0..runs-1")
    p.add_argument("--frontier", default="", help="comma-separated epoch budgets, e.g. 6,8,10,12")
    p.add_argument("--data", default=os.environ.get("CIFARLAB_DATA"), help="CIFAR-10 source (default: "
                   "$CIFARLAB_DATA, then the cache)")
    p.add_argument("--device", default="auto")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch (and scale --lr "
                   "yourself: the recipe's lr is for its own batch)")
    p.add_argument("--lr", type=float, default=None, help="override the recipe's lr")
    p.add_argument("--model", default=None, help="override the recipe's model (e.g. airnet_tiny for CPU checks)")
    p.add_argument("--train-subset", type=int, default=None, help="quick CPU checks only")
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="auto: on for CUDA")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 1 on CUDA, 0 on CPU)")
    add_results_args(p)
    args = p.parse_args(argv)
    args.series = series_name("speedrun")
    from cifarlab.inference.hardware import pick_device
    device = pick_device(args.device)
    args.compile_on = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    print(environment(device))
    if device.type != "cuda":
        print(f"device {device}: NO GPU -- times below are CPU perf_counter times, not comparable "
              f"with the GPU goals")
    data = _load(args)
    print(f"recipe {args.recipe}  data {data.info.source}  train {len(data.train)}  test {len(data.test)}  "
          f"compile {args.compile_on}  amp/channels-last as the recipe says", flush=True)
    with tempfile.TemporaryDirectory(prefix="speedrun-") as runs_dir:
        warm = args.warmup if args.warmup is not None else int(device.type == "cuda")
        for i in range(warm):
            r = one_run(args, data, device, 1000 + i, args.epochs, runs_dir)
            print(f"  warm-up (untimed, seed {1000 + i}): train {r['train']:.3f} s  wall {r['wall']:.2f} s")
        rows = series(args, data, device, args.epochs, runs_dir)
        print(report(rows, f"{args.recipe} ({rows[0]['epochs']} epochs)"))
        budgets = [int(b) for b in args.frontier.split(",") if b.strip()]
        if budgets:
            print("frontier: epochs | test acc | tta acc | median train s")
            for e in budgets:
                fr = rows if e == rows[0]["epochs"] else series(args, data, device, e, runs_dir)
                print("  " + report(fr, f"epochs {e}"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
