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
from cifarlab.studies.study import _DATA_FACTORS, DIVERGED, PlannedRun, StudyResult, StudySpec, open_study, plan


def run_study(spec: StudySpec, out: str | Path, *, data=None, callbacks: Iterable = (),
              progress: bool = False, report: bool = True,
              on_run: Callable[[int, int, PlannedRun, str], None] | None = None,
              storage: str | None = None, heartbeat: int | None = None) -> StudyResult:
    """Train every planned run not finished yet, then write tables, figures and the report.

    ``data``: a CifarData shared by all runs (default: loaded once from the base config).
    ``on_run(i, n, run, state)`` is told "skip", "start", "resume", "diverged" or
    "elsewhere" (another worker holds it) for each run; a diverged run is recorded
    (diverged.json) and the study goes on. ``storage``: a database URL shared by several
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
        {"skip": result.skipped, "elsewhere": result.elsewhere}.get(state, result.trained).append(run.name)
        note(i, len(runs), run, state)
    result.waiting = claims.pending([r.name for r in runs]) if claims else []
    if report and not result.waiting:
        write_report(out)
    return result


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
    from cifarlab.errors import TrainingDiverged
    run_dir = out / "runs" / run.name
    if (run_dir / "summary.json").exists() or (run_dir / DIVERGED).exists():
        return "skip"
    state = "resume" if (run_dir / "last.pt").exists() else "start"
    try:
        if state == "resume":
            resume(run_dir, callbacks=callbacks, data=data, progress=progress)
        else:
            if run_dir.exists():  # stopped before its first epoch ended: nothing worth keeping
                shutil.rmtree(run_dir)
            config = {**run.config, "runs_dir": str(out / "runs"), "name": run.name, "progress": progress}
            train(config, callbacks=callbacks, data=data)
    except TrainingDiverged as exc:  # a result of the study (lr too high), not a reason to stop it
        write_json(run_dir / DIVERGED, {"error": str(exc)})
        return "diverged"
    return state


def _shared_data(spec: StudySpec):
    """One in-memory copy for all runs (its validation split follows the base seed)."""
    if any(f in _DATA_FACTORS for f, _ in spec.factors):
        return None  # each run loads its own
    from cifarlab.training import TrainConfig, data_for
    return data_for(TrainConfig.from_dict(spec.base))
