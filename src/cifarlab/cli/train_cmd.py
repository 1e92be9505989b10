"""``cifarlab train``, ``cifarlab evaluate`` and ``cifarlab predict``: thin faces over the engine.

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
    ("--model", "model", str, "model name (see `cifarlab models`); 'default' = resnet20"),
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
    p = subparsers.add_parser("train", help="train a model; writes a run folder under runs/",
                              description="Train a model. Precedence: defaults < --recipe < --config < flags < --set.")
    p.add_argument("--recipe", default=S, help="named preset: default, reference, keras-inception, ...")
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
    for flag, key, kind, text in _FLAGS:
        if kind is None:
            p.add_argument(flag, dest=key, action=argparse.BooleanOptionalAction, default=S, help=text)
        else:
            p.add_argument(flag, dest=key, type=kind, default=S, help=text)
    p.set_defaults(func=run_train)


def _register_evaluate(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="top-1/top-5/per-class accuracy of a checkpoint")
    p.add_argument("checkpoint", metavar="RUN|CHECKPOINT", help="run folder (uses best.pt) or .pt file")
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
    p.set_defaults(func=run_evaluate)


def _register_predict(subparsers) -> None:
    p = subparsers.add_parser("predict", help="classify pictures (any size and mode) with a checkpoint")
    p.add_argument("checkpoint", metavar="MODEL",
                   help="run folder (uses best.pt), .pt or .onnx file, or a model name: 'default' (shipped) "
                        "or a finished run's name (see `cifarlab serve`'s list)")
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
    """The TrainConfig the flags describe: ``engine.recipes.resolve_config`` of the recipe,
    file, flags and --set the user typed (argparse defaults are suppressed)."""
    from cifarlab.engine.recipes import resolve_config
    given = vars(args)
    flags = {key: given[key] for _, key, _, _ in _FLAGS if key in given}
    if "act" in given:
        flags["model_kwargs"] = {"act": given["act"]}
    return resolve_config(recipe=given.get("recipe"), file=given.get("config_file"), flags=flags,
                          sets=parse_set(given.get("set_values", [])))


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
    from cifarlab import runlog
    from cifarlab.engine.api import TrainingInterrupted, resume, train
    if "list_recipes" in vars(args):
        return _print_recipes()
    nproc = vars(args).get("nproc", 1)
    sync_bn = vars(args).get("sync_bn")
    record = runlog.recorder()  # every run started here is recorded in the run registry
    try:
        if "resume" in vars(args):
            result = _start(nproc, resume, args.resume, **_resume_options(args), sync_bn=sync_bn, callbacks=record)
        else:
            result = _start(nproc, train, config_from_args(args), sync_bn=bool(sync_bn), callbacks=record)
    except TrainingInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    if not result.summary:  # a torchrun rank other than 0: rank 0 reports
        return 0
    print(json.dumps({"run_dir": str(result.run_dir), "test": {k: v for k, v in result.summary["test"].items()
                                                            if k != "per_class"}}))
    return 0


def _start(nproc: int, fn, *args, **kwargs):
    """``fn`` here, or in ``nproc`` data-parallel processes."""
    if nproc == 1:
        return fn(*args, **kwargs)
    from cifarlab.engine.distributed import launch
    return launch(nproc, fn, *args, **kwargs)


def _resume_options(args: argparse.Namespace) -> dict:
    from cifarlab.errors import ConfigError
    given = set(vars(args)) - {"command", "func", "resume", "nproc", "sync_bn"}
    extra = given - {"epochs", "progress"}
    if extra:
        names = ", ".join("--" + k.replace("_", "-") for k in sorted(extra))
        raise ConfigError(f"--resume continues with the run's own config; only --epochs may change (got {names})")
    return {"epochs": getattr(args, "epochs", None), "progress": getattr(args, "progress", None)}


def _print_recipes() -> int:
    from cifarlab import results
    from cifarlab.engine.recipes import list_recipes, recipe_config
    for name, text in list_recipes().items():
        figure = results.recipe_figure(name, recipe_config(name).to_dict())  # results/cpu_frontier.csv
        measured = f" [measured: {results.describe(figure)}]" if figure else ""
        print(f"{name:16s} {text}{measured}")
    return 0


# ---------------------------------------------------------------- evaluate
def run_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cifarlab.engine.checkpoint import resolve_checkpoint
    from cifarlab.engine.evaluate import evaluate, write_confusion
    result = evaluate(args.checkpoint, data=args.data, tta=args.tta or False, split=args.split, device=args.device)
    out_dir = Path(args.out) if args.out else resolve_checkpoint(args.checkpoint).parent
    stem = f"confusion-{args.split}" + (f"-tta-{args.tta}" if args.tta else "")
    written = write_confusion(result, out_dir, stem)
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
    console.print(f"top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  | confusion matrix: "
                  + ", ".join(str(p) for p in written), highlight=False)


# ---------------------------------------------------------------- predict
def run_predict(args: argparse.Namespace) -> int:
    from cifarlab.engine.predict import Predictor
    from cifarlab.errors import ConfigError
    if args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k} must be >= 1")
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
    """A checkpoint path as given, else the catalogue entry of that name (e.g. 'default')."""
    from pathlib import Path

    from cifarlab.catalog import Catalog
    from cifarlab.errors import ModelError
    if Path(name_or_path).exists():
        return name_or_path
    try:
        return Catalog().resolve(name_or_path).path
    except ModelError as exc:
        raise ModelError(f"{name_or_path} is not a checkpoint file or run folder, nor a model name: {exc}") from None


def _predict_to_csv(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cifarlab.engine.batch_predict import predict_folder
    from cifarlab.engine.predict import Predictor
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
