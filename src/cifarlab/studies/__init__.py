"""Many runs: one-factor and grid studies, their reports, and Optuna search (``tune``, optional)."""

from __future__ import annotations

from cifarlab.studies.presets import REFERENCE_LABEL, REFERENCE_TABLES, get_preset, list_presets
from cifarlab.studies.report import compare_figure, config_diff, write_report
from cifarlab.studies.run import run_study
from cifarlab.studies.study import (
    PlannedRun, StudyResult, StudySpec, build_spec, load_spec, open_study, parse_vary, plan,
    valid_factors,
)

__all__ = [
    "PlannedRun", "REFERENCE_LABEL", "REFERENCE_TABLES", "StudyResult", "StudySpec", "build_spec",
    "compare_figure", "config_diff", "get_preset", "list_presets", "load_spec", "open_study", "parse_vary",
    "plan", "run_study", "valid_factors", "write_report",
]
