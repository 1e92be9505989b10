"""`cifarlab train / evaluate` in-process, Ctrl-C and resume, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifarlab.cli import main
from cifarlab.data.synthetic import write_cifar10_python
from cifarlab.training import record
from _callbacks import StopAfter

FAST = ["--model", "lenet5_modern", "--batch-size", "32", "--val", "40", "--no-tensorboard", "--no-progress",
        "--augment", "none"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_cifar10_python(tmp_path_factory.mktemp("data"), per_batch=40, n_test=40).path


@pytest.mark.slow  # trains through the CLI: 5-24 CPU-s
def test_train_then_evaluate(data_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["train", "--data", str(data_dir), "--epochs", "2", "--runs-dir", str(runs), "--name", "a", "--json",
                 *FAST])
    out, _ = capsys.readouterr()
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["run_dir"] == str(runs / "a") and result["test"]["n"] == 40
    assert json.loads((runs / "a" / "config.json").read_text())["data"] == str(Path(data_dir).resolve())

    out_dir = tmp_path / "eval"
    code = main(["evaluate", str(runs / "a"), "--tta", "flip-translate", "--out", str(out_dir)])
    out, _ = capsys.readouterr()
    assert code == 0 and "top-1" in out and "top-5" in out and "airplane" in out
    assert (out_dir / "confusion-test-tta-flip-translate.csv").read_text().startswith("true\\predicted,airplane")

    code = main(["evaluate", str(runs / "a" / "last.pt"), "--split", "val", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["n"] == 40 and report["split"] == "val"

    code = main(["evaluate", str(runs / "a"), "--json"])  # best.pt on test: what training reported
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and (report["n"], report["top1"]) == (40, result["test"]["top1"])


def test_flag_errors_are_one_line(data_dir, tmp_path, capsys):
    assert main(["train", "--data", str(data_dir), "--optimizer", "lbfgs"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cifarlab: error: optimizer='lbfgs' is not one of") and err.count("\n") == 1
    assert main(["train", "--data", str(data_dir), "--model", "resnet21", "--runs-dir", str(tmp_path)]) == 1
    assert "resnet21" in capsys.readouterr().err and not list(tmp_path.iterdir())
    assert main(["evaluate", str(tmp_path / "nothing.pt")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow  # trains through the CLI: 5-24 CPU-s
def test_ctrl_c_prints_resume_line_and_resume_finishes(data_dir, tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setattr(record, "recorder", lambda study=None: [StopAfter(1)])
    code = main(["train", "--data", str(data_dir), "--epochs", "3", "--runs-dir", str(runs), "--name", "b", *FAST])
    err = capsys.readouterr().err
    assert code == 130
    assert err.strip() == f"interrupted after epoch 1; resume with: cifarlab train --resume {runs / 'b'}"
    monkeypatch.setattr(record, "recorder", lambda study=None: [])
    assert main(["train", "--resume", str(runs / "b"), "--lr", "1"]) == 1
    assert "only --epochs may change" in capsys.readouterr().err
    assert main(["train", "--resume", str(runs / "b"), "--no-progress"]) == 0
    summary = json.loads((runs / "b" / "summary.json").read_text())
    assert summary["epochs_run"] == 3
    assert main(["train", "--data", str(data_dir), "--runs-dir", str(runs), "--name", "b", *FAST]) == 1
    assert "already exists" in capsys.readouterr().err


@pytest.mark.slow
def test_sigint_to_a_real_process_exits_130_without_traceback(data_dir, tmp_path):
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "cifarlab", "train", "--data", str(data_dir), "--epochs", "500",
           "--runs-dir", str(runs), "--name", "c", *FAST]
    # a terminal's Ctrl-C: SIGINT handled by default in the child, even where this test process
    # inherited it ignored (an ignored SIGINT survives exec, and Python then keeps ignoring it)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not (runs / "c" / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted after epoch ") and line.endswith(f"resume with: cifarlab train --resume {runs / 'c'}")
    from cifarlab.inference import load_model
    model, meta = load_model(runs / "c" / "last.pt")
    assert meta["epoch"] >= 1


@pytest.mark.slow  # trains through the CLI: 5-24 CPU-s
def test_data_found_via_env_is_recorded_for_evaluate(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFARLAB_DATA", str(data_dir))
    runs = tmp_path / "runs"
    assert main(["train", "--epochs", "1", "--runs-dir", str(runs), "--name", "env", *FAST]) == 0
    recorded = json.loads((runs / "env" / "config.json").read_text())["data"]
    assert recorded and Path(recorded).exists()
    monkeypatch.delenv("CIFARLAB_DATA")
    capsys.readouterr()
    assert main(["evaluate", str(runs / "env"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 40


def _config(argv):
    from cifarlab.cli import build_parser
    from cifarlab.cli.train_cmd import config_from_args
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_no_flags_is_the_main_job_of_make_train(monkeypatch):
    import re

    import torch
    from cifarlab.training.recipes import recipe_config
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    cpu, gpu = re.search(r"TRAIN_RECIPE := \$\(if \$\(HAS_GPU\),([\w-]+),([\w-]+)\)", makefile).group(2, 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _config([]).to_dict() == recipe_config(cpu).to_dict()
    assert _config(["--data", "x", "--runs-dir", "r", "--name", "n"]).recipe == cpu  # where, not what
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _config([]).recipe == gpu
    assert _config(["--epochs", "3"]).recipe != gpu  # a flag that shapes the training: the defaults


@pytest.mark.slow  # trains through the CLI: 5-24 CPU-s
def test_a_budget_that_cannot_hold_the_run_is_refused_before_it_starts(data_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["train", "--data", str(data_dir), "--time-budget", "0.01", "--runs-dir", str(runs), "--name", "t",
                 *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "--allow-over-budget" in err[0]
    fits = int(err[0].split("--time-budget ")[1].split()[0])
    assert fits > 0.01
    assert not (runs / "t").exists()  # refused before a run folder
    code = main(["train", "--data", str(data_dir), "--time-budget", "0.01", "--allow-over-budget", "--runs-dir",
                 str(runs), "--name", "t", *FAST])
    assert code == 0 and (runs / "t" / "summary.json").is_file()


@pytest.mark.slow  # trains through the CLI: 5-24 CPU-s
def test_a_training_says_how_long_it_takes_and_ends_with_a_sentence(data_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["train", "--data", str(data_dir), "--epochs", "1", "--runs-dir", str(runs), "--name", "s", *FAST]
    assert main([*argv[:-len(FAST)], *[a for a in FAST if a != "--no-progress"], "--progress"]) == 0
    out, err = capsys.readouterr()
    assert "lenet5_modern, 1 epoch: about" in err and "in all" in err
    last = out.strip().splitlines()[-1]
    summary = json.loads((runs / "s" / "summary.json").read_text())
    assert last.startswith("Trained lenet5_modern for 1 epoch in ") and f"{summary['test']['top1']:.2%}" in last
    assert str(runs / "s") in last


@pytest.mark.parametrize("argv, words", [
    (["--lr", "nan"], "not a finite number"), (["--lr", "inf"], "not a finite number"),
    (["--set", "lr=nan"], "nan"), (["--config", "."], "a folder"), (["--config", "nope.json"], "no such file"),
    (["--train-subset", "-3"], "train_subset = -3"), (["--weight-decay", "-1"], "weight_decay = -1"),
])
def test_numbers_and_files_are_checked_before_any_work(data_dir, tmp_path, capsys, argv, words):
    try:
        code = main(["train", "--data", str(data_dir), "--runs-dir", str(tmp_path / "runs"), *FAST, *argv])
    except SystemExit as exc:  # argparse's own error: exit 2, one usage line
        code = exc.code
    err = capsys.readouterr().err
    assert code in (1, 2) and words in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_a_one_class_data_set_is_refused(tmp_path, capsys):
    from PIL import Image
    for split in ("train", "test"):
        folder = tmp_path / "one" / split / "cat"
        folder.mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (32, 32), (i * 30, 0, 0)).save(folder / f"{i}.png")
    code = main(["train", "--data", str(tmp_path / "one"), "--epochs", "1", "--val", "0",
                 "--runs-dir", str(tmp_path / "runs"), *FAST[:4], "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "one class" in err and not (tmp_path / "runs").exists()


def test_predict_refuses_a_batch_size_below_one(tmp_path, capsys):
    for size in ("0", "-1"):
        assert main(["predict", "default", str(tmp_path), "--out", str(tmp_path / "x.csv"),
                     "--batch-size", size]) == 1
        assert "--batch-size" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_a_study_of_no_values_is_refused(tmp_path, capsys):
    assert main(["study", "--model", "lenet5", "--vary", "lr=,,", "--out", str(tmp_path / "s")]) == 1
    assert "gives no values" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
