"""``cifarlab compare``: several models, the same time budget each, one report beside the write-up's."""

from __future__ import annotations

import argparse

from cifarlab.cli.train_cmd import parse_duration, parse_set

# kept here as text (not imported from studies.compare): `cifarlab --help` stays fast
_DEFAULT_MODELS = "lenet5,alexnet,vgg16_faithful,googlenet_small,resnet18"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="train several models with the same time budget each; table, curves, report",
        description="Train each model for the same wall-clock time with its own best CPU settings (or the "
                    "write-up's settings) over several seeds, then write a table, curves, an accuracy chart "
                    "beside the five-classic-cnns write-up's figures, and report.md/report.html. Rerun the "
                    "same command to continue an interrupted comparison.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default=_DEFAULT_MODELS, help="comma-separated model names (see `cifarlab models`)")
    p.add_argument("--time-budget", type=parse_duration, default=600.0, metavar="DURATION",
                   help="wall time of each run (e.g. 10min, 600); 0 = each model's planned epochs")
    p.add_argument("--seeds", type=int, default=1, help="seeds per model (mean ± std over them)")
    p.add_argument("--settings", default="cpu", choices=("cpu", "reference"),
                   help="cpu: cifarlab's settings for each model (--list-settings); reference: the write-up's "
                        "(Adam 1e-3, batch 32, no augmentation, constant lr) for all, with --time-budget 0 its 10 "
                        "epochs")
    p.add_argument("--set", dest="set_values", action="append", default=[], metavar="KEY=VALUE",
                   help="a TrainConfig field for every model, over its own settings, e.g. --set data=PATH")
    p.add_argument("--train-subset", type=int, help="train on only this many images (a reduced comparison)")
    p.add_argument("--test-subset", type=int, help="test on only this many images (a reduced comparison)")
    p.add_argument("--name", help="comparison name (default from the models, settings and budget)")
    p.add_argument("--out", help="output folder (default compare/NAME)")
    p.add_argument("--report-only", action="store_true",
                   help="measure the calibration and robustness of finished runs not measured yet (unless "
                        "--no-trust), rewrite the report of --out and exit")
    p.add_argument("--no-trust", action="store_true",
                   help="measure no calibration or robustness after each run (the report says 'not measured')")
    p.add_argument("--trust-images", type=int, default=1000, metavar="N",
                   help="test images (seeded, the same for every run) corrupted to measure robustness")
    p.add_argument("--list-settings", action="store_true", help="print each model's settings and exit")
    p.add_argument("--quiet", action="store_true", help="one line per run instead of per-epoch progress")
    p.add_argument("--storage", help="database shared by several workers (postgresql://... across machines, "
                                     "sqlite:///FILE on one): each run is trained by exactly one of them")
    p.add_argument("--heartbeat", type=int, metavar="S",
                   help="a worker marks its run alive every S seconds; after 3*S of silence another worker "
                        "takes it over (default 10)")
    p.set_defaults(func=run_compare_cmd)


def run_compare_cmd(args) -> int:
    import shlex
    import sys

    from rich.console import Console

    from cifarlab.errors import ConfigError
    from cifarlab.studies.compare import build_compare_spec
    from cifarlab.studies.compare_run import measure_missing, run_compare
    from cifarlab.studies.compare_trust import trust_options
    from cifarlab.studies.report import write_report
    from cifarlab.studies.study import load_spec
    console = Console(stderr=True, soft_wrap=True)
    options = None if args.no_trust else trust_options(images=args.trust_images)
    command = shlex.join(["cifarlab", *sys.argv[1:]]) if sys.argv[1:2] == ["compare"] else None

    def said(name: str, text: str) -> None:
        console.print(f"trust {name}: {text}", highlight=False)
    if args.report_only:
        if not args.out:
            raise ConfigError("--report-only needs --out COMPARISON_FOLDER")
        spec = load_spec(args.out)
        if options and spec.kind == "compare":
            try:
                measure_missing(args.out, spec, options=options, command=command, progress=said)
            except KeyboardInterrupt:  # what was measured is kept; the report is still written
                console.print("measuring interrupted; the report shows what was measured")
        print(write_report(args.out))
        return 0
    spec = build_compare_spec(args.models.split(","), time_budget=args.time_budget, seeds=args.seeds,
                              settings=args.settings, sets=parse_set(args.set_values),
                              train_subset=args.train_subset, test_subset=args.test_subset, name=args.name)
    if args.list_settings:
        _print_settings(spec)
        return 0
    out = args.out or f"compare/{spec.name}"
    runs = len(spec.factors[0][1]) * len(spec.seeds)
    budget = spec.base.get("time_budget") or 0
    if budget:
        console.print(f"{runs} runs of {budget:g} s each: about {runs * budget / 3600:.1f} h in all"
                      + ("" if args.no_trust else ", plus the calibration and robustness of each after it "
                                                  "(--no-trust: none)")
                      + " (rerun the same command to continue after a stop)", highlight=False)

    def note(i: int, n: int, run, state: str) -> None:
        said = {"skip": "already done", "resume": "resumed", "start": "trained", "diverged": "DIVERGED (recorded)",
                "elsewhere": "taken by another worker"}
        console.print(f"[{i + 1}/{n}] {run.name}: {said.get(state, state)}", highlight=False)
    try:
        result = run_compare(spec, out, progress=not args.quiet, on_run=note, storage=args.storage,
                             heartbeat=args.heartbeat, command=command, trust=options or False, on_trust=said)
    except KeyboardInterrupt:
        console.print(f"comparison interrupted; run the same command again to continue ({out})")
        return 130
    done = f"{len(result.trained)} runs trained, {len(result.skipped)} already done"
    if result.elsewhere:
        done += f", {len(result.elsewhere)} by other workers"
    if result.waiting:
        console.print(f"{done}; {len(result.waiting)} still running elsewhere: the worker that finishes the "
                      f"last one writes the report (or later: --report-only --out {out})", highlight=False)
    else:
        console.print(f"{done}; report: {result.out / 'report.html'}", highlight=False)
    return 0


def _print_settings(spec) -> None:
    from cifarlab.training import TrainConfig
    defaults = TrainConfig().to_dict()
    common = {k: v for k, v in spec.base.items()
              if k not in ("model", "runs_dir", "name", "progress") and defaults.get(k) != v}
    print("every model (besides the defaults): " + ", ".join(f"{k}={v}" for k, v in common.items()))
    for model, own in spec.value_settings["model"].items():
        print(f"{model}: " + (", ".join(f"{k}={v}" for k, v in own.items()) or "(the common settings)"))
