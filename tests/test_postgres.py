"""Several machines' worth of workers on one real PostgreSQL server: tune, study, registry.

A server from Debian's package runs on a loopback port (tests/_postgres.py). Three worker
processes run a 6-trial search and three run a 4-run study against it, each as a separate
``python -m cifarlab`` process, as separate machines would; then a fourth process lists the
runs. A worker killed with SIGKILL mid-trial must leave the search usable: its trial is
failed by the heartbeat, run again by another worker, and every other trial completes.
Without the server the test skips with the reason, but fails under CI=true.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import _postgres
from cifarlab.data.synthetic import write_cifar10_python

pytestmark = pytest.mark.slow
TRIAL = ["--model", "lenet5", "--set", "epochs=1", "--set", "batch_size=20", "--set", "val=20",
         "--set", "tensorboard=false", "--set", "plots=false", "--set", "augment=none"]


@pytest.fixture(scope="module")
def pg_url():
    reason = _postgres.missing_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)
    with _postgres.server() as url:
        yield url


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(write_cifar10_python(tmp_path_factory.mktemp("pgdata"), per_batch=20, n_test=20).path)


def _cifarlab(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cifarlab", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(procs: list[subprocess.Popen], timeout: float = 150) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, f"worker exited {p.returncode}:\n{err[-3000:]}"
        outs.append(out + err)
    return outs


@pytest.fixture
def env(pg_url, tmp_path):
    # every worker is its own "machine": its own home (cache, local files), one shared database
    return {**os.environ, "CIFARLAB_REGISTRY": pg_url, "CIFARLAB_HOME": str(tmp_path / "home"),
            "OMP_NUM_THREADS": "1"}


def test_workers_starting_together_create_the_tables_once(pg_url):
    """Optuna's own table creation races on PostgreSQL (duplicate alembic_version / pg_type):
    seen with 3 workers started at once; cifarlab serializes it with an advisory lock."""
    import threading

    import psycopg
    from cifarlab.runlog import Registry
    from cifarlab.studies.tune import create
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("CREATE DATABASE fresh")
    url = pg_url.rsplit("/", 1)[0] + "/fresh"
    start, errors = threading.Barrier(6), []

    def worker(i: int) -> None:
        start.wait()
        try:
            create(url, "same") if i % 2 else Registry(url)
        except Exception as exc:  # noqa: BLE001 - every failure is the finding
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def _trials(url: str, name: str):
    import optuna
    from cifarlab.studies.tune import storage_for
    return optuna.load_study(study_name=name, storage=storage_for(url)).get_trials(deepcopy=False)


def test_three_tune_workers_a_killed_one_and_a_study_share_one_server(pg_url, env, data_dir, tmp_path):
    tune = ["tune", *TRIAL, "--set", f"data={data_dir}", "--storage", pg_url, "--study-name", "t",
            "--space", "lr=log:1e-3:1e-1", "--heartbeat", "1", "--out", str(tmp_path / "tune")]
    _finish([_cifarlab([*tune, "--trials", "2", "--seed", str(i)], env) for i in range(3)])
    trials = _trials(pg_url, "t")
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs["run_dir"] for t in trials}) == 6  # six distinct runs, none twice

    # a worker dies mid-trial (its trial is slow: 200 epochs); another one recovers its trial
    doomed = _cifarlab([*tune, "--trials", "1", "--set", "epochs=200"], env)
    _postgres.wait_for(lambda: (tmp_path / "tune" / "trials" / "trial-0006" / "last.pt").exists(), 90,
                       "the doomed worker's first epoch")
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate()
    time.sleep(3.5)  # > 3 heartbeats of silence
    _finish([_cifarlab([*tune, "--trials", "2"], env)])
    trials = {t.number: t for t in _trials(pg_url, "t")}
    assert trials[6].state.name == "FAIL"
    retried = [t for t in trials.values() if t.system_attrs.get("failed_trial") == 6]
    assert len(retried) == 1 and retried[0].params == trials[6].params
    assert {n: t.state.name for n, t in trials.items() if n != 6} == {n: "COMPLETE" for n in trials if n != 6}
    assert len(trials) == 9

    # three study workers: four planned runs, each trained by exactly one worker
    study = ["study", *TRIAL, "--set", f"data={data_dir}", "--vary", "lr=0.01,0.02,0.03,0.05", "--name", "s",
             "--storage", pg_url, "--heartbeat", "1", "--quiet", "--out", str(tmp_path / "study")]
    outs = _finish([_cifarlab(study, env) for _ in range(3)])
    trained = [line.split("] ")[1].split(":")[0] for out in outs for line in out.splitlines()
               if line.startswith("[") and line.endswith(": trained")]
    assert sorted(trained) == sorted(f"lr={v}-s0" for v in ("0.01", "0.02", "0.03", "0.05"))  # once each
    assert (tmp_path / "study" / "report.md").is_file()  # written by the worker that finished last

    # a fourth process, any machine: every run of every worker, in one list
    listing = subprocess.run([sys.executable, "-m", "cifarlab", "runs", "--json", "--limit", "100"], env=env,
                             capture_output=True, text=True, timeout=60, check=True)
    rows = json.loads(listing.stdout)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 9 + 4
    by_name = {r["name"]: r for r in rows}
    assert by_name["trial-0006"]["status"] in ("interrupted", "failed")  # the killed one, settled
    others = [r for r in rows if r["name"] != "trial-0006"]
    assert all(r["status"] == "finished" for r in others)
    assert {r["study"] for r in others} == {"tune:t", "s"}
