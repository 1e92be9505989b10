"""Package a finished run as a model shipped inside the package (src/cifarlab/assets/NAME.pt).

    CIFARLAB_DATA=/path/to/cifar10 .venv/bin/python scripts/package_model.py runs/<run> --name lenet5

``--name default`` (the default) replaces the default model; any other name adds a model
that `cifarlab predict NAME`, the web page and the desktop app offer beside it. In order:

1. the slim checkpoint (weights, model spec, classes, normalization, config and plan, the test
   accuracy, provenance with the data file's sha256; int8 weights with a float32 scale per
   output channel unless ``--weights`` says otherwise) is written to a temporary file, and a
   file over 2 MiB is refused (the repository's limit on a tracked file);
2. its single-view test accuracy (as ``predict`` and the apps classify) is re-measured from
   the written file on the run's own data and split (its logits, which also serve step 3: one
   pass over the test split); a change beyond ``--tolerance`` from the
   run's own single-view figure is refused (a file that does not rebuild the model it claims;
   int8 rounding moves a few borderline pictures of a weak model either way, so the default
   allows 0.5 points), else the file states what it measures itself;
3. the temperature is fitted on the written file (``scripts/calibrate_shipped.py``: on the
   run's validation split when it kept one, else cross-fitted on the test split) and kept in
   ``NAME.calibration.json`` beside it, never in it;
4. the file replaces ``NAME.pt``; one row goes to ``results/shipped_models.csv`` with this
   command, the numbers and the machine the run trained on, and one to
   ``results/calibration.csv`` (ECE before and after, which the model card shows).

Nothing is left behind when a step refuses: the model shipped before stays as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "cifarlab" / "assets"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
WEIGHTS_WORDS = {"int8": "int8, one float32 scale per output channel", "float16": "float16", "float32": "float32"}


class Refused(Exception):
    """One line for the user; the script exits 1."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a finished run folder (its summary.json names the checkpoint)")
    p.add_argument("--name", default="default",
                   help="the shipped name: default replaces the default model (default: default)")
    p.add_argument("--out", type=Path, default=None, help="the file to write (default: src/cifarlab/assets/NAME.pt)")
    p.add_argument("--weights", choices=["int8", "float16", "float32"], default="int8",
                   help="stored weight format: int8 (a float32 scale per output channel) quarters float32's size")
    p.add_argument("--data", default=None, help="data file to hash and test on (default: the one the run used)")
    p.add_argument("--tolerance", type=float, default=0.005,
                   help="allowed single-view test top-1 change from packaging (0.005 = 50 of 10,000); the file "
                        "states what it measures itself, so this only catches a damaged file (default: 0.005)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cross-fitting halves (runs without validation)")
    p.add_argument("--note", default="", help="a note for the results row")
    p.add_argument("--no-results", dest="results", action="store_false",
                   help="append no row to results/shipped_models.csv")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from cifarlab.errors import CifarlabError
    try:
        return package(args, argv)
    except (Refused, CifarlabError) as exc:
        print(f"package_model: error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1


def _checked_run(run_dir: Path) -> tuple[dict, dict]:
    """The run's summary and config; a folder that is not a finished run is refused."""
    if not run_dir.is_dir():
        raise Refused(f"{run_dir} is not a run folder")
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        raise Refused(f"{run_dir} has no readable summary.json: the run has not finished; let it finish, "
                      f"then package it") from None
    if not isinstance(summary, dict) or "top1" not in (summary.get("test") or {}) or not summary.get("selection"):
        raise Refused(f"{run_dir}/summary.json has no test accuracy: the run has not finished; let it finish")
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        raise Refused(f"{run_dir} has no readable config.json; is it a cifarlab run folder?") from None
    return summary, config


def package(args: argparse.Namespace, argv: list[str] | None) -> int:
    from cifarlab.catalog import MAX_SHIPPED_BYTES, package_run
    from cifarlab.errors import CifarlabError
    from cifarlab.inference.checkpoint import load_checkpoint
    if not NAME.match(args.name):
        raise Refused(f"--name {args.name!r} must be a plain name (lowercase letters, digits, - and _), "
                      f"e.g. lenet5")
    summary, config = _checked_run(args.run_dir)
    data_file = args.data or config.get("data") or os.environ.get("CIFARLAB_DATA")
    if not data_file:
        raise Refused("the run names no data file; give --data or set CIFARLAB_DATA to the CIFAR-10 copy it "
                      "trained on")
    out = (args.out or ASSETS / f"{args.name}.pt").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".packaging-", dir=out.parent))  # same disk: the final move is atomic
    try:
        tmp = work / out.name  # the sidecar is tied to the bytes, not the name: fitted here, moved with it
        # 1. the slim file (refused over 2 MiB by package_run)
        try:
            meta = package_run(args.run_dir, tmp, data_file=data_file, weights=args.weights, keep_calibration=False)
        except CifarlabError as exc:
            raise Refused(str(exc).replace(str(tmp), str(out))) from None
        load_checkpoint(tmp)  # the loader every face uses (weights_only=True) must read it
        print(f"wrote {meta['bytes'] / 2**20:.2f} MiB (limit {MAX_SHIPPED_BYTES / 2**20:g} MiB), "
              f"{meta['weights_dtype']} weights, {meta['parameters']:,} parameters")
        # 2. single-view accuracy, re-measured from the written file on the run's own split
        from cifarlab.training import evaluate
        from cifarlab.training.config import TrainConfig
        from cifarlab.training.dataset import data_for
        data = data_for(TrainConfig.from_dict(config).override({"data": str(data_file)}), progress=False)
        run_test = summary["test"]
        if run_test.get("tta", "none") != "none":
            plain = evaluate(args.run_dir / summary["selection"]["checkpoint"], data=data)
            print(f"the run was tested with {run_test['tta']} TTA ({run_test['top1']:.4f}); "
                  f"single view, as the apps predict: {plain['top1']:.4f}")
        else:
            plain = run_test
        # the written file's logits on the test split (single view) give its accuracy, and with
        # those on the validation split its temperature: one pass over each split
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from calibrate_shipped import measure
        cal = measure(tmp, data, seed=args.seed)
        measured = {"n": cal["n_test"], "top1": cal["accuracy"], "top5": cal["top5"]}
        if TrainConfig.from_dict(config).loss == "ce":
            measured["loss"] = cal["raw"]["nll"]
        print(f"re-measured from the written file: test top-1 {measured['top1']:.4f} top-5 {measured['top5']:.4f} "
              f"(n={measured['n']}; {measured['top1'] - plain['top1']:+.4f} from the run's single view)")
        if measured["n"] != plain.get("n", measured["n"]):
            raise Refused(f"the data has {measured['n']} test pictures, the run was tested on {plain['n']}; "
                          f"give --data the copy it trained on")
        if abs(measured["top1"] - plain["top1"]) > args.tolerance:
            raise Refused(f"packaging changed the test accuracy ({plain['top1']:.4f} -> {measured['top1']:.4f}, "
                          f"more than --tolerance {args.tolerance:g}); nothing was written")
        meta = package_run(args.run_dir, tmp, data_file=data_file, test=measured, weights=args.weights,
                           keep_calibration=False)  # states what the written file measures; the same weights
        # 4. in place, with its sidecar and its results row
        os.replace(tmp, out)
        from cifarlab.calibration import write_sidecar
        side = write_sidecar(out, {"temperature": cal["temperature"], "fitted_on": cal["fitted_on"],
                                   "n": cal["n_fit"], "seed": args.seed})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{out}: {meta['description']}")
    print(f"temperature {cal['temperature']:.4f} (fitted on {cal['fitted_on']}, n={cal['n_fit']}); test ECE "
          f"{cal['raw']['ece']:.2%} -> {cal['after']['ece']:.2%}; wrote {side.name}")
    if args.results:
        row = results_row(args, argv, summary, config, meta, measured, plain, cal, out)
        from cifarlab import results
        print(f"row appended to {results.append_row('shipped_models', row)}")
        from calibrate_shipped import record  # the model card reads ECE before/after from here, by SHA-256
        print(f"row appended to {record(cal, {'path': str(out), 'model': meta['model']}, row['command'])}")
    return 0


def results_row(args, argv, summary, config, meta, measured, plain, cal, out: Path) -> dict:
    """The results/shipped_models.csv row: the machine the run trained on, the exact command."""
    hw = summary.get("hardware") or {}
    try:
        shown = out.relative_to(ROOT)
    except ValueError:
        shown = out
    budget = (summary.get("time_budget") or {}).get("budget_s") or config.get("time_budget") or None
    command = ["python", "scripts/package_model.py", *(sys.argv[1:] if argv is None else argv)]
    env = f" (CIFARLAB_DATA={os.environ['CIFARLAB_DATA']})" if "CIFARLAB_DATA" in os.environ and not args.data else ""
    tested = summary["test"]
    note = args.note or (f"the run's own test: {100 * tested['top1']:.2f}% with {tested['tta']} TTA, "
                         f"{100 * plain['top1']:.2f}% single view" if tested.get("tta", "none") != "none" else "")
    return {
        "machine": hw.get("device_name") or hw.get("cpu"), "cores": hw.get("cores"), "bf16": hw.get("bf16_native"),
        "command": shlex.join(command) + env, "seed": config.get("seed"),
        "recipe": config.get("recipe") or "", "model": meta["model"]["name"], "file": str(shown),
        "weights": WEIGHTS_WORDS[meta["weights_dtype"]], "test_top1_pct": round(100 * measured["top1"], 2),
        "test_top5_pct": round(100 * measured["top5"], 2), "tta": "none", "wall_s": summary.get("wall_time_s"),
        "note": note, "name": out.stem, "run": str(args.run_dir), "budget_s": budget,
        "epochs": summary.get("epochs_run"), "bytes": meta["bytes"], "parameters": meta["parameters"],
        "temperature": round(cal["temperature"], 4), "fitted_on": cal["fitted_on"], "n_fit": cal["n_fit"],
        "ece_raw_pct": round(100 * cal["raw"]["ece"], 2), "ece_after_pct": round(100 * cal["after"]["ece"], 2),
        "nll_raw": round(cal["raw"]["nll"], 4), "nll_after": round(cal["after"]["nll"], 4),
    }


if __name__ == "__main__":
    raise SystemExit(main())
