"""``cifarlab train``, ``cifarlab evaluate`` and ``cifarlab predict``: thin faces over cifarlab.training and cifarlab.inference.

``train --nproc N`` trains data-parallel in N processes on this machine; under ``torchrun``
(one or several machines) each process runs this same command. ``predict --out FILE.csv``
classifies a folder tree into a CSV, streaming and resumable.

Config precedence for ``train``: defaults < ``--recipe`` < ``--config file.json`` <
explicit flags < ``--set KEY=VALUE``. Only flags the user typed override anything
(argparse defaults are suppressed), so ``--recipe reference --epochs 3`` keeps the
recipe's other values.
"""

from __future__ import annotations

import argparse
import json
import sys

from cifarlab.cli._help import Defaults

S = argparse.SUPPRESS

_UNITS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """``"300"``, ``"300s"``, ``"5min"``, ``"1.5h"`` -> seconds."""
    import re
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-z]*)\s*", text.lower())
    if not match or match.group(2) not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; use seconds or a unit: 300, 300s, 5min, 1.5h")
    return float(match.group(1)) * _UNITS[match.group(2)]


# (flag, config key, type, help); type None means a --flag/--no-flag switch
_FLAGS = [
    ("--model", "model", str, "model name (see `cifarlab models`); 'default' = the architecture of the shipped "
                              "default model"),
    ("--epochs", "epochs", int, "passes over the training split"),
    ("--time-budget", "time_budget", parse_duration,
     "wall time for the whole run (e.g. 5min, 300): times a few steps, then plans the epochs to fit; "
     "0 = --epochs as given"),
    ("--batch-size", "batch_size", int, "images per optimizer step"),
    ("--seed", "seed", int, "seed for init, val split, shuffling, augmentation"),
    ("--optimizer", "optimizer", str, "sgd | muon (conv filters; the rest sgd) | adam | adamw | rmsprop | "
                                      "adagrad | adadelta"),
    ("--lr", "lr", float, "peak learning rate"),
    ("--muon-lr", "muon_lr", float, "muon: the conv filters' peak learning rate"),
    ("--muon-lr-short", "muon_lr_short", float,
     "muon: the filters' peak lr where a time budget plans 1,000 steps or fewer (0: --muon-lr)"),
    ("--muon-momentum", "muon_momentum", float, "muon: the conv filters' momentum"),
    ("--momentum", "momentum", float, "sgd/rmsprop momentum, beta1 of adam(w)"),
    ("--weight-decay", "weight_decay", float, "L2 coefficient (decoupled for adamw)"),
    ("--loss", "loss", str, "ce | bce (softmax + binary CE, Keras-style) | mse (on softmax)"),
    ("--label-smoothing", "label_smoothing", float, "ce only"),
    ("--schedule", "schedule", str, "constant | step | cosine | onecycle | plateau"),
    ("--milestones", "milestones", str, "step schedule: epochs, e.g. 100,200"),
    ("--gamma", "gamma", float, "step schedule: lr multiplier per milestone"),
    ("--augment", "augment", str, "augmentation spec, e.g. crop:4,flip or none"),
    ("--grayscale", "grayscale", int, "1 or 3: train on luminance with 1 or 3 channels"),
    ("--data", "data", str, "CIFAR-10 archive or folder (default $CIFARLAB_DATA, then the cache)"),
    ("--val", "val", int, "validation images carved from train (0 = none)"),
    ("--train-subset", "train_subset", int, "train on only this many images"),
    ("--test-subset", "test_subset", int, "test on only this many images"),
    ("--early-stop", "early_stop", None, "stop when val_loss stalls (see --set early_patience=N)"),
    ("--device", "device", str, "auto | cpu | cuda | mps"),
    ("--amp", "amp", None, "bf16 autocast where native: cuda, CPUs with AVX512-BF16/AMX"),
    ("--amp-eval", "amp_eval", None, "with --amp, evaluate in bf16 too (a CPU evaluates in float32 otherwise)"),
    ("--channels-last", "channels_last", None, "NHWC memory format"),
    ("--compile", "compile", None, "torch.compile the model"),
    ("--runs-dir", "runs_dir", str, "parent folder of run folders (default runs)"),
    ("--name", "name", str, "run folder name (default <model>-<time>)"),
    ("--tensorboard", "tensorboard", None, "TensorBoard events under tb/ when installed"),
    ("--plots", "plots", None, "curves.png and confusion.png"),
    ("--progress", "progress", None, "live progress on the terminal"),
]


def register(subparsers) -> None:
    _register_train(subparsers)
    _register_evaluate(subparsers)
    _register_predict(subparsers)


def _register_train(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a model; writes a run folder under runs/ (no flags: the 5-minute main job)",
        description="Train a model. With no flags, the main job, the same as `make train`: --recipe "
                    f"{MAIN_JOB['cpu']} on a CPU (5 minutes), --recipe {MAIN_JOB['gpu']} on a GPU. Otherwise "
                    "precedence: the defaults shown < --recipe < --config < flags < --set. A --time-budget (or a "
                    "recipe's) is a promise: a run that cannot end inside it is refused before it starts, "
                    "unless --allow-over-budget.")
    p.add_argument("--recipe", default=S, help="named preset (`--list-recipes`); default: the main job with no "
                                                "other flags, else none")
    p.add_argument("--config", dest="config_file", default=S, metavar="FILE.json", help="config values as JSON")
    p.add_argument("--set", dest="set_values", action="append", default=S, metavar="KEY=VALUE",
                   help="any TrainConfig field, e.g. --set plateau_patience=4 (repeatable)")
    p.add_argument("--resume", default=S, metavar="RUN_DIR", help="continue a run from its last.pt")
    p.add_argument("--list-recipes", action="store_true", default=S, help="print the recipes and exit")
    p.add_argument("--act", default=S, help="activation passed to the model (model_kwargs act), e.g. gelu")
    p.add_argument("--nproc", type=int, default=S, metavar="N",
                   help="data-parallel processes on this machine (one per GPU, or CPU processes with gloo); "
                        "--batch-size stays the global batch. Several machines: torchrun ... -m cifarlab train")
    p.add_argument("--sync-bn", dest="sync_bn", action=argparse.BooleanOptionalAction, default=S,
                   help="multi-process on CUDA: BatchNorm statistics over the global batch")
    p.add_argument("--allow-over-budget", action="store_true", default=S,
                   help="train even where the plan cannot end inside the time budget (default: refuse)")
    p.add_argument("--verbose", action="store_true", default=S, help="with --list-recipes: every setting")
    p.add_argument("--json", action="store_true", default=S,
                   help="end with the result as one JSON line instead of a sentence")
    from cifarlab.training.config import TrainConfig
    defaults = TrainConfig()
    for flag, key, kind, text in _FLAGS:
        shown = _shown(getattr(defaults, key))
        text = (f"{text} (if not given: the recipe's, else {shown})" if key == "model"
                else f"{text} (default: {shown})")
        if kind is None:
            p.add_argument(flag, dest=key, action=argparse.BooleanOptionalAction, default=S, help=text)
        else:
            p.add_argument(flag, dest=key, type=_finite(kind), default=S, help=text)
    p.set_defaults(func=run_train)


def _shown(value) -> str:
    """A default as the help shows it ("%" escaped for argparse)."""
    text = "none" if value in (None, "") else str(value)
    return text.replace("%", "%%")


def _finite(kind):
    """``kind`` for argparse, refusing nan and inf where it is float."""
    if kind is not float:
        return kind

    def parse(text: str) -> float:
        import math
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        return value
    parse.__name__ = "float"
    return parse


def _register_evaluate(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="top-1/top-5/per-class accuracy of a trained model",
                              formatter_class=Defaults)
    p.add_argument("checkpoint", metavar="MODEL",
                   help="'default' (the shipped model), a run's name or id, a run folder (its best.pt) or a .pt file")
    p.add_argument("--tta", nargs="?", const="flip", default=None, choices=["flip", "flip-translate"],
                   help="average logits over flipped (and 1-pixel shifted) views")
    p.add_argument("--data", default=None, help="data source (default: the one the run used)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--out", default=None, help="folder for confusion.png/csv (default: beside the checkpoint)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--calibrate", action="store_true",
                   help="fit the temperature on the validation split and store it (in the checkpoint; for the "
                        "shipped model in a sidecar .calibration.json beside it)")
    p.add_argument("--corruptions", nargs="?", const="default", default=None, metavar="KINDS",
                   help="also classify corrupted copies of the test split (CIFAR-10-C kinds x severities): "
                        "'default' (10 kinds), 'all', or a comma list such as fog,contrast")
    p.add_argument("--severities", default="1,2,3,4,5", help="with --corruptions: which severities (1..5)")
    p.add_argument("--limit", type=int, default=None, help="with --corruptions: only the first N test pictures")
    p.add_argument("--seed", type=int, default=0, help="with --corruptions: the noise seed")
    p.add_argument("--precision", default="auto", choices=["auto", "float32"],
                   help="with --corruptions: auto = bf16 where the CPU or GPU computes it natively (about 2x "
                        "faster there), else float32; float32 = as a run's stated accuracy is measured")
    p.set_defaults(func=run_evaluate)


def _register_predict(subparsers) -> None:
    p = subparsers.add_parser("predict", help="classify pictures (any size and mode) with a trained model",
                              formatter_class=Defaults)
    p.add_argument("checkpoint", metavar="MODEL",
                   help="'default' (the shipped model), a run's name or id (`cifarlab runs`), a run folder (its "
                        "best.pt), or a .pt or .onnx file")
    p.add_argument("images", nargs="+", metavar="IMAGE|FOLDER")
    p.add_argument("--top-k", type=int, default=3, help="classes shown per picture")
    p.add_argument("--json", action="store_true", help="one JSON object per picture, one per line")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    p.add_argument("--out", default=None, metavar="FILE.csv",
                   help="classify one FOLDER tree into this CSV (path, class, probability, top_k), streaming")
    p.add_argument("--resume", action="store_true", help="with --out: keep the CSV's rows, do the rest")
    p.add_argument("--overwrite", action="store_true", help="with --out: start the CSV afresh")
    p.add_argument("--batch-size", type=int, default=256, help="pictures per forward pass")
    p.add_argument("--raw-probs", action="store_true",
                   help="the model's own softmax, not the temperature-scaled (calibrated) probabilities")
    p.add_argument("--explain", default=None, metavar="FOLDER",
                   help="write a Grad-CAM overlay PNG per picture into FOLDER (why this class?)")
    p.add_argument("--explain-method", default="gradcam", choices=["gradcam", "gradcam++"])
    p.set_defaults(func=run_predict)


# ---------------------------------------------------------------- train
def config_from_args(args: argparse.Namespace):
    """The TrainConfig the flags describe: ``training.recipes.resolve_config`` of the recipe,
    file, flags and --set the user typed (argparse defaults are suppressed)."""
    from pathlib import Path

    from cifarlab.training.recipes import resolve_config
    from cifarlab.errors import ConfigError
    given = vars(args)
    flags = {key: given[key] for _, key, _, _ in _FLAGS if key in given}
    if "act" in given:
        flags["model_kwargs"] = {"act": given["act"]}
    file = given.get("config_file")
    if file is not None and not Path(file).is_file():
        raise ConfigError(f"--config {file}: {'a folder' if Path(file).is_dir() else 'no such file'}; "
                          f"give a JSON file of config values")
    recipe = given.get("recipe")
    if recipe is None and file is None and "set_values" not in given and "act" not in given \
            and set(flags) <= _NOT_THE_JOB:
        recipe = main_job_recipe()  # `cifarlab train` alone: the main job, as `make train`
    cfg = resolve_config(recipe=recipe, file=file, flags=flags, sets=parse_set(given.get("set_values", [])))
    check_numbers(cfg)
    return cfg


# flags that change where and how a run is shown, not what it trains: alone they keep the main job
_NOT_THE_JOB = {"data", "runs_dir", "name", "progress", "tensorboard", "plots", "device", "seed"}
MAIN_JOB = {"cpu": "cpu-5min", "gpu": "fast"}


def main_job_recipe(device: str | None = None) -> str:
    """The recipe of `make train` on this machine: the GPU one where CUDA is there, else the 5-minute CPU one."""
    if device is None or device == "auto":
        import torch
        return MAIN_JOB["gpu"] if torch.cuda.is_available() else MAIN_JOB["cpu"]
    return MAIN_JOB["gpu"] if str(device).startswith("cuda") else MAIN_JOB["cpu"]


def check_numbers(cfg) -> None:
    """Every number of the config finite and not negative (no setting has a meaning below 0),
    before any work starts: ``--set lr=nan`` and ``--train-subset -3`` included."""
    import dataclasses
    import math

    from cifarlab.errors import ConfigError
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name} = {value}: give a finite number")
        if value < 0:
            raise ConfigError(f"{f.name} = {value}: must be 0 or more")


def parse_set(items: list[str]) -> dict:
    """``--set KEY=VALUE`` items as a dict of strings (``batch-size`` means ``batch_size``);
    TrainConfig parses each value with its field's type."""
    from cifarlab.errors import ConfigError
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r} must look like KEY=VALUE")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def run_train(args: argparse.Namespace) -> int:
    from cifarlab.training import record
    from cifarlab.training.api import TrainingInterrupted, resume, train
    if "list_recipes" in vars(args):
        try:
            return _print_recipes(verbose="verbose" in vars(args))
        except BrokenPipeError:  # `--list-recipes --verbose | head`: the reader left
            from cifarlab.cli._help import reader_left
            reader_left()
            return 0
    nproc = vars(args).get("nproc", 1)
    sync_bn = vars(args).get("sync_bn")
    recording = record.recorder()  # every run started here is recorded in the run registry
    try:
        if "resume" in vars(args):
            result = _start(nproc, resume, args.resume, **_resume_options(args), sync_bn=sync_bn, callbacks=recording)
        else:
            result = _start(nproc, train, config_from_args(args), sync_bn=bool(sync_bn), callbacks=recording,
                            allow_over_budget="allow_over_budget" in vars(args))
    except TrainingInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    if not result.summary:  # a torchrun rank other than 0: rank 0 reports
        return 0
    if "json" in vars(args):
        print(json.dumps({"run_dir": str(result.run_dir), "test": {k: v for k, v in result.summary["test"].items()
                                                                if k != "per_class"}}))
    else:
        print(last_line(result.summary))
    return 0


def last_line(summary: dict) -> str:
    """The sentence a training ends with: accuracy, time, and what to do with the run."""
    from pathlib import Path

    from cifarlab.training.budget import duration
    test, run = summary.get("test") or {}, summary["run_dir"]
    epochs = summary.get("epochs_run", 0)
    took = summary.get("wall_time_s") or summary.get("training_time_s") or 0
    trained = f"Trained {summary['model']} for {epochs} epoch{'' if epochs == 1 else 's'} in {duration(took)}"
    try:
        subset = json.loads((Path(run) / "config.json").read_text()).get("train_subset")
    except (OSError, ValueError):
        subset = None
    if test.get("top1") is not None:
        acc = f"test accuracy {test['top1']:.2%} on {test.get('n', 0):,} images"
        if subset:
            acc += f" (trained on a subset of {subset:,} images: not the model's accuracy)"
    else:
        acc = "no test split"
    return (f"{trained}: {acc}. Saved in {run}; try it with `cifarlab predict {run} PICTURE`, or see it beside "
            f"the others with `cifarlab runs`.")


def _start(nproc: int, fn, *args, **kwargs):
    """``fn`` here, or in ``nproc`` data-parallel processes."""
    if nproc == 1:
        return fn(*args, **kwargs)
    from cifarlab.training.distributed import launch
    return launch(nproc, fn, *args, **kwargs)


def _resume_options(args: argparse.Namespace) -> dict:
    from cifarlab.errors import ConfigError
    given = set(vars(args)) - {"command", "func", "resume", "nproc", "sync_bn"}
    extra = given - {"epochs", "progress"}
    if extra:
        names = ", ".join("--" + k.replace("_", "-") for k in sorted(extra))
        raise ConfigError(f"--resume continues with the run's own config; only --epochs may change (got {names})")
    return {"epochs": getattr(args, "epochs", None), "progress": getattr(args, "progress", None)}


def _print_recipes(verbose: bool = False) -> int:
    """One line per recipe, cut to the terminal's width (all of it with ``--verbose``)."""
    import shutil

    from cifarlab import results
    from cifarlab.training.recipes import list_recipes, recipe_config
    from cifarlab.zoo import plain_words
    width = shutil.get_terminal_size((80, 24)).columns
    for name, text in list_recipes().items():
        figure = results.recipe_figure(name, recipe_config(name).to_dict())  # results/cpu_frontier.csv
        text = plain_words(text)
        if verbose:
            measured = f" [measured: {results.describe(figure)}]" if figure else ""
            print(f"{name:16s} {text}{measured}\n")
            continue
        short = text.split(": ")[0] if ": " in text[:60] else text
        measured = f" [measured {results.format_accuracy(figure)}]" if figure else ""
        room = max(10, width - 17 - len(measured))  # the description gives way, never the figure
        print(f"{name:16s} {short if len(short) <= room else short[:room - 1] + '…'}{measured}")
    if not verbose:
        print("Every setting of each: cifarlab train --list-recipes --verbose")
    return 0


# ---------------------------------------------------------------- evaluate
def run_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cifarlab.training.evaluation import evaluate, write_confusion
    from cifarlab.resolve import resolve
    found = resolve(args.checkpoint)
    result = evaluate(found.path, data=args.data, tta=args.tta or False, split=args.split, device=args.device)
    # beside a run's checkpoint; the shipped model's folder is the installed package: none unless --out
    out_dir = Path(args.out) if args.out else (None if found.source == "shipped" else found.path.parent)
    stem = f"confusion-{args.split}" + (f"-tta-{args.tta}" if args.tta else "")
    written = write_confusion(result, out_dir, stem) if out_dir is not None else []
    from cifarlab.cli.evaluate_extras import evaluate_extras, print_extras
    extras = evaluate_extras(args, result, out_dir)  # calibration, corruptions, model card
    if args.json:
        print(json.dumps({**{k: v for k, v in result.items() if k != "confusion"}, **extras}, indent=2))
    else:
        _print_evaluation(result, written)
        print_extras(extras)
    return 0


def _print_evaluation(result: dict, written) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"{result['model']} on {result['split']} (n={result['n']}, tta={result['tta']})")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for name, acc in result["per_class"].items():
        table.add_row(name, "-" if acc is None else f"{acc:.2%}")
    table.add_section()
    table.add_row("top-1", f"{result['top1']:.2%}")
    table.add_row("top-5", f"{result['top5']:.2%}")
    if "binary_accuracy" in result:
        table.add_row("binary_accuracy", f"{result['binary_accuracy']:.2%}")
    console = Console(soft_wrap=True)
    console.print(table)
    where = (", ".join(str(p) for p in written) if written
             else "not written (the shipped model's folder is the installed package; add --out FOLDER)")
    console.print(f"top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  | confusion matrix: {where}",
                  highlight=False)


# ---------------------------------------------------------------- predict
def run_predict(args: argparse.Namespace) -> int:
    from cifarlab.inference.predict import Predictor
    from cifarlab.errors import ConfigError
    if args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k} must be >= 1")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be >= 1 (pictures per forward pass)")
    if args.out:
        return _predict_to_csv(args)
    predictor = Predictor(_model_path(args.checkpoint), device=args.device, raw_probs=args.raw_probs)
    results = predictor.predict(args.images, top_k=args.top_k, on_error="report")
    if args.explain:
        from cifarlab.cli.evaluate_extras import write_explanations
        write_explanations(predictor, results, args.explain, args.explain_method)
    if not results:
        raise ConfigError("no pictures found in " + " ".join(args.images))
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            print(f"cifarlab: error: {r.error}", file=sys.stderr)
        elif args.json:
            print(json.dumps(r.to_dict()))
        else:
            print(f"{r.source}: {r.label}  " + "  ".join(f"{c} {p:.3f}" for c, p in r.top))
    return 1 if failed else 0


def _model_path(name_or_path: str):
    """The checkpoint a model reference names (cifarlab.resolve: 'default', run names and ids, paths)."""
    from cifarlab.resolve import resolve_path
    return resolve_path(name_or_path)


def _predict_to_csv(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cifarlab.inference.batch_predict import predict_folder
    from cifarlab.inference.predict import Predictor
    from cifarlab.errors import ConfigError
    if len(args.images) != 1 or not Path(args.images[0]).is_dir():
        raise ConfigError("--out classifies one FOLDER tree: pass exactly one folder")
    if args.resume and args.overwrite:
        raise ConfigError("--resume keeps the CSV and --overwrite replaces it: pick one")
    out = Path(args.out)
    if out.exists() and out.stat().st_size and not (args.resume or args.overwrite):
        raise ConfigError(f"{out} exists; add --resume to finish it or --overwrite to start again")
    predictor = Predictor(_model_path(args.checkpoint), device=args.device, raw_probs=args.raw_probs)
    with _CsvProgress() as progress:
        report = predict_folder(predictor, args.images[0], out, args.top_k, args.batch_size,
                                resume=args.resume, on_batch=progress.update)
    print(f"{report.written} rows written to {out} ({report.already} already there, {report.total} pictures"
          + (f"; {len(report.failed)} unreadable, skipped: listed above)" if report.failed else ")"),
          file=sys.stderr)
    return 1 if report.failed else 0


class _CsvProgress:
    """A rich bar on stderr while the CSV fills; each unreadable file as its own line."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        self.console = Console(stderr=True, soft_wrap=True)
        self.progress = Progress(TextColumn("classifying"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=self.console, transient=True)
        self.task = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def update(self, report, predictions) -> None:
        if self.task is None:
            self.task = self.progress.add_task("predict", total=report.total, completed=report.already)
        for p in predictions:
            if p.error:
                self.console.print(f"cifarlab: error: {p.error}", highlight=False, markup=False)
        self.progress.advance(self.task, len(predictions))
