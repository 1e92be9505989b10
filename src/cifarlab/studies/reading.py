"""Reading a study folder's runs: their final numbers, per-epoch history and state."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from cifarlab.studies.study import DIVERGED, TOO_SLOW, PlannedRun


def run_record(run_dir: Path) -> dict | None:
    """Final numbers and per-epoch history of a finished run; None while it is not finished."""
    from cifarlab.inference.runfolder import read_summary
    summary = read_summary(run_dir)
    if summary is None:
        return None
    history = read_history(run_dir)
    last = history[-1] if history else {}
    test = summary.get("test") or {}
    values = {"train_acc": last.get("train_acc"), "val_acc": last.get("val_acc"),
              "train_loss": last.get("train_loss"), "val_loss": last.get("val_loss"),
              "best_val_acc": (summary.get("val_best") or {}).get("val_acc"),
              "test_acc": test.get("top1"), "test_loss": test.get("loss"),
              "time_s": summary.get("training_time_s")}
    return {"values": values, "history": history, "summary": summary}


def read_history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None


def run_states(out: Path, runs: list[PlannedRun], records: dict) -> dict[str, str]:
    """Run name -> finished, diverged, running (a folder with epochs but no summary: training
    now, or stopped and waiting to be resumed) or not started."""
    states = {}
    for r in runs:
        folder = out / "runs" / r.name
        if r.name in records:
            states[r.name] = "finished"
        elif (folder / DIVERGED).exists():
            states[r.name] = "diverged"
        elif (folder / TOO_SLOW).exists():
            states[r.name] = "does not fit its time budget here"
        elif folder.exists():
            n = len(read_history(folder))
            states[r.name] = f"started ({n} epoch{'' if n == 1 else 's'} done; running or stopped)"
        else:
            states[r.name] = "not started"
    return states
