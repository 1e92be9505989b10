"""Training a comparison: ``run_study`` of its spec, each finished run's results row appended.

Apart from ``compare`` (the spec, the settings, the rows), which the report reads, so that
the report does not import the study runner that writes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from cifarlab.studies.compare import record_run
from cifarlab.studies.run import run_study
from cifarlab.studies.study import PlannedRun, StudyResult, StudySpec


def run_compare(spec: StudySpec, out: str | Path, *, data=None, callbacks: Iterable = (), progress: bool = False,
                on_run: Callable[[int, int, PlannedRun, str], None] | None = None, storage: str | None = None,
                heartbeat: int | None = None, record: bool = True, command: str | None = None) -> StudyResult:
    """``run_study`` of a comparison spec (``compare.build_compare_spec``); each run this call
    finishes appends its row to ``results/compare.csv`` (``record``: where a results folder is
    set up, see ``compare.record_run``); the last one writes the report."""
    out = Path(out)

    def note(i: int, n: int, run: PlannedRun, state: str) -> None:
        if record and state in ("start", "resume"):
            record_run(out, spec, run, command)
        if on_run:
            on_run(i, n, run, state)
    return run_study(spec, out, data=data, callbacks=callbacks, progress=progress, on_run=note, storage=storage,
                     heartbeat=heartbeat)
