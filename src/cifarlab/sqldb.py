"""One small SQL layer for the run registry and study claims: a SQLite file or a PostgreSQL URL.

SQLite (the default) needs no server and serves the processes of one machine; a
``postgresql://user@host:5432/db`` URL lets workers on several machines share one record.
Statements are written once with ``?`` placeholders and SQLite types; for PostgreSQL the
placeholders become ``%s`` and ``REAL``/``AUTOINCREMENT`` their PostgreSQL spellings.
The driver (psycopg 3, extra ``postgres``) is imported only when a URL is used, and this
module imports only the standard library otherwise, so ``cifarlab runs`` starts fast.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

from cifarlab.errors import CifarlabError

_PG_PREFIXES = ("postgresql://", "postgres://", "postgresql+psycopg://")


def is_postgres(target: str | Path | None) -> bool:
    return isinstance(target, str) and target.startswith(_PG_PREFIXES)


def redact(url: str) -> str:
    """The URL with its password hidden, for tables and messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


class Database:
    """A handle, cheap to create: one connection per call, retried while SQLite is locked."""

    def __init__(self, target: str | Path, retries: int = 20):
        self.target = str(target)
        self.postgres = is_postgres(self.target)
        self.retries = retries
        if not self.postgres:
            Path(self.target).parent.mkdir(parents=True, exist_ok=True)

    def __str__(self) -> str:
        return redact(self.target) if self.postgres else self.target

    @property
    def now(self) -> str:
        """SQL for the database's clock in seconds: one clock for every machine (no skew)."""
        return "EXTRACT(EPOCH FROM clock_timestamp())" if self.postgres else "(julianday('now') - 2440587.5) * 86400.0"

    def query(self, sql: str, params: tuple = ()) -> list[dict]:
        """Run one statement; rows as dicts (empty for statements that return none)."""
        def run(con):
            cur = con.execute(self._sql(sql), params)
            return [dict(r) for r in cur.fetchall()] if cur.description else []
        return self._retried(run)

    def create(self, schema: str) -> None:
        """``CREATE ... IF NOT EXISTS`` statements, safe when several workers start at once."""
        if not self.postgres:
            self._retried(lambda con: con.executescript(schema))
            return
        with self._connection() as con, con.transaction():
            # concurrent CREATE IF NOT EXISTS can still collide in pg_type: one at a time
            con.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(schema.encode()),))
            con.execute(_pg_types(schema))

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold a server-wide lock named ``name`` for the block (PostgreSQL; SQLite: no-op,
        its own file lock already serializes writers)."""
        if not self.postgres:
            yield
            return
        with self._connection() as con:
            con.execute("SELECT pg_advisory_lock(%s)", (zlib.crc32(name.encode()),))
            try:
                yield
            finally:
                con.execute("SELECT pg_advisory_unlock(%s)", (zlib.crc32(name.encode()),))

    def _retried(self, run):
        """``run(connection)``, retried while SQLite is locked; a damaged or unusable SQLite
        file is one CifarlabError line saying what to do (the file itself is left alone)."""
        for attempt in range(self.retries):
            try:
                with self._connection() as con:
                    return run(con)
            except sqlite3.OperationalError as exc:
                if _is_lock_error(exc) and attempt < self.retries - 1:
                    time.sleep(min(0.05 * 2 ** attempt, 2.0))
                    continue
                if self.postgres or _is_lock_error(exc) or not _is_environment_error(exc):
                    raise  # a lock that never cleared, or a program error (bad SQL): not the user's to fix
                raise CifarlabError(f"the SQLite database {self.target} cannot be used ({exc}); check that its "
                                    f"disk has space and the file is writable") from None
            except sqlite3.DatabaseError as exc:  # "file is not a database", "disk image is malformed"
                if self.postgres:
                    raise
                raise CifarlabError(f"the SQLite database {self.target} is damaged ({exc}); move it aside (e.g. "
                                    f"mv {self.target} {self.target}.broken) and a fresh one is made on next "
                                    f"use; run folders are not affected") from None
        return []

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        con = _pg_connect(self.target) if self.postgres else _sqlite_connect(self.target)
        try:
            yield con
        finally:
            con.close()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql


def _sqlite_connect(path: str) -> sqlite3.Connection:
    con = sqlite3.connect(path, timeout=30, isolation_level=None)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA busy_timeout = 30000")
    # WAL lets readers proceed while one process writes; set once, it sticks to the file
    con.execute("PRAGMA journal_mode = WAL")
    return con


def _pg_connect(url: str):
    try:
        import psycopg
        from psycopg.rows import dict_row
    except ImportError:
        raise CifarlabError("a postgresql:// database needs psycopg: pip install 'cifarlab[postgres]'") from None
    try:  # autocommit: every statement is its own transaction, like the SQLite side
        return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True,
                               row_factory=dict_row, connect_timeout=30)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CifarlabError(f"cannot reach the database {redact(url)} ({first}); "
                            f"check that the server runs and the URL is right") from None


def _pg_types(schema: str) -> str:
    schema = schema.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", schema)  # PostgreSQL's REAL is 4 bytes


def _is_lock_error(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _is_environment_error(exc: sqlite3.OperationalError) -> bool:
    """The file or its disk, not the SQL: full, read-only, unreadable, unopenable."""
    text = str(exc).lower()
    return any(m in text for m in ("disk", "full", "unable to open", "readonly", "read-only", "i/o"))
