"""Study claims on SQLite: one owner per run, dead workers' runs taken over, several local workers.

The same SQL runs on PostgreSQL in tests/test_postgres.py (several processes, a real server).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from cifarlab.errors import ConfigError
from cifarlab.studies.claims import Claims


def test_one_owner_per_run_and_done_is_final(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    a, b = Claims(url, "s"), Claims(url, "s")
    assert a.take("r1") and not b.take("r1")  # a live claim is nobody else's
    assert b.take("r2")
    a.done("r1")
    assert not b.take("r1") and not a.take("r1")  # done runs are never taken again
    assert b.pending(["r1", "r2", "r3"]) == ["r2", "r3"]
    assert Claims(url, "other").take("r1")  # another study, its own claims


def test_silent_claim_is_taken_over_and_released_claim_is_free(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    a, b = Claims(url, "s", heartbeat=5), Claims(url, "s", heartbeat=5)
    assert a.take("r")
    assert not b.take("r")
    a.db.query("UPDATE study_claims SET heartbeat = heartbeat - 16")  # > 3 heartbeats of silence
    assert b.take("r") and b.states()["r"]["owner"] == b.owner
    with pytest.raises(RuntimeError):
        with b.holding("r"):
            raise RuntimeError("training failed")
    assert a.take("r")  # released at once, no waiting for the heartbeat


def test_claim_of_a_dead_local_process_is_taken_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    code = f"from cifarlab.studies.claims import Claims; assert Claims({url!r}, 's', heartbeat=600).take('r')"
    subprocess.run([sys.executable, "-c", code], check=True)  # takes the run, then exits
    assert Claims(url, "s", heartbeat=600).take("r")


def test_holding_beats_and_marks_done(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    a = Claims(url, "s", heartbeat=1)
    assert a.take("r")
    before = a.db.query("SELECT heartbeat FROM study_claims")[0]["heartbeat"]
    import time
    with a.holding("r"):
        time.sleep(2.5)
    row = a.db.query("SELECT heartbeat, state FROM study_claims")[0]
    assert row["state"] == "done" and row["heartbeat"] > before + 0.9


def test_bad_storage_and_heartbeat_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="expected sqlite:///PATH or postgresql://"):
        Claims(str(tmp_path / "x.db"), "s")
    with pytest.raises(ConfigError, match="--heartbeat 0"):
        Claims(f"sqlite:///{tmp_path / 'c.sqlite'}", "s", heartbeat=0)
