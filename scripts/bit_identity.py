"""Are two fixed-seed runs bit-identical? For a refactor: the same command before and after.

    python scripts/bit_identity.py BEFORE_RUN AFTER_RUN --before c88d4a7 --after 9fed681 \
        --command "cifarlab train --recipe cpu-2min --time-budget 0 --name r"

Compares every per-epoch value of metrics.jsonl except wall-clock ones (losses, accuracies,
lr), the test metrics of summary.json, and every tensor of last.pt, exactly. Prints what
differs and appends one row to results/bit_identity.csv. Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cifarlab import results

WALL_CLOCK = {"train_time", "epoch_time", "images_per_s", "load_1m"}


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def compare(before: Path, after: Path) -> tuple[list[str], dict]:
    """(what differs, in words; the after run's figures)."""
    diffs = []
    rb, ra = _rows(before), _rows(after)
    if len(rb) != len(ra):
        diffs.append(f"epochs: {len(rb)} before, {len(ra)} after")
    values = 0
    for b, a in zip(rb, ra):
        for key in sorted((set(b) | set(a)) - WALL_CLOCK):
            values += 1
            if b.get(key) != a.get(key):
                diffs.append(f"epoch {b.get('epoch')} {key}: {b.get(key)!r} before, {a.get(key)!r} after")
    sb, sa = (json.loads((r / "summary.json").read_text())["test"] for r in (before, after))
    for key in ("n", "top1", "top5", "loss"):
        if sb.get(key) != sa.get(key):
            diffs.append(f"test {key}: {sb.get(key)!r} before, {sa.get(key)!r} after")
    wb, wa = (torch.load(r / "last.pt", weights_only=True)["state_dict"] for r in (before, after))
    if set(wb) != set(wa):
        diffs.append("last.pt holds other tensors")
    diffs += [f"last.pt {k} differs" for k in sorted(set(wb) & set(wa)) if not torch.equal(wb[k], wa[k])]
    return diffs, {"epochs": len(ra), "epoch_values": values, "tensors": len(wa),
                   "test_top1_pct": round(100 * sa["top1"], 2), "test_loss": sa["loss"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--before-commit", "--before", dest="before_commit", required=True)
    p.add_argument("--after-commit", "--after", dest="after_commit", required=True)
    p.add_argument("--command", required=True, help="the training command both runs were made with")
    args = p.parse_args()
    diffs, figures = compare(args.before, args.after)
    for line in diffs[:40]:
        print(line)
    same = not diffs
    print(f"{'bit-identical' if same else 'DIFFERENT'}: {figures['epochs']} epochs x per-epoch values "
          f"({figures['epoch_values']} compared), test metrics, {figures['tensors']} tensors of last.pt; "
          f"test top-1 {figures['test_top1_pct']}%")
    results.record("bit_identity", {"command": args.command, "before_commit": args.before_commit,
                                    "after_commit": args.after_commit, "identical": same, **figures,
                                    "differences": len(diffs)})
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
