"""The callback that records a run in the run registry (``cifarlab.runlog``)."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

from cifarlab.errors import CifarlabError
from cifarlab.runlog import Registry, summary_metrics
from cifarlab.training.callbacks import Callback
from cifarlab.training.plan import planned_config


def _history_metrics(history: list[dict]) -> dict:
    vals = [h["val_acc"] for h in history if "val_acc" in h]
    out = {"epochs": len(history), "time_s": round(sum(h.get("epoch_time", 0.0) for h in history), 2)}
    if vals:
        out["val_best_acc"] = max(vals)
    return out


class RegistryCallback(Callback):
    """Records one run: running as soon as its folder exists (so a run killed while it is being
    built is listed), again at before_fit, then finished / failed / interrupted, and the test
    metrics once summary.json is written (the engine's after_report event). The run folder and
    config come from the learner; ``study`` names the study the run is part of.

    A registry that cannot be used (a damaged file, a full disk) does not stop the run: the
    registry is an index of run folders, the folder is the record; one warning says the run
    will not be listed and what to do."""

    order = 5  # before the guards, so before_fit registers before anything can fail
    main_only = True

    def __init__(self, study: str | None = None, registry: Registry | None = None):
        self.study, self.registry = study, registry
        self.run_dir: Path | None = None
        self.broken = False

    def _record(self, action) -> None:
        if self.broken:
            return
        try:
            self.registry = self.registry or Registry()  # here: $CIFARLAB_HOME as the run starts
            action(self.registry)
        except (CifarlabError, sqlite3.Error) as exc:
            self.broken = True
            print(f"cifarlab: warning: the run registry cannot record this run ({exc}); training goes on, but "
                  f"`cifarlab runs` will not list it", file=sys.stderr)

    def run_folder_made(self, run_dir, config: dict) -> None:
        self.run_dir = Path(run_dir)
        self._record(lambda reg: reg.start(self.run_dir, config, self.study))

    def before_fit(self, learn) -> None:
        self.run_dir = Path(learn.run_dir)
        self._record(lambda reg: reg.start(self.run_dir, planned_config(learn.meta), self.study))

    def after_fit_failed(self, learn) -> None:
        if self.run_dir is None:  # failed before this callback's before_fit: nothing recorded
            return
        exc = learn.error
        if isinstance(exc, KeyboardInterrupt):
            self._record(lambda reg: reg.finish(self.run_dir, "interrupted", _history_metrics(learn.history),
                                                error=f"interrupted after epoch {learn.epoch}"))
        else:
            self._record(lambda reg: reg.finish(self.run_dir, "failed", _history_metrics(learn.history),
                                                error=f"{type(exc).__name__}: {exc}"))

    def after_fit(self, learn) -> None:
        self._record(lambda reg: reg.finish(self.run_dir, "finished", _history_metrics(learn.history)))

    def after_report(self, learn) -> None:
        self._record(lambda reg: reg.finish(self.run_dir, "finished", summary_metrics(learn.summary)))


def recorder(study: str | None = None) -> list[Callback]:
    """The callbacks that record one run here: pass them to ``train``/``resume``.
    Empty when ``CIFARLAB_REGISTRY=0`` (recording turned off); a ``postgresql://`` URL
    there records into that server instead of the local file."""
    if os.environ.get("CIFARLAB_REGISTRY", "1") == "0":
        return []
    return [RegistryCallback(study)]
