"""Which worker trains which run when several workers (machines) share one study.

``cifarlab study --storage URL`` keeps a table ``study_claims`` in that database (a SQLite
file for the processes of one machine, PostgreSQL for several machines). A worker takes a
planned run with one atomic upsert, so exactly one worker wins each run; while it trains,
a thread refreshes the claim's heartbeat (the database's clock, so machines' clocks may
disagree). A claim silent for 3 heartbeats, or held by a process of this machine that is
gone, belongs to a dead worker: the next worker to ask takes it over (and resumes the run
from its last.pt when the study folder is shared).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import threading
from typing import Iterator

from cifarlab import sqldb
from cifarlab.errors import ConfigError
from cifarlab.runlog import pid_alive

HEARTBEAT_S = 10  # a worker says it is alive this often; silent for 3x that, its work is taken over

_SCHEMA = """
CREATE TABLE IF NOT EXISTS study_claims (
    study TEXT NOT NULL,
    run TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT NOT NULL,
    heartbeat REAL NOT NULL,
    PRIMARY KEY (study, run)
);
"""


def database(storage: str) -> sqldb.Database:
    """``sqlite:///path`` or ``postgresql://...`` (the forms Optuna takes for --storage)."""
    if storage.startswith("sqlite:///"):
        return sqldb.Database(storage[len("sqlite:///"):])
    if sqldb.is_postgres(storage):
        return sqldb.Database(storage)
    raise ConfigError(f"--storage {storage!r}: expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB")


def study_key(spec) -> str:
    """The study's name plus a hash of what it trains: two different studies never share claims."""
    digest = hashlib.sha1(json.dumps(spec.identity(), sort_keys=True).encode()).hexdigest()[:12]
    return f"{spec.name}:{digest}"


class Claims:
    def __init__(self, storage: str, study: str, heartbeat: int = HEARTBEAT_S):
        if heartbeat < 1:
            raise ConfigError(f"--heartbeat {heartbeat} must be at least 1 (seconds)")
        self.db, self.study, self.heartbeat = database(storage), study, heartbeat
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.db.create(_SCHEMA)

    def take(self, run: str) -> bool:
        """True when this worker now holds ``run`` (new, or taken over from a dead worker)."""
        now = self.db.now
        rows = self.db.query(f"""
            INSERT INTO study_claims (study, run, state, owner, heartbeat) VALUES (?, ?, 'running', ?, {now})
            ON CONFLICT (study, run) DO UPDATE SET owner = excluded.owner, heartbeat = excluded.heartbeat
            WHERE study_claims.state = 'running'
              AND (study_claims.heartbeat < {now} - ? OR study_claims.owner = ?)
            RETURNING owner""", (self.study, run, self.owner, 3 * self.heartbeat, self._dead_local_owner(run)))
        return bool(rows) and rows[0]["owner"] == self.owner

    def done(self, run: str) -> None:
        self.db.query("UPDATE study_claims SET state = 'done' WHERE study = ? AND run = ? AND owner = ?",
                      (self.study, run, self.owner))

    def release(self, run: str) -> None:
        """Give ``run`` back (it failed here): the next worker or rerun takes it at once."""
        self.db.query("DELETE FROM study_claims WHERE study = ? AND run = ? AND owner = ? AND state = 'running'",
                      (self.study, run, self.owner))

    def states(self) -> dict[str, dict]:
        rows = self.db.query("SELECT run, state, owner FROM study_claims WHERE study = ?", (self.study,))
        return {r["run"]: r for r in rows}

    def pending(self, runs: list[str]) -> list[str]:
        """The runs of ``runs`` not done by any worker yet."""
        states = self.states()
        return [r for r in runs if (states.get(r) or {}).get("state") != "done"]

    @contextlib.contextmanager
    def holding(self, run: str) -> Iterator[None]:
        """Keep ``run``'s heartbeat going while the block trains it; done after, released on error."""
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(run, stop), daemon=True)
        beat.start()
        try:
            yield
        except BaseException:
            stop.set()
            self.release(run)
            raise
        finally:
            stop.set()
            beat.join()
        self.done(run)

    def _beat(self, run: str, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat):
            with contextlib.suppress(Exception):  # a database hiccup: try again next beat
                self.db.query(f"UPDATE study_claims SET heartbeat = {self.db.now} "
                              f"WHERE study = ? AND run = ? AND owner = ?", (self.study, run, self.owner))

    def _dead_local_owner(self, run: str) -> str:
        """The owner of ``run`` when it is a process of this machine that has ended, else ''."""
        rows = self.db.query("SELECT owner FROM study_claims WHERE study = ? AND run = ?", (self.study, run))
        if not rows:
            return ""
        owner = rows[0]["owner"]
        host, pid, _ = (owner.rsplit(":", 2) + ["", "", ""])[:3]
        if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
            return owner
        return ""
