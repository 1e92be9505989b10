"""Two "machines" on loopback: two separate torchrun launchers, one c10d rendezvous, gloo.

Each launcher is started as it would be on its own host (``--nnodes 2 --nproc-per-node 1
--rdzv-backend c10d --rdzv-endpoint HOST:PORT -m cifarlab train ...``) with its own
CIFARLAB_HOME (cache, registry); the data folder and the run folder are the same paths on
both, as on machines sharing a filesystem. Why the per-epoch losses can match one process
with the same global batch to 1e-4: see tests/test_distributed.py (lenet5 has no BatchNorm;
each rank gets a contiguous half of every global batch; DDP averages the half gradients).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from cifarlab.data.synthetic import write_cifar10_python
from cifarlab.training import evaluate, train
from cifarlab.training.distributed import free_port

pytestmark = pytest.mark.slow
RTOL = 1e-4  # see tests/test_distributed.py


def _losses(run_dir) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


_STORE_RACE = "The connection to the C10d store has failed"


def _args(data: str, runs: str, name: str) -> list[str]:
    return ["train", "--data", data, "--model", "lenet5", "--epochs", "3", "--batch-size", "32", "--val", "40",
            "--runs-dir", runs, "--name", name, "--no-tensorboard", "--no-plots", "--no-progress",
            "--augment", "none", "--seed", "3", "--set", "lr=0.05", "--set", "optimizer=sgd",
            "--set", "schedule=constant", "--json"]


def _node(port: int, args: list[str], home) -> subprocess.Popen:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "p14",
                "--rdzv-conf", "join_timeout=60", "-m", "cifarlab", *args]
    env = {**os.environ, "CIFARLAB_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(launcher, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group: a hung job is killed whole


def _finish(nodes: list[subprocess.Popen], timeout: float) -> tuple[list[tuple[str, str]], bool]:
    """Each launcher's (stdout, stderr), and whether the job hung (then every process is killed)."""
    try:
        return [p.communicate(timeout=timeout) for p in nodes], False
    except subprocess.TimeoutExpired:
        for p in nodes:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return [p.communicate() for p in nodes], True


def test_two_launchers_train_like_one_process_and_rank_0_writes_one_run(tmp_path):
    data = str(write_cifar10_python(tmp_path / "data", per_batch=40, n_test=40).path)  # 160 train = 5 batches
    runs = tmp_path / "runs"
    for attempt in range(3):
        shutil.rmtree(runs, ignore_errors=True)
        port = free_port()
        nodes = [_node(port, _args(data, str(runs), "two"), tmp_path / f"home{attempt}-{i}") for i in range(2)]
        outs, hung = _finish(nodes, timeout=90)
        if not hung and not any(p.returncode and _STORE_RACE in err for p, (_, err) in zip(nodes, outs)):
            break
        # torch's c10d rendezvous: the launcher hosting the store may exit while the other one
        # still polls it, or wait on a partner that already left (pytorch/pytorch#69197 and
        # kin); a whole new job, never a partial one
    assert not hung, f"the two launchers did not finish in 90 s, three times:\n{outs[0][1][-2000:]}"
    for p, (out, err) in zip(nodes, outs):
        assert p.returncode == 0, f"launcher exited {p.returncode}:\n{err[-3000:]}"
    reports = [line for out, _ in outs for line in out.splitlines() if line.startswith("{")]
    assert len(reports) == 1 and json.loads(reports[0])["run_dir"] == str(runs / "two")  # rank 0 alone reports

    one = train({**_cli_config(runs / "two"), "name": "one"})
    assert sorted(p.name for p in runs.iterdir()) == ["one", "two"]  # one folder from the 2-node job
    a, b = _losses(one.run_dir), _losses(runs / "two")
    assert len(a) == len(b) == 3
    assert a[0] - a[-1] > 100 * RTOL * a[0], "the loss must move far more than the tolerance"
    np.testing.assert_allclose(b, a, rtol=RTOL)
    print(f"max relative per-epoch loss difference: {max(abs(x - y) / abs(y) for x, y in zip(b, a)):.2e}")
    summary = json.loads((runs / "two" / "summary.json").read_text())
    assert summary["hardware"]["processes"] == 2

    alone = evaluate(runs / "two" / "last.pt")  # this process, no process group: the checkpoint alone
    reference = evaluate(one.run_dir / "last.pt")
    assert alone["n"] == 40 and alone["loss"] == pytest.approx(reference["loss"], rel=1e-3)


def _cli_config(run_dir) -> dict:
    """The 2-node run's resolved config, so the single process trains exactly the same thing."""
    return json.loads((run_dir / "config.json").read_text())
