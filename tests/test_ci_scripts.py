"""CI cannot go green by skipping: under CI=true the CI entry point and the system-package
script fail, with the reason, when the shared data or a system dependency is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash") or "/bin/bash"


def _run(script: Path, ci: str | None, path: str) -> subprocess.CompletedProcess:
    env = {"PATH": path, **({"CI": ci} if ci is not None else {})}
    return subprocess.run([BASH, str(script)], capture_output=True, text=True, env=env, timeout=60)


def test_sysdeps_fails_under_ci_when_it_cannot_install(tmp_path):
    # no dpkg-query on PATH: "not a Debian system", the first thing the script cannot fix
    laptop = _run(ROOT / "scripts" / "sysdeps.sh", None, str(tmp_path))
    assert laptop.returncode == 0 and "not a Debian system" in laptop.stdout
    for ci in ("true", "1"):
        strict = _run(ROOT / "scripts" / "sysdeps.sh", ci, str(tmp_path))
        assert strict.returncode == 1, strict
        assert strict.stderr.startswith("sysdeps: error: not a Debian system") and "CI=true" in strict.stderr


def test_ci_entry_point_fails_under_ci_without_the_shared_data(tmp_path):
    # a checkout with no ../shared beside it; CI=true must stop before running the suite
    (tmp_path / "repo" / ".ci").mkdir(parents=True)
    script = shutil.copy(ROOT / ".ci" / "run", tmp_path / "repo" / ".ci" / "run")
    proc = _run(Path(script), "true", "/usr/bin:/bin")
    assert proc.returncode == 1 and "shared data not found" in proc.stderr and "CI=true" in proc.stderr
    assert "make" not in proc.stdout + proc.stderr  # it stopped before `make test`
