"""Time-to-accuracy of the CPU recipes: test accuracy, wall time and useful GFLOP/s per seed.

    python benchmarks/cpu_frontier.py                          # every cpu-* recipe, 3 seeds
    python benchmarks/cpu_frontier.py --recipes cpu-5min --seeds 1
    python benchmarks/cpu_frontier.py --recipes cpu-5min --set tta=flip-translate   # one change, measured

Printed: the environment, this machine's float32 matmul ceiling measured in the same run
(a 2048x2048 matmul, the best any training can do here) and, on a CPU with native bf16
(where the recipes train in bf16), the bf16 one too, then per recipe and seed: the test
accuracy with the recipe's test-time augmentation (what the run reports) and without it,
the wall time of the whole ``train()`` call (model build, data-dependent whitening, every
epoch, the final test evaluation, run-folder writes; the decoded data comes from the warm
cache, loaded once untimed first), the time of the epochs alone, and the useful training
GFLOP/s: 3 x 2 x forward MACs per image (at each epoch's resolution) x images trained,
over the epochs' time, also as a fraction of the matmul ceiling in the number format the
run trained in (``summary.json``'s ``hardware.amp``). Means, standard deviations
and medians close each recipe. Run it on an otherwise idle machine (or with
``chrt -f 20`` so that nothing else gets the cores); the load average is printed first.
Each seed's numbers are also appended as a row to ``results/cpu_frontier.csv`` (with the
machine, ceilings, commit and command line; ``--results``/``--no-results``), one
``series`` per invocation: ``--series NAME`` joins the seeds of several invocations (seeds
run one by one, interleaved with a variant) into one set.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time

import torch

from _env import add_results_args, environment, record, series_name  # benchmarks/_env.py
from cifarlab.data import load_cifar
from cifarlab.data.loader import format_resolutions, parse_resolutions, size_at_epoch
from cifarlab.cli.train_cmd import parse_set  # the parser of `cifarlab train --set`
from cifarlab.training import evaluate_model, train
from cifarlab.inference.hardware import bf16_native
from cifarlab.training.recipes import list_recipes, resolve_config
from cifarlab.errors import ConfigError
from cifarlab.models import create_model
from cifarlab.models.inspect import macs


def matmul_ceiling(n: int = 2048, reps: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` on this CPU (median of ``reps`` timed products)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def training_flops(cfg, n_train: int) -> float:
    """3 x 2 x MACs (forward, then backward twice that) x images, per epoch at its resolution
    (a cut last epoch: its steps' images)."""
    model = create_model(cfg.model, **cfg.model_kwargs)
    stages = parse_resolutions(getattr(cfg, "resolutions", ""))
    per_size: dict[int, int] = {}
    total = 0.0
    for epoch in range(cfg.epochs):
        size = size_at_epoch(stages, epoch) or 32
        if size not in per_size:
            per_size[size] = macs(model, (3, size, size))
        images = n_train
        if epoch == cfg.epochs - 1 and cfg.last_epoch_steps:
            images = min(n_train, cfg.last_epoch_steps * cfg.batch_size)
        total += 6.0 * per_size[size] * images
    return total


def one_run(name: str, seed: int, data_path: str | None, runs_dir: str, sets: dict | None = None) -> dict:
    cfg = resolve_config(recipe=name, flags={"seed": seed, "progress": False, "plots": False, "tensorboard": False,
                                             "runs_dir": runs_dir, "name": f"{name}-s{seed}", "device": "cpu",
                                             **({"data": data_path} if data_path else {})}, sets=sets)
    start = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - start
    s = result.summary
    # a time budget planned the epochs and their resolutions, and may have trained the recipe's
    # smaller fallback model
    plan = s.get("time_budget")
    resolutions = format_resolutions(plan["stages"][:-1]) if plan else cfg.resolutions
    ran = dataclasses.replace(cfg, epochs=s["epochs_run"], model=s["model"], resolutions=resolutions,
                              last_epoch_steps=s.get("last_epoch_steps", 0))
    row = {"seed": seed, "acc": s["test"]["top1"], "tta": s["test"].get("tta", "none"), "wall": wall,
           "fit": s["training_time_s"], "flops": training_flops(ran, s["data"]["train"]),
           "bf16": bool(s["hardware"].get("amp")), "epochs": s["epochs_run"], "plan": s.get("time_budget"),
           "model": s["model"], "train_images": s["data"]["train"]}
    row["acc_plain"] = row["acc"] if row["tta"] == "none" else _plain_accuracy(result, cfg)
    return row


def _plain_accuracy(result, cfg) -> float:
    """The same model on the same test images without test-time augmentation (untimed), in the
    run's own precision (bf16 where its final test was)."""
    from cifarlab.data import DeviceLoader, channel_stats
    data = load_cifar(cfg.data, val=cfg.val, seed=cfg.seed, progress=False)
    mean, std = channel_stats(data.train.images)  # as the engine normalized the run
    loader = DeviceLoader(data.test, 500, "cpu", mean, std, shuffle=False, channels_last=cfg.channels_last)
    return evaluate_model(result.model, loader, data.classes, torch.device("cpu"), amp=cfg.amp,
                          amp_eval=cfg.amp_eval)["top1"]


def _stats(values: list[float], scale: float = 1.0, fmt: str = ".2f") -> str:
    mean = statistics.mean(values) * scale
    sd = statistics.stdev(values) * scale if len(values) > 1 else float("nan")
    return f"mean {mean:{fmt}} ± {sd:{fmt}}, median {statistics.median(values) * scale:{fmt}}"


def results_row(name: str, sets: dict | None, r: dict, rate: float, pct: float, fmt: str) -> dict:
    """The row ``results/cpu_frontier.csv`` gets for one seed (the printed line's numbers)."""
    plan = r.get("plan") or {}
    return {"seed": r["seed"], "recipe": name,
            "set": " ".join(f"{k}={v}" for k, v in (sets or {}).items()) or None, "model": r["model"],
            "epochs": r.get("epochs"), "budget_s": plan.get("budget_s"),
            "plan": " + ".join(f"{e}@{px}" for px, e in plan["stages"]) if plan else None,
            "last_epoch_steps": plan.get("last_epoch_steps") or None, "muon_lr": plan.get("muon_lr") or None,
            "planned_s": round(plan["planned_s"]) if plan.get("planned_s") is not None else None,
            "test_top1_pct": round(100 * r["acc"], 2), "tta": r["tta"],
            "test_top1_plain_pct": round(100 * r["acc_plain"], 2), "wall_s": round(r["wall"], 1),
            "fit_s": round(r["fit"], 1), "trained_in": fmt, "gflops": round(rate, 1), "ceiling_pct": round(pct),
            "load_avg": round(os.getloadavg()[0], 2), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "train_images": r.get("train_images"),
            "train_subset": (sets or {}).get("train_subset")}  # a subset run is no recipe's figure


def run_recipe(name: str, seeds: range, data_path: str | None, ceilings: dict, runs_dir: str,
               sets: dict | None = None, args=None, series: str = "") -> list[dict]:
    changed = "".join(f" --set {key}={value}" for key, value in (sets or {}).items())
    print(f"\nrecipe {name}{changed}: {list_recipes()[name]}", flush=True)
    rows = []
    for seed in seeds:
        r = one_run(name, seed, data_path, runs_dir, sets)
        rate = r["flops"] / r["fit"] / 1e9
        rows.append({**r, "gflops": rate})
        fmt = "bf16" if r["bf16"] else "float32"
        plan = r.get("plan")
        cut = f", the last cut to {plan['last_epoch_steps']} steps" if plan and plan.get("last_epoch_steps") else ""
        cut += f", Muon lr {plan['muon_lr']:g} for a short run" if plan and plan.get("muon_lr") else ""
        planned = (f" (planned for {plan['budget_s']:.0f} s: {' + '.join(f'{e}@{px}' for px, e in plan['stages'])}"
                   f"{cut}, estimated {plan['planned_s']:.0f} s)") if plan else ""
        print(f"  seed {seed}  test {100 * r['acc']:.2f}% (tta {r['tta']})  without tta {100 * r['acc_plain']:.2f}%  "
              f"wall {r['wall']:.1f} s  {r['model']}, {r.get('epochs', '?')} epochs{planned} in {r['fit']:.1f} s  trained in {fmt}  "
              f"{rate:.1f} GFLOP/s = {100 * rate / ceilings[fmt]:.0f}% of the {fmt} matmul ceiling", flush=True)
        if args is not None:  # main() passes its arguments; a caller without them records nothing
            record("cpu_frontier", {**results_row(name, sets, r, rate, 100 * rate / ceilings[fmt], fmt),
                                    "series": series}, ceilings=ceilings, args=args)
    print(f"  {name}: test % {_stats([r['acc'] for r in rows], 100)} | without tta % "
          f"{_stats([r['acc_plain'] for r in rows], 100)} | wall s {_stats([r['wall'] for r in rows], 1, '.1f')} | "
          f"GFLOP/s {_stats([r['gflops'] for r in rows], 1, '.1f')}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default="", help="comma-separated recipe names (default: every cpu-* recipe)")
    p.add_argument("--seeds", type=int, default=3, help="how many seeds per recipe")
    p.add_argument("--first-seed", type=int, default=0,
                   help="the first seed (seeds first..first+N-1); lets a long recipe's seeds run in parts")
    p.add_argument("--data", default=os.environ.get("CIFARLAB_DATA"),
                   help="CIFAR-10 source (default $CIFARLAB_DATA, then the cache)")
    p.add_argument("--keep", default=None, help="keep the run folders under this folder (default: a temporary one)")
    p.add_argument("--set", dest="set_values", action="append", default=[], metavar="KEY=VALUE",
                   help="a TrainConfig field to change in every recipe, as in `cifarlab train --set` "
                        "(repeatable): measures one change against the recipe as it is")
    p.add_argument("--series", default=None,
                   help="the rows' series name (default: this invocation's own); give several invocations "
                        "the same one to read their seeds as one set")
    add_results_args(p)
    args = p.parse_args(argv)
    if args.seeds < 1 or args.first_seed < 0:
        p.error("--seeds must be at least 1 and --first-seed at least 0")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    names = [n for n in args.recipes.split(",") if n] or [n for n in list_recipes() if n.startswith("cpu-")]
    try:  # a misspelt recipe, key or value fails here, not after the first recipe's runs
        sets = parse_set(args.set_values)
        for name in names:
            resolve_config(recipe=name, sets=sets)
    except ConfigError as e:
        p.error(str(e))
    print(environment(torch.device("cpu")))
    print(f"torch threads {torch.get_num_threads()} | recipes {', '.join(names)} | "
          f"seeds {seeds.start}..{seeds.stop - 1}")
    ceilings = {"float32": matmul_ceiling()}
    if bf16_native(torch.device("cpu")):  # the recipes train in bf16 here (amp)
        ceilings["bf16"] = matmul_ceiling(dtype=torch.bfloat16)
    for fmt, rate in ceilings.items():
        print(f"matmul ceiling (2048x2048 {fmt}, median of 10): {rate:.1f} GFLOP/s", flush=True)
    load_cifar(args.data, val=0, progress=False)  # decode (or read the cache) once, untimed
    series = args.series or series_name("cpu_frontier")
    with tempfile.TemporaryDirectory(prefix="cpu-frontier-") as tmp:
        for name in names:
            run_recipe(name, seeds, args.data, ceilings, args.keep or tmp, sets, args, series)
    return 0


if __name__ == "__main__":
    sys.exit(main())
