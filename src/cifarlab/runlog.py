"""The run registry: every training run, from any command, recorded in one SQLite file.

``$CIFARLAB_HOME/runs.sqlite`` (``~/.cache/cifarlab`` when unset) holds one row per run
folder: id, name, path, model, status, times, the resolved config, final metrics and the
study it belongs to. Rows are written by ``cifarlab.training.record.RegistryCallback``, which
whoever starts a run passes to ``train``/``resume`` (``record.recorder()``: the CLI, studies
and tune do). Importing this module stays cheap (no torch), so ``cifarlab runs`` starts fast.

Several processes (study workers, Optuna workers, a ``cifarlab train`` in another shell)
write at once, so the database runs in WAL mode with a busy timeout, and every write is
retried on ``database is locked``. Workers on several machines share one PostgreSQL
database instead: ``CIFARLAB_REGISTRY=postgresql://...`` (``cifarlab.sqldb``).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from cifarlab import sqldb
from cifarlab.inference.runfolder import read_summary
from cifarlab.errors import CifarlabError, ConfigError

STATUSES = ("running", "finished", "failed", "interrupted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    model TEXT,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL,
    config TEXT,
    metrics TEXT,
    study TEXT,
    error TEXT,
    pid INTEGER,
    host TEXT
);
CREATE INDEX IF NOT EXISTS runs_model ON runs(model);
CREATE INDEX IF NOT EXISTS runs_study ON runs(study);
"""


def default_path() -> Path:
    home = os.environ.get("CIFARLAB_HOME") or Path.home() / ".cache" / "cifarlab"
    return Path(home) / "runs.sqlite"


def default_target() -> str | Path:
    """``$CIFARLAB_REGISTRY`` when it is a postgresql:// URL (shared by machines), else the file."""
    url = os.environ.get("CIFARLAB_REGISTRY", "")
    return url if sqldb.is_postgres(url) else default_path()


class Registry:
    """A handle on the runs database; cheap to create, one connection per call.

    ``path``: a SQLite file or a ``postgresql://`` URL; default ``$CIFARLAB_REGISTRY`` when it
    is a URL, else ``$CIFARLAB_HOME/runs.sqlite``.
    """

    def __init__(self, path: str | Path | None = None, retries: int = 20):
        target = path or default_target()
        self.db = sqldb.Database(target if sqldb.is_postgres(str(target)) else Path(target), retries)
        self.path = self.db.target if self.db.postgres else Path(self.db.target)
        self.db.create(_SCHEMA)

    def __str__(self) -> str:
        return str(self.db)

    # ------------------------------------------------------------ plumbing
    def _write(self, sql: str, params: tuple = ()) -> None:
        self.db.query(sql, params)

    def _query(self, sql: str, params: tuple = ()) -> list[dict]:
        return [_row(r) for r in self.db.query(sql, params)]

    # ------------------------------------------------------------ writing
    def start(self, run_dir: str | Path, config: dict, study: str | None = None) -> int:
        """Insert (or, on resume, re-open) the row of ``run_dir`` as running; returns its id."""
        path = str(Path(run_dir).resolve())
        self._write("""
            INSERT INTO runs (name, path, model, status, created, config, study, pid, host)
            VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)
            ON CONFLICT(path) DO UPDATE SET status='running', finished=NULL, error=NULL,
                config=excluded.config, study=COALESCE(excluded.study, runs.study),
                pid=excluded.pid, host=excluded.host""",
            (Path(path).name, path, config.get("model"), time.time(), json.dumps(config), study,
             os.getpid(), socket.gethostname()))
        return self._query("SELECT id FROM runs WHERE path = ?", (path,))[0]["id"]

    def finish(self, run_dir: str | Path, status: str, metrics: dict | None = None,
               error: str | None = None) -> None:
        """Set the final status; ``metrics`` are merged into what the row already has."""
        if status not in STATUSES:
            raise ValueError(f"status {status!r} not in {STATUSES}")
        path = str(Path(run_dir).resolve())
        rows = self._query("SELECT metrics FROM runs WHERE path = ?", (path,))
        merged = {**(rows[0]["metrics"] if rows else {}), **(metrics or {})}
        self._write("UPDATE runs SET status=?, finished=?, metrics=?, error=? WHERE path=?",
                    (status, time.time(), json.dumps(merged), error, path))

    def sync(self, run_dir: str | Path) -> None:
        """Bring a row up to date with its folder: summary.json means finished with test metrics."""
        run_dir = Path(run_dir)
        summary = read_summary(run_dir)
        if summary is not None:
            self.finish(run_dir, "finished", summary_metrics(summary))

    def refresh(self) -> None:
        """Settle rows whose process ended without a summary.json, or finished without test metrics.

        A killed process (SIGKILL, power cut) runs no callback: its row still says running,
        or finished if it died between the last epoch and the test that writes summary.json.
        """
        here = socket.gethostname()
        for row in self._query("SELECT * FROM runs WHERE status IN ('running', 'finished')"):
            folder = Path(row["path"])
            dead = row["host"] == here and not pid_alive(row["pid"])
            if (folder / "summary.json").exists():
                # killed between summary.json and its own registry update: the report is whole
                if "test_top1" not in row["metrics"] or (row["status"] == "running" and dead):
                    self.sync(folder)
            elif dead and (row["status"] == "running" or folder.is_dir()):
                # `train --resume` continues from last.pt, or restarts from config.json
                resumable = any((folder / f).exists() for f in ("last.pt", "config.json"))
                self.finish(folder, "interrupted" if resumable else "failed",
                            error="the training process ended without finishing")

    # ------------------------------------------------------------ reading
    def list(self, model: str | None = None, status: str | None = None, study: str | None = None,
             limit: int | None = None) -> list[dict]:
        """Rows, newest first, filtered by exact model / status / study."""
        if status is not None and status not in STATUSES:
            raise ConfigError(f"unknown status {status!r}; choose one of: {', '.join(STATUSES)}")
        where, params = [], []
        for column, value in (("model", model), ("status", status), ("study", study)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self._query(sql, tuple(params))

    def get(self, ref: str | int) -> dict:
        """A row by id or by run folder path (a folder not yet registered is read from disk)."""
        text = str(ref)
        if text.isdigit() and not Path(text).exists():
            rows = self._query("SELECT * FROM runs WHERE id = ?", (int(text),))
        else:
            rows = self._query("SELECT * FROM runs WHERE path = ?", (str(Path(text).resolve()),))
            if not rows and (Path(text) / "config.json").is_file():
                return _row_from_folder(Path(text))
        if not rows:
            raise ConfigError(f"no run {text!r} in the registry {self.path}; list them with `cifarlab runs`")
        return rows[0]


    def remove(self, run_id: int) -> None:
        """Delete the row of run ``run_id`` (its folder is the caller's business)."""
        self._write("DELETE FROM runs WHERE id = ?", (int(run_id),))


# ---------------------------------------------------------------- metrics
def summary_metrics(summary: dict) -> dict:
    """The few final numbers kept in the registry, from a run's summary.json."""
    test, best = summary.get("test") or {}, summary.get("val_best") or {}
    out = {"test_top1": test.get("top1"), "test_loss": test.get("loss"), "val_best_acc": best.get("val_acc"),
           "val_best_epoch": best.get("epoch"), "time_s": summary.get("training_time_s"),
           "epochs": summary.get("epochs_run")}
    return {k: v for k, v in out.items() if v is not None}


# ---------------------------------------------------------------- helpers
def _row(r: dict) -> dict:
    out = dict(r)
    for key in ("config", "metrics"):
        if key in out:
            out[key] = json.loads(out[key] or "{}")
    return out


def _row_from_folder(run_dir: Path) -> dict[str, Any]:
    config = json.loads((run_dir / "config.json").read_text())
    summary = read_summary(run_dir)
    return {"id": None, "name": run_dir.name, "path": str(run_dir.resolve()),
            "model": (summary or {}).get("model") or config.get("model"),  # the model trained (a plan may fall back)
            "status": "finished" if summary else "unknown", "config": config,
            "metrics": summary_metrics(summary) if summary else {}, "study": None}




def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` runs on this machine (None or 0: no)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
