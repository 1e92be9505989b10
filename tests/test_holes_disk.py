"""Issue 32, holes 7, 8 and 9 (kill): a full disk, a corrupt run registry and a run killed at once.

A full disk is simulated by making the writes the package does fail with ENOSPC (the errno
a real full disk gives); every command must answer with one ``cifarlab: error:`` line and
leave no empty or half file behind.
"""

from __future__ import annotations

import errno
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from cifarlab import runlog
from cifarlab.cli import main
from cifarlab.data.synthetic import write_cifar10_python
from cifarlab.runlog import Registry

from _checkpoints import write_checkpoint
from conftest import need_module

FAST = ["--model", "lenet5_modern", "--batch-size", "32", "--val", "40", "--no-tensorboard", "--no-progress",
        "--augment", "none", "--no-plots", "--device", "cpu"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_cifar10_python(tmp_path_factory.mktemp("data"), per_batch=40, n_test=40).path


def _one_line(code: int, err: str) -> str:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cifarlab: error: "), err
    return lines[0]


def _full_disk_for(monkeypatch, method: str, match=lambda path: True):
    """Path.<method> raises ENOSPC for the paths ``match`` accepts, as on a full disk."""
    real = getattr(pathlib.Path, method)

    def full(self, *args, **kwargs):
        if match(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, *args, **kwargs)
    monkeypatch.setattr(pathlib.Path, method, full)


# ---------------------------------------------------------------- hole 8: a full disk
@pytest.mark.slow
def test_train_on_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(data_dir, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "--data", str(data_dir), "--epochs", "1", "--runs-dir", str(runs), "--name", "a", *FAST]) == 0
    last = (runs / "a" / "last.pt").read_bytes()
    capsys.readouterr()
    _full_disk_for(monkeypatch, "write_bytes", lambda p: ".pt." in p.name)  # the checkpoints' temporaries
    line = _one_line(main(["train", "--resume", str(runs / "a"), "--epochs", "2"]), capsys.readouterr().err)
    assert "disk is full" in line and ("last.pt" in line or "best.pt" in line)
    assert f"resume with: cifarlab train --resume {runs / 'a'}" in line
    assert (runs / "a" / "last.pt").read_bytes() == last  # the epoch-1 checkpoint is whole
    assert not [p for p in (runs / "a").iterdir() if p.name.startswith(".")]  # no temporaries left
    monkeypatch.undo()
    assert main(["train", "--resume", str(runs / "a"), "--epochs", "2"]) == 0  # once space is free, it goes on


def test_export_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    need_module("onnx", "onnx extra not installed: pip install 'cifarlab[onnx]'")
    path = write_checkpoint(tmp_path / "m.pt", model="lenet5_modern")
    _full_disk_for(monkeypatch, "write_bytes")
    line = _one_line(main(["export", str(path), "-o", str(tmp_path / "m.onnx")]), capsys.readouterr().err)
    assert "disk is full" in line and "m.onnx" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


@pytest.mark.parametrize("suffix", [".svg", ".png"])
def test_diagram_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys, suffix):
    if suffix == ".png":
        need_module("matplotlib", "matplotlib not installed")
        import matplotlib.figure
        real = matplotlib.figure.Figure.savefig

        def full(self, fname, *a, **k):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fname))
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
        assert real is not full
    else:
        _full_disk_for(monkeypatch, "write_text")
    out = tmp_path / f"d{suffix}"
    line = _one_line(main(["diagram", "lenet5_modern", "-o", str(out)]), capsys.readouterr().err)
    assert "disk is full" in line
    assert not list(tmp_path.iterdir())


def _pictures(folder, n=3):
    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (32, 32), (60 * i, 20, 200)).save(folder / f"{i}.png")
    return folder


def test_predict_out_on_a_full_disk_leaves_no_empty_csv(tmp_path, monkeypatch, capsys):
    model = write_checkpoint(tmp_path / "m.pt", model="lenet5_modern")
    pics = _pictures(tmp_path / "pics")
    out = tmp_path / "p.csv"
    _full_disk_for(monkeypatch, "write_text")
    line = _one_line(main(["predict", str(model), str(pics), "--out", str(out)]), capsys.readouterr().err)
    assert "disk is full" in line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".p.csv")]


def test_predict_out_filling_the_disk_midway_keeps_its_rows_for_resume(tmp_path, monkeypatch, capsys):
    from cifarlab.inference import batch_predict
    model = write_checkpoint(tmp_path / "m.pt", model="lenet5_modern")
    pics = _pictures(tmp_path / "pics")
    out = tmp_path / "p.csv"
    real, calls = batch_predict._lines, []

    def fills_up(rows):  # the first batch fits, the disk is full at the second
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(rows)
    monkeypatch.setattr(batch_predict, "_lines", fills_up)
    line = _one_line(main(["predict", str(model), str(pics), "--out", str(out), "--batch-size", "1"]),
                     capsys.readouterr().err)
    assert "disk is full" in line and "--resume" in line and "1 rows" in line
    assert out.read_text().splitlines()[1].startswith("0.png,")
    monkeypatch.undo()
    assert main(["predict", str(model), str(pics), "--out", str(out), "--resume"]) == 0
    assert [r.split(",")[0] for r in out.read_text().splitlines()] == ["path", "0.png", "1.png", "2.png"]


# ---------------------------------------------------------------- hole 7: a corrupt registry
@pytest.fixture
def corrupt_registry():
    path = runlog.default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a database\n" * 200)
    return path


def test_runs_with_a_corrupt_registry_says_what_to_do_in_one_line(corrupt_registry, capsys):
    line = _one_line(main(["runs"]), capsys.readouterr().err)
    assert str(corrupt_registry) in line and "move it aside" in line
    assert corrupt_registry.read_bytes().startswith(b"this is not")  # left as it was, for the user to look at


@pytest.mark.slow
def test_train_with_a_corrupt_registry_goes_on_with_a_warning(corrupt_registry, data_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "--data", str(data_dir), "--epochs", "1", "--runs-dir", str(runs), "--name", "a", *FAST]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "registry" in line]
    assert len(warnings) == 1 and warnings[0].startswith("cifarlab: warning: ") and "Traceback" not in err
    assert (runs / "a" / "summary.json").is_file()


# ---------------------------------------------------------------- hole 9: a run killed at once
@pytest.mark.slow
def test_a_run_killed_right_after_its_folder_appears_is_listed(data_dir, tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "CIFARLAB_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "cifarlab", "train", "--data", str(data_dir), "--epochs", "50",
                             "--runs-dir", str(runs), "--name", "k", *FAST], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (runs / "k" / "config.json").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (runs / "k" / "config.json").exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    registry = Registry(tmp_path / "home" / "runs.sqlite")
    registry.refresh()
    rows = registry.list()
    assert [r["name"] for r in rows] == ["k"] and rows[0]["status"] == "interrupted"
