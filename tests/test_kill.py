"""SIGKILL at seeded random moments: a kill loses at most the epoch it interrupts.

`cifarlab train` and `cifarlab study` run as child processes and are killed with SIGKILL
(no handler, no finally block runs) at moments drawn from a seeded generator over each
process's expected life: startup, mid-epoch, mid-checkpoint, the final test, the exit.
After every kill: each checkpoint left in the run folder loads, metrics.csv holds epochs
1..n once each with the numbers an uninterrupted run produced (n is last.pt's epoch, or
one less when the kill fell between writing last.pt and metrics.csv), and `cifarlab runs`
shows the run as interrupted. Then `cifarlab train --resume RUN` (or the same study
command) is started again, and killed again or left to finish; a finished run must equal
the uninterrupted one and be listed as finished.

The children are forked from one process that has already imported torch and cifarlab,
so a start costs milliseconds instead of the ~2 s of importing torch; each child runs
`cifarlab.cli.main`, as the console script does, with its own pid, output file and exit code.
"""

from __future__ import annotations

import csv
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifarlab.cli import main
from cifarlab.data.synthetic import write_cifar10_python
from cifarlab.inference.checkpoint import load_checkpoint

pytestmark = [pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX) to start children fast"),
              pytest.mark.slow]  # each test kills and resumes dozens of runs: minutes on 2 cores

SEED = 20261202
TRAIN_KILLS = 20
STUDY_KILLS = 6
EPOCHS = 8
STUDY_EPOCHS = 3
TRAIN = ["--model", "lenet5", "--batch-size", "32", "--val", "40", "--augment", "crop:4,flip",
         "--no-tensorboard", "--no-plots", "--no-progress"]
COMPARED = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")

# Runs in a fresh interpreter; reads one JSON job per line, forks a child that runs it,
# answers the child's pid, then its exit code (negative: the signal that ended it).
_ZYGOTE = r"""
import json, os, sys, traceback
import torch  # the slow imports, once; children inherit them
import cifarlab.data, cifarlab.training.api, cifarlab.models, cifarlab.studies.report  # noqa: F401
torch.set_num_threads(1)  # tiny batches: a second thread only spins
torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)  # the first optimizer imports torch._dynamo
try:  # the study report draws figures
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
except ImportError:
    pass
from cifarlab.cli import build_parser, main
build_parser()
print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.environ.update(job["env"])
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        code = 70
        try:
            code = main(job["argv"])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


class Zygote:
    """Starts `cifarlab` commands in forked children and kills them on a timer."""

    def __init__(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100", "LINES": "40"}  # no terminal queries
        self.proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)
        self.buf = b""
        assert self._line(300) == "ready", "the zygote did not start"

    def run(self, argv: list[str], log: Path, kill_after: float | None = None) -> tuple[int, float]:
        """(exit code, seconds): -9 when SIGKILL ended it after ``kill_after`` seconds."""
        job = {"argv": argv, "log": str(log), "env": {k: os.environ[k] for k in ("CIFARLAB_HOME", "CIFARLAB_RESULTS")}}
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        self.proc.stdin.flush()
        pid = int(self._line(120))
        start = time.monotonic()
        code = self._line(kill_after)
        if code is None:
            os.kill(pid, signal.SIGKILL)
            code = self._line(30)
        return int(code), time.monotonic() - start

    def _line(self, timeout: float | None) -> str | None:
        end = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if end is None else max(0.0, end - time.monotonic())
            if not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            assert chunk, "the zygote process died"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_cifar10_python(tmp_path_factory.mktemp("data"), per_batch=40, n_test=40).path


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("CIFARLAB_HOME", str(home))  # the children and `cifarlab runs` here share it
    return home


# ---------------------------------------------------------------- reading a run folder
def _metrics(run: Path) -> list[dict]:
    if not (run / "metrics.csv").exists():
        return []
    with open(run / "metrics.csv", newline="") as fh:
        return [{k: float(row[k]) for k in COMPARED} for row in csv.DictReader(fh)]


def _epoch_seconds(run: Path) -> float:
    with open(run / "metrics.csv", newline="") as fh:
        return sum(float(row["epoch_time"]) for row in csv.DictReader(fh))


def _checkpoint_epochs(run: Path) -> dict[str, int]:
    """Every checkpoint in the folder must load; their epochs by file name."""
    return {p.name: load_checkpoint(p)["epoch"] for p in sorted(run.glob("*.pt"))}


def _registry(capsys) -> dict[str, dict]:
    capsys.readouterr()
    assert main(["runs", "--json", "--limit", "1000"]) == 0
    return {row["path"]: row for row in json.loads(capsys.readouterr().out)}


def _check_killed(run: Path, reference: list[dict], rows: dict, log: Path, study: str | None = None) -> None:
    epochs = _checkpoint_epochs(run)
    done = epochs.get("last.pt", 0)
    # best.pt is written just before last.pt, so it may be one epoch ahead
    assert all(1 <= e <= done + 1 for e in epochs.values()), epochs
    metrics = _metrics(run)
    assert [m["epoch"] for m in metrics] == list(range(1, len(metrics) + 1)), log.read_text()
    assert done - 1 <= len(metrics) <= done  # metrics.csv is written just after last.pt
    assert metrics == reference[:len(metrics)]  # nothing lost, nothing repeated, nothing changed
    row = rows.get(str(run.resolve()))
    if (run / "summary.json").exists():  # killed after the report: the run is finished
        assert row["status"] == "finished" and "test_top1" in row["metrics"]
    elif row is not None:
        assert row["status"] == "interrupted" and row["study"] == study, row
    else:  # killed before the run's first event: nothing was recorded and nothing trained
        assert done == 0


def _check_finished(run: Path, reference: Path, rows: dict, log: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    expected = json.loads((reference / "summary.json").read_text())
    assert _metrics(run) == _metrics(reference), log.read_text()
    assert summary["epochs_run"] == EPOCHS and summary["test"] == expected["test"]
    epochs = _checkpoint_epochs(run)
    assert epochs == {"best.pt": summary["selection"]["epoch"], "last.pt": EPOCHS}
    assert not list(run.glob(".*.partial-*")), "a killed writer's temporary was left behind"
    row = rows[str(run.resolve())]
    assert row["status"] == "finished" and row["metrics"]["test_top1"] == summary["test"]["top1"]


def _next_command(run: Path, first: list[str]) -> list[str]:
    # a folder holding config.json is resumed; one killed before writing it is started again
    return ["train", "--resume", str(run)] if (run / "config.json").exists() else first


# ---------------------------------------------------------------- the tests
def test_train_killed_at_20_random_moments_resumes_to_the_same_result(zygote, data_dir, home, tmp_path, capsys):
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    logs.mkdir()

    def command(name: str) -> list[str]:
        return ["train", "--data", str(data_dir), "--epochs", str(EPOCHS), "--runs-dir", str(runs),
                "--name", name, *TRAIN]

    code, seconds = zygote.run(command("reference"), logs / "reference.log")
    assert code == 0, (logs / "reference.log").read_text()
    reference = _metrics(runs / "reference")
    epoch_s = _epoch_seconds(runs / "reference")
    overhead = seconds - epoch_s  # start, data, model, test, report, exit

    rng = random.Random(SEED)
    kills, starts, finished, run, first = 0, 0, [], None, []
    while kills < TRAIN_KILLS or run is not None:
        assert starts < 4 * TRAIN_KILLS, f"only {kills} kills in {starts} starts: the runs end too soon"
        if run is None:
            run = runs / f"run{len(finished) + 1}"
            first = command(run.name)
        left = EPOCHS - len(_metrics(run))
        moment = rng.random() * (overhead + left * epoch_s / EPOCHS) if kills < TRAIN_KILLS else None
        starts += 1
        log = logs / f"{run.name}.log"
        code, _ = zygote.run(_next_command(run, first), log, kill_after=moment)
        rows = _registry(capsys)
        if code == -signal.SIGKILL:
            kills += 1
            _check_killed(run, reference, rows, log)
            continue
        assert code == 0, log.read_text()
        _check_finished(run, runs / "reference", rows, log)
        finished.append(run)
        run = None
    assert kills == TRAIN_KILLS and finished


def test_study_killed_mid_run_continues_to_the_same_result(zygote, data_dir, home, tmp_path, capsys):
    def command(out: Path) -> list[str]:
        return ["study", "--model", "lenet5", "--vary", "lr=0.02,0.05", "--out", str(out), "--quiet",
                "--name", "kill-study", "--set", f"data={data_dir}", "--set", f"epochs={STUDY_EPOCHS}",
                "--set", "val=40", "--set", "batch_size=32", "--set", "augment=crop:4,flip",
                "--set", "plots=false", "--set", "tensorboard=false"]

    logs = tmp_path / "logs"
    logs.mkdir()
    launched = time.time()
    code, _ = zygote.run(command(tmp_path / "reference"), logs / "reference.log")
    assert code == 0, (logs / "reference.log").read_text()
    ref_runs = list((tmp_path / "reference" / "runs").iterdir())
    reference = {p.name: _metrics(p) for p in ref_runs}
    assert len(reference) == 2
    total = sum(len(m) for m in reference.values())
    # moments are drawn over the start and the training, not the report (half a study's life)
    first = min((p / "config.json").stat().st_mtime for p in ref_runs)
    trained = max((p / "summary.json").stat().st_mtime for p in ref_runs)
    start_s, epoch_s = first - launched, (trained - first) / total

    rng = random.Random(SEED + 1)
    kills, starts, finished, out = 0, 0, 0, None
    while kills < STUDY_KILLS or out is not None:
        assert starts < 4 * STUDY_KILLS, f"only {kills} kills in {starts} starts: the studies end too soon"
        out = out or tmp_path / f"study{finished + 1}"
        runs = sorted((out / "runs").glob("*")) if (out / "runs").exists() else []
        left = total - sum(len(_metrics(r)) for r in runs)
        moment = rng.random() * (start_s + left * epoch_s) if kills < STUDY_KILLS else None
        starts += 1
        log = logs / f"{out.name}.log"
        code, _ = zygote.run(command(out), log, kill_after=moment)
        rows = _registry(capsys)
        runs = sorted((out / "runs").glob("*")) if (out / "runs").exists() else []
        if code == -signal.SIGKILL:
            kills += 1
            for run in runs:
                _check_killed(run, reference[run.name], rows, log, study="kill-study")
            continue
        assert code == 0, log.read_text()
        assert [r.name for r in runs] == sorted(reference) and (out / "report.md").exists()
        for run in runs:
            assert _metrics(run) == reference[run.name]
            assert json.loads((run / "summary.json").read_text())["epochs_run"] == STUDY_EPOCHS
            assert rows[str(run.resolve())]["status"] == "finished"
        finished, out = finished + 1, None
    assert kills == STUDY_KILLS and finished
