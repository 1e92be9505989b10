"""Running a study: train every planned run not finished yet, then write its report.

Apart from ``study`` (the plan) and ``report`` (what is read back), so that the report
can read the plan without the plan knowing of the report.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterable

from cifarlab.training import record
from cifarlab.studies.report import write_report
from cifarlab.studies.study import (_DATA_FACTORS, DIVERGED, TOO_SLOW, PlannedRun, StudyResult, StudySpec, open_study,
                                    plan)


def run_study(spec: StudySpec, out: str | Path, *, data=None, callbacks: Iterable = (),
              progress: bool = False, report: bool = True,
              on_run: Callable[[int, int, PlannedRun, str], None] | None = None,
              storage: str | None = None, heartbeat: int | None = None) -> StudyResult:
    """Train every planned run not finished yet, then write tables, figures and the report.

    ``data``: a CifarData shared by all runs (default: loaded once from the base config).
    ``on_run(i, n, run, state)`` is told "skip", "start", "resume", "diverged", "too slow"
    or "elsewhere" (another worker holds it) for each run; a diverged run is recorded
    (diverged.json) and the study goes on; so is a run whose time budget cannot hold its
    model here (too_slow.json, tried again by the next call). ``storage``: a database URL shared by several
    workers (``studies.claims``); each run is then trained by exactly one of them, and the
    worker that finishes the last run writes the report.
    """
    from cifarlab.studies.claims import HEARTBEAT_S, Claims, study_key
    out = open_study(out, spec)
    runs = plan(spec)
    result = StudyResult(out, spec, runs)
    beat = HEARTBEAT_S if heartbeat is None else heartbeat
    claims = Claims(storage, study_key(spec), beat) if storage else None
    data = data if data is not None else _shared_data(spec)
    note = on_run or (lambda *a: None)
    for i, run in enumerate(runs):
        recorded = [*callbacks, *record.recorder(spec.name)]
        state = _run_claimed(run, out, data, recorded, progress, claims)
        {"skip": result.skipped, "elsewhere": result.elsewhere, "too slow": result.too_slow}.get(
            state, result.trained).append(run.name)
        if state in ("start", "resume") and spec.kind == "study":  # a comparison keeps its own rows
            record_study_run(out, spec, run)
        note(i, len(runs), run, state)
    result.waiting = claims.pending([r.name for r in runs]) if claims else []
    if report and not result.waiting:
        write_report(out)
    return result


def record_study_run(out: Path, spec: StudySpec, run: PlannedRun) -> Path | None:
    """Append ``run``'s row to results/study.csv where a results folder exists (a checkout's
    ``results/``, or ``$CIFARLAB_RESULTS``); an installed package gets no folder made for it."""
    import json

    from cifarlab import results
    from cifarlab.inference.runfolder import read_summary
    from cifarlab.studies.claims import study_key
    from cifarlab.studies.report import study_command
    s = read_summary(out / "runs" / run.name)
    if not s:
        return None
    hw, test, best = s.get("hardware") or {}, s.get("test") or {}, s.get("val_best") or {}
    pct = (lambda v: None if v is None else round(100 * v, 2))
    return results.record("study", {
        "machine": hw.get("device_name"), "cores": hw.get("cores"), "bf16": hw.get("bf16_native"),
        "command": study_command(spec, out), "seed": run.seed,
        "series": f"{spec.name}@{study_key(spec).rpartition(':')[2]}", "preset": spec.preset,
        "run": run.name, "factors": json.dumps(run.overrides, sort_keys=True), "model": s.get("model"),
        "test_top1_pct": pct(test.get("top1")), "val_best_pct": pct(best.get("val_acc")),
        "epochs": s.get("epochs_run"), "wall_s": s.get("wall_time_s"), "fit_s": s.get("training_time_s"),
        "train_images": (s.get("data") or {}).get("train"), "train_subset": spec.reduced.get("train_subset"),
        "reduced": json.dumps(spec.reduced, sort_keys=True) if spec.reduced else None,
    })


def _run_claimed(run: PlannedRun, out: Path, data, callbacks: list, progress: bool, claims) -> str:
    """``_run_one`` when this worker gets the run's claim (always, without shared storage)."""
    if claims is None:
        return _run_one(run, out, data, callbacks, progress)
    if not claims.take(run.name):
        return "elsewhere"
    with claims.holding(run.name):
        return _run_one(run, out, data, callbacks, progress)


def _run_one(run: PlannedRun, out: Path, data, callbacks: list, progress: bool) -> str:
    from cifarlab.training import resume, train
    from cifarlab.inference.runfolder import write_json
    from cifarlab.errors import BudgetTooShort, TrainingDiverged
    run_dir = out / "runs" / run.name
    if (run_dir / "summary.json").exists() or (run_dir / DIVERGED).exists():
        return "skip"
    # a time-budgeted run stopped half-way trains again from the start: resumed, it would train
    # longer than its budget in all, and the runs of the study would no longer have equal time
    timed = bool(run.config.get("time_budget"))
    state = "resume" if (run_dir / "last.pt").exists() and not timed else "start"
    try:
        if state == "resume":
            resume(run_dir, callbacks=callbacks, data=data, progress=progress)
        else:
            if run_dir.exists():  # stopped before its first epoch ended, or timed: nothing worth keeping
                shutil.rmtree(run_dir)
            config = {**run.config, "runs_dir": str(out / "runs"), "name": run.name, "progress": progress}
            train(config, callbacks=callbacks, data=data)
    except TrainingDiverged as exc:  # a result of the study (lr too high), not a reason to stop it
        write_json(run_dir / DIVERGED, {"error": str(exc)})
        return "diverged"
    except BudgetTooShort as exc:  # refused before its run folder was made: this model does not fit here
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / TOO_SLOW, {"error": str(exc), "needs_s": exc.needs_s})
        return "too slow"
    return state


def _shared_data(spec: StudySpec):
    """One in-memory copy for all runs (its validation split follows the base seed)."""
    if any(f in _DATA_FACTORS for f, _ in spec.factors):
        return None  # each run loads its own
    from cifarlab.training import TrainConfig, data_for
    return data_for(TrainConfig.from_dict(spec.base))
