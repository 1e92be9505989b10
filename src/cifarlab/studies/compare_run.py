"""Training a comparison: ``run_study`` of its spec, each finished run measured (calibration,
robustness: ``compare_trust``) and its results row appended, then the report.

Apart from ``compare`` (the spec, the settings, the rows), which the report reads, so that
the report does not import the study runner that writes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from cifarlab.studies.compare import record_run, record_too_slow, record_trust
from cifarlab.studies.compare_trust import ensure_trust, trust_options
from cifarlab.studies.report import write_report
from cifarlab.studies.run import _shared_data, run_study
from cifarlab.studies.study import PlannedRun, StudyResult, StudySpec, plan


def run_compare(spec: StudySpec, out: str | Path, *, data=None, callbacks: Iterable = (), progress: bool = False,
                on_run: Callable[[int, int, PlannedRun, str], None] | None = None, storage: str | None = None,
                heartbeat: int | None = None, record: bool = True, command: str | None = None,
                trust: dict | None | bool = True,
                on_trust: Callable[[str, str], None] | None = None) -> StudyResult:
    """``run_study`` of a comparison spec (``compare.build_compare_spec``).

    Each run this call finishes is measured right after its training ends, outside its time
    budget (``trust``: the options of ``compare_trust.trust_options``, True for the defaults,
    False for none), then appends its row to ``results/compare.csv`` (``record``: where a
    results folder is set up, see ``compare.record_run``). When no run is left to any worker,
    the finished runs still unmeasured (a stop between training and measuring) are measured,
    and the report is written. ``on_trust(run name, text)`` hears what the measuring does."""
    out = Path(out)
    options = trust_options() if trust is True else (trust or None)
    if data is None and options:
        data = _shared_data(spec)  # one copy for the training and the measuring

    def note(i: int, n: int, run: PlannedRun, state: str) -> None:
        if state in ("start", "resume"):
            if options:
                ensure_trust(out, spec, data=data, options=options, names=[run.name], progress=on_trust)
            if record:
                record_run(out, spec, run, command)
        elif state == "too slow" and record:
            record_too_slow(out, spec, run, command)
        if on_run:
            on_run(i, n, run, state)
    result = run_study(spec, out, data=data, callbacks=callbacks, progress=progress, on_run=note, storage=storage,
                       heartbeat=heartbeat, report=False)
    if not result.waiting:
        if options:
            measure_missing(out, spec, data=data, options=options, record=record, command=command,
                            progress=on_trust)
        write_report(out)
    return result


def measure_missing(out: str | Path, spec: StudySpec, *, data=None, options: dict | None = None, record: bool = True,
                    command: str | None = None, progress: Callable[[str, str], None] | None = None) -> dict[str, str]:
    """Measure every finished run of the comparison without a current trust.json (``--report-only``
    and the end of a comparison); each newly measured run appends a trust row to
    results/compare.csv (``compare.record_trust``). Returns ``ensure_trust``'s states."""
    out = Path(out)
    states = ensure_trust(out, spec, data=data, load_data=lambda: _shared_data(spec), options=options,
                          progress=progress)
    if record:
        for run in plan(spec):
            if states.get(run.name) == "measured":
                record_trust(out, spec, run, command)
    return states
