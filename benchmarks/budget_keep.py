"""Does a time budget keep its promise? Each CPU recipe's budget, timed from outside.

``cifarlab train --recipe cpu-5min`` promises to end inside five minutes: the budget
counts from the command's start and plans the epochs to fit (training/budget.py). This
script runs each recipe (and ``make train``, whose promise is TRAIN_SECONDS from the moment
``make`` is typed) as a separate process, N times, and measures the wall clock around the
whole process: interpreter start, imports, data loading, the timed probe steps, training,
the test pass and the files written. It reports each run against its budget and, per
recipe, whether every run ended inside it and whether the median ended within 3 % under it
(closer is wasted time, further is a broken plan).

    python benchmarks/budget_keep.py                             # every recipe, 3 runs each
    python benchmarks/budget_keep.py --recipes cpu-5min,make-train --runs 5
    python benchmarks/budget_keep.py --recipes cpu-2min --runs 1 --time-budget 60 \\
        --train-subset 500 --test-subset 200 --extra "--model airnet_tiny" --no-results  # a smoke run

Run it on a quiet machine: another process on the cores slows the steps after they were
timed, and the run then ends late. Rows go to results/budget_keep.csv (``--no-results``:
none), one per run, with the machine, commit and the exact command.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CPU_RECIPES = ("cpu-2min", "cpu-5min", "cpu-15min", "cpu-45min")
MAKE_TRAIN = "make-train"
GOAL_UNDER = 0.03  # the median run should end within 3 % under its budget


def recipe_budget(recipe: str) -> float:
    from cifarlab.training.recipes import recipe_config
    return float(recipe_config(recipe).time_budget)


def cifarlab_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("cifarlab")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cifarlab"]


def one_run(recipe: str, seed: int, args, runs_dir: Path) -> dict:
    """Run ``recipe`` once as its own process; its wall clock, budget and what it reported."""
    name = f"keep-{recipe}-s{seed}-{int(time.time())}"
    extra = []
    if args.train_subset:
        extra += ["--train-subset", str(args.train_subset)]
    if args.test_subset:
        extra += ["--test-subset", str(args.test_subset)]
    if args.data:
        extra += ["--data", args.data]
    extra += shlex.split(args.extra or "")
    if recipe == MAKE_TRAIN:
        budget = float(args.make_seconds)
        # `make train` fixes its own recipe, seed and run folder; TRAIN_SECONDS is its promise
        cmd = ["make", "-C", str(ROOT), "--no-print-directory", "train", f"TRAIN_SECONDS={args.make_seconds}"]
        run_dir = None
    else:
        budget = float(args.time_budget or recipe_budget(recipe))
        cmd = [*cifarlab_cmd(), "train", "--recipe", recipe, "--seed", str(seed), "--runs-dir", str(runs_dir),
               "--name", name, *extra]
        if args.time_budget:
            cmd += ["--time-budget", str(args.time_budget)]
        run_dir = runs_dir / name
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    summary = {}
    if run_dir is not None and (run_dir / "summary.json").is_file():
        summary = json.loads((run_dir / "summary.json").read_text())
    test = summary.get("test") or {}
    row = {"recipe": recipe, "seed": seed if recipe != MAKE_TRAIN else None, "budget_s": round(budget, 2),
           "wall_s": round(wall, 2), "within_budget": wall <= budget, "under_pct": round(100 * (budget - wall) / budget, 2),
           "train_wall_s": summary.get("wall_time_s"), "epochs_run": summary.get("epochs_run"),
           "test_top1_pct": round(100 * test["top1"], 2) if "top1" in test else None,
           "train_images": args.train_subset or None, "exit_code": proc.returncode,
           "run_command": shlex.join(cmd)}
    if proc.returncode != 0:
        row["note"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:200]
    return row


def verdict(rows: list[dict]) -> str:
    walls = [r["wall_s"] for r in rows]
    budget = rows[0]["budget_s"]
    median = statistics.median(walls)
    every = all(r["within_budget"] and r["exit_code"] == 0 for r in rows)
    close = budget * (1 - GOAL_UNDER) <= median <= budget
    return (f"{rows[0]['recipe']}: budget {budget:.0f} s, {len(rows)} runs, wall {min(walls):.1f}-{max(walls):.1f} s, "
            f"median {median:.1f} s ({100 * (budget - median) / budget:+.1f}% under) | every run within: "
            f"{'yes' if every else 'NO'} | median within 3% under: {'yes' if close else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=",".join([*CPU_RECIPES, MAKE_TRAIN]),
                        help=f"comma-separated: {', '.join(CPU_RECIPES)}, {MAKE_TRAIN} (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each recipe (seeds 0..N-1; default 3)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="override every recipe's budget in seconds (smoke runs; not the recipes' promise)")
    parser.add_argument("--make-seconds", type=int, default=300, help="TRAIN_SECONDS for make train (default 300)")
    parser.add_argument("--train-subset", type=int, default=None, help="train on this many images (smoke runs)")
    parser.add_argument("--test-subset", type=int, default=None, help="test on this many images (smoke runs)")
    parser.add_argument("--data", default=None, help="the data set (default: $CIFARLAB_DATA)")
    parser.add_argument("--runs-dir", default=None, help="where the run folders go (default: a temporary folder)")
    parser.add_argument("--extra", default="", metavar="ARGS",
                        help="more `cifarlab train` arguments, e.g. \"--model airnet_tiny\" (smoke runs)")
    _env.add_results_args(parser)
    args = parser.parse_args(argv)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in (*CPU_RECIPES, MAKE_TRAIN)]
    if unknown or args.runs < 1 or (args.time_budget is not None and args.time_budget <= 0):
        print(f"budget_keep: error: recipes must be among {', '.join([*CPU_RECIPES, MAKE_TRAIN])} "
              f"(got {', '.join(unknown) or 'ok'}), --runs >= 1, --time-budget > 0", file=sys.stderr)
        return 2
    if MAKE_TRAIN in recipes and (args.train_subset or args.test_subset or args.time_budget or args.extra):
        print("budget_keep: note: make-train runs as `make train` does: subsets and --time-budget do not apply",
              file=sys.stderr)
    print(_env.environment())
    print(f"load average at start: {os.getloadavg()[0]:.2f} (a busy machine makes runs end late)", flush=True)
    series = _env.series_name("budget_keep")
    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="budget-keep-"))
    by_recipe: dict[str, list[dict]] = {}
    for recipe in recipes:
        for seed in range(args.runs):
            row = one_run(recipe, seed, args, runs_dir)
            by_recipe.setdefault(recipe, []).append(row)
            print(f"{recipe} seed {seed}: {row['wall_s']:.1f} s of {row['budget_s']:.0f} s "
                  f"({row['under_pct']:+.1f}% under), exit {row['exit_code']}, "
                  f"{row['epochs_run']} epochs, test {row['test_top1_pct']}%"
                  + (f" | {row['note']}" if row.get("note") else ""), flush=True)
            smoke = bool(args.time_budget or args.train_subset or args.test_subset or args.extra)
            _env.record("budget_keep", {"series": series, "smoke": smoke, **row}, args=args)
    print()
    ok = True
    for rows in by_recipe.values():
        line = verdict(rows)
        ok &= "NO" not in line
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
