"""A throwaway PostgreSQL server for tests: Debian's binaries, a temporary data folder, loopback.

scripts/sysdeps.sh installs Debian's ``postgresql`` package. Its programs live in
/usr/lib/postgresql/<version>/bin (not on PATH). PostgreSQL refuses to run as root, so as
root the server runs as the ``postgres`` user the package creates (through ``runuser``);
the data folder is made in /tmp and handed to that user (pytest's own tmp folders are
private to root). Authentication is ``trust`` on 127.0.0.1 only, for this test user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

USER = "cifarlab"


def missing_reason() -> str | None:
    """Why no server can be started here, or None when one can."""
    if _bin_dir() is None:
        return "PostgreSQL is not installed (no pg_ctl); `make sysdeps` as root installs Debian's postgresql"
    if os.geteuid() == 0 and not _has_user("postgres"):
        return "running as root but there is no 'postgres' user to run the server as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install 'cifarlab[postgres]'"
    return None


@contextlib.contextmanager
def server() -> Iterator[str]:
    """Start a server; yield its URL ``postgresql://cifarlab@127.0.0.1:PORT/postgres``; stop it."""
    bindir = _bin_dir()
    data = Path(tempfile.mkdtemp(prefix="cifarlab-pg-"))
    port = _free_port()
    log = data / "server.log"
    try:
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        _as_owner([bindir / "initdb", "-D", str(data / "db"), "-U", USER, "--auth=trust", "-E", "UTF8",
                   "--no-sync"])
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync=off"
        _as_owner([bindir / "pg_ctl", "-D", str(data / "db"), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"])
        yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
    finally:
        if (data / "db" / "postmaster.pid").exists():
            _as_owner([bindir / "pg_ctl", "-D", str(data / "db"), "-m", "immediate", "stop"], check=False)
        shutil.rmtree(data, ignore_errors=True)


def _as_owner(cmd: list, check: bool = True) -> None:
    """Run ``cmd`` as the server's owner: ourselves, or ``postgres`` when we are root."""
    cmd = [str(c) for c in cmd]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check and proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, every: float = 0.2):
    """Poll ``predicate`` until it returns something true; fail naming ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
