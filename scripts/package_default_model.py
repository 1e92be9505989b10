"""Package a finished run as the shipped default model (src/cifarlab/assets/default.pt).

    .venv/bin/python scripts/package_default_model.py /tmp/default_model/runs/resnet20-default

Writes the slim checkpoint (weights, model spec, classes, normalization, config, the test
accuracy from summary.json -- single view, re-measured, when the run was tested with TTA --,
provenance with the data file's sha256) in the current format,
which loads with ``torch.load(weights_only=True)``, then re-measures its
test accuracy from the written file on the run's own data and refuses to keep it if the
numbers differ by more than ``--tolerance`` (fp16 or int8 rounding, or a file that does not rebuild
the model it claims). Within it, the file then states what it measures itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cifarlab.catalog import package_run

ASSET = Path(__file__).resolve().parents[1] / "src" / "cifarlab" / "assets" / "default.pt"


def _single_view_test(run_dir: Path, data) -> dict | None:
    """The run's test metrics without test-time augmentation (what Predictor and the apps
    give), measured when the run was tested with TTA; None keeps summary.json's."""
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary["test"].get("tta", "none") == "none":
        return None
    from cifarlab.training import evaluate
    result = evaluate(run_dir / summary["selection"]["checkpoint"], data=data)
    print(f"the run was tested with {summary['test']['tta']} TTA ({summary['test']['top1']:.4f}); "
          f"single view, as the apps predict: {result['top1']:.4f}")
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, default=ASSET)
    p.add_argument("--weights", choices=["float32", "float16", "int8"], default="float32",
                   help="stored weight format: float16 halves the file, int8 (a scale per output channel) quarters it")
    p.add_argument("--half", dest="weights", action="store_const", const="float16", help="the same as --weights float16")
    p.add_argument("--data", help="data file to hash and test on (default: the one the run used)")
    p.add_argument("--tolerance", type=float, default=0.0005, help="allowed test top-1 change (0.0005 = 5 of 10,000)")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip re-measuring the test accuracy")
    args = p.parse_args()
    config = json.loads((args.run_dir / "config.json").read_text())
    data = args.data or config.get("data") or os.environ.get("CIFARLAB_DATA")
    plain = _single_view_test(args.run_dir, data)
    meta = package_run(args.run_dir, args.out, data_file=data, test=plain, weights=args.weights)
    from cifarlab.inference import load_checkpoint
    load_checkpoint(args.out)  # the loader every face uses (weights_only=True) must read it
    stated = meta["test"]
    print(f"wrote {args.out}: {meta['bytes'] / 2**20:.2f} MiB, {meta['weights_dtype']} weights, "
          f"{meta['parameters']:,} parameters, stated test top-1 {stated['top1']:.4f} top-5 {stated['top5']:.4f}")
    print(f"data: {json.dumps(meta['provenance']['data'])}")
    if not args.verify:
        return 0
    from cifarlab.training import evaluate
    measured = evaluate(args.out, data=data)
    print(f"re-measured from the written file: test top-1 {measured['top1']:.4f} top-5 {measured['top5']:.4f} "
          f"(n={measured['n']})")
    if abs(measured["top1"] - stated["top1"]) > args.tolerance or measured["n"] != stated.get("n", measured["n"]):
        args.out.unlink()
        print(f"accuracy changed by packaging ({stated['top1']:.4f} -> {measured['top1']:.4f}); removed {args.out}",
              file=sys.stderr)
        return 1
    if (measured["top1"], measured["top5"]) != (stated["top1"], stated["top5"]):  # rounding moved a few images
        package_run(args.run_dir, args.out, data_file=data, test=measured, weights=args.weights)
        print(f"restated as the written file measures: test top-1 {measured['top1']:.4f} top-5 {measured['top5']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
