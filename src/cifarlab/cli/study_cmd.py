"""``cifarlab study`` and ``cifarlab tune``: many runs and their search."""

from __future__ import annotations

import argparse
import json

from cifarlab.cli.train_cmd import parse_set  # one parser for --set in every command


def register(subparsers) -> None:
    _register_study(subparsers)
    _register_tune(subparsers)


def _base_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model name (see `cifarlab models`)")
    p.add_argument("--base", dest="base_file", metavar="CONFIG.json", help="base config values as JSON")
    p.add_argument("--set", dest="set_values", action="append", default=[], metavar="KEY=VALUE",
                   help="any TrainConfig field of the base, e.g. --set epochs=2 (repeatable)")
    p.add_argument("--train-subset", type=int, help="train on only this many images (recorded as a reduction)")
    p.add_argument("--test-subset", type=int, help="test on only this many images (recorded as a reduction)")
    p.add_argument("--out", help="output folder")


def _register_study(subparsers) -> None:
    p = subparsers.add_parser(
        "study", help="one-factor-at-a-time (or grid) hyperparameter study with tables, figures, report",
        description="Train every value of each factor around a base config, over several seeds. "
                    "Rerun the same command to continue an interrupted study.")
    _base_args(p)
    p.add_argument("--preset", help="named study: reference (five-classic-cnns §6)")
    p.add_argument("--vary", action="append", default=[], metavar="NAME=v1,v2,...",
                   help="a factor and its values, e.g. lr=1e-4,1e-3 or act=relu,tanh (repeatable)")
    p.add_argument("--only", help="keep only these factors of the preset, e.g. lr,optimizer")
    p.add_argument("--seeds", type=int, default=1, help="seeds per point (mean ± std over them)")
    p.add_argument("--grid", action="store_true", help="every combination instead of one factor at a time")
    p.add_argument("--epoch-scale", type=float, help="multiply the base epochs and the epochs factor (e.g. 0.2)")
    p.add_argument("--name", help="study name (default from the preset/model and factors)")
    p.add_argument("--report-only", action="store_true", help="rewrite tables/figures/report of --out and exit")
    p.add_argument("--quiet", action="store_true", help="one line per run instead of per-epoch progress")
    p.add_argument("--storage", help="database shared by several workers (postgresql://... across machines, "
                                     "sqlite:///FILE on one): each run is trained by exactly one of them")
    _heartbeat_arg(p, "run")
    p.set_defaults(func=run_study_cmd)


def _register_tune(subparsers) -> None:
    p = subparsers.add_parser(
        "tune", help="Optuna search (pip install 'cifarlab[tune]'); workers share one storage",
        description="Search hyperparameters with Optuna; objective = best validation accuracy.")
    _base_args(p)
    p.add_argument("--trials", type=int, required=True, help="trials run by this command (split over --workers)")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///<out>/optuna.db); "
                                     "postgresql://... to share across machines")
    p.add_argument("--study-name", help="Optuna study name (default <model>-tune)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes on the same storage")
    p.add_argument("--space", help="search space, e.g. 'lr=log:1e-4:1e-1,optimizer=sgd|adam,"
                                    "label_smoothing=0:0.2' (default: lr, optimizer, weight_decay, "
                                    "batch_size, label_smoothing, act)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed of the first worker (+i for worker i)")
    _heartbeat_arg(p, "trial")
    p.set_defaults(func=run_tune_cmd)


def _heartbeat_arg(p: argparse.ArgumentParser, what: str) -> None:
    # default None: studies.claims.HEARTBEAT_S decides (not imported here: `cifarlab --help` stays fast)
    p.add_argument("--heartbeat", type=int, metavar="S",
                   help=f"a worker marks its {what} alive every S seconds; after 3*S of silence another "
                        f"worker takes the {what} over (default 10)")


# ---------------------------------------------------------------- study
def run_study_cmd(args) -> int:
    from rich.console import Console
    from cifarlab.studies import run_study, write_report
    console = Console(stderr=True, soft_wrap=True)
    if args.report_only:
        if not args.out:
            from cifarlab.errors import ConfigError
            raise ConfigError("--report-only needs --out STUDY_FOLDER")
        print(write_report(args.out))
        return 0
    spec = spec_from_args(args)
    out = args.out or f"studies/{spec.name}"
    _keep_command(out)

    def note(i: int, n: int, run, state: str) -> None:
        said = {"skip": "already done", "resume": "resumed", "start": "trained", "diverged": "DIVERGED (recorded)",
                "elsewhere": "taken by another worker",
                "too slow": "its time budget cannot hold this model here (recorded; tried again next time)"}
        console.print(f"[{i + 1}/{n}] {run.name}: {said.get(state, state)}", highlight=False)
    try:
        result = run_study(spec, out, progress=not args.quiet, on_run=note, storage=args.storage,
                           heartbeat=args.heartbeat)
    except KeyboardInterrupt:
        console.print(f"study interrupted; run the same command again to continue ({out})")
        return 130
    done = f"{len(result.trained)} runs trained, {len(result.skipped)} already done"
    if result.elsewhere:
        done += f", {len(result.elsewhere)} by other workers"
    if result.waiting:
        console.print(f"{done}; {len(result.waiting)} still running elsewhere: the worker that finishes the "
                      f"last one writes the report (or later: --report-only --out {out})", highlight=False)
    else:
        console.print(f"{done}; report: {result.out / 'report.md'}", highlight=False)
    return 0


def spec_from_args(args):
    """The StudySpec a parsed ``cifarlab study`` command line asks for."""
    from cifarlab.studies import build_spec
    return build_spec(model=args.model, vary=args.vary, base_file=args.base_file, sets=parse_set(args.set_values),
                      seeds=args.seeds, grid=args.grid, preset=args.preset, train_subset=args.train_subset,
                      test_subset=args.test_subset, epoch_scale=args.epoch_scale, name=args.name,
                      only=[f.strip() for f in args.only.split(",")] if args.only else ())


def _keep_command(out: str) -> None:
    """The command line that started a new study folder, as typed (command.txt): the report
    shows it where the study cannot be rebuilt from study.json alone (e.g. --epoch-scale)."""
    import shlex
    import sys
    from pathlib import Path
    folder = Path(out)
    if (folder / "study.json").exists() or sys.argv[1:2] != ["study"]:
        return
    from cifarlab.atomic import atomic_write_text
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "command.txt", shlex.join(["cifarlab", *sys.argv[1:]]) + "\n")


# ---------------------------------------------------------------- tune
def run_tune_cmd(args) -> int:
    from cifarlab.training import TrainConfig
    from cifarlab.studies.tune import DEFAULT_SPACE, tune
    cfg = TrainConfig.from_json(args.base_file) if args.base_file else TrainConfig()
    cfg.override({"model": args.model} if args.model else {}).override(parse_set(args.set_values))
    cfg.override({k: v for k, v in (("train_subset", args.train_subset), ("test_subset", args.test_subset)) if v})
    cfg.progress = False  # K workers would draw K progress bars over each other
    out = args.out or f"tune/{args.study_name or cfg.model + '-tune'}"
    summary = tune(cfg.to_dict(), args.trials, out=out, storage=args.storage, study_name=args.study_name,
                   workers=args.workers, space=args.space or DEFAULT_SPACE, seed=args.seed,
                   heartbeat=args.heartbeat)
    print(json.dumps(summary, indent=2))
    return 0
