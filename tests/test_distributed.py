"""Data-parallel training: rank sharding, and 2 gloo processes on the CPU against one process.

Why the loss curves can be compared tightly: with the same seed both jobs start from the
same weights and see the same global batches in the same order (each rank a contiguous
half of every batch); DDP averages the two half-batch gradients, which equals the
full-batch mean gradient when the halves are equal. The only difference left is the order
of floating-point sums (two sums of 16 and one add instead of one sum of 32): a few float32
ulps (~1e-7 relative) per step. Over the two dozen SGD steps here the epoch losses differed
by 8e-8 (relative) when measured, so 1e-4 is a generous bound that still catches any real
change: a shard that lost or repeated images, an unaveraged gradient or a per-rank loss in
the logs moves the loss by 1e-2 or more. BatchNorm would break the equality (each rank
normalizes its half with its own statistics), so the comparison uses lenet5 (no BN);
sync_bn, which restores global statistics, is CUDA-only in torch and not checked here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cifarlab.data import DeviceLoader, random_cifar
from cifarlab.inference import load_model
from cifarlab.training import evaluate, resume, train
from cifarlab.training.distributed import launch

RTOL = 1e-4  # see the module docstring


@pytest.fixture(scope="module")
def tiny():
    return random_cifar(n_train=224, n_test=64, val=32, seed=1)  # 192 train = 6 batches of 32


def cfg(tmp_path, name, **kw):
    base = dict(model="lenet5", epochs=3, batch_size=32, lr=0.05, optimizer="sgd", schedule="constant",
                augment="none", runs_dir=str(tmp_path / "runs"), name=name, tensorboard=False,
                plots=False, progress=False, seed=3)
    return {**base, **kw}


def losses(run_dir) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- sharding
@pytest.mark.parametrize("n,batch,world", [(100, 32, 2), (97, 32, 3), (66, 32, 4), (10, 4, 3)])
def test_ranks_split_every_global_batch_between_them(n, batch, world):
    split = random_cifar(n_train=n, n_test=0, seed=0).train
    whole = list(DeviceLoader(split, batch, shuffle=True, seed=5))
    parts = [list(DeviceLoader(split, batch, shuffle=True, seed=5, rank=r, world_size=world)) for r in range(world)]
    assert [len(DeviceLoader(split, batch, rank=r, world_size=world)) for r in range(world)] == [len(p) for p in parts]
    for b, (x, y) in enumerate(whole):  # rank order reassembles each global batch exactly
        shards = [p[b] for p in parts if b < len(p)]
        assert torch.equal(torch.cat([s[0] for s in shards]), x)
        assert torch.equal(torch.cat([s[1] for s in shards]), y)
    assert sum(len(s[1]) for p in parts for s in p) == n  # every image once, none twice


def test_short_last_batch_is_empty_on_the_last_ranks_only():
    split = random_cifar(n_train=66, n_test=0, seed=0).train  # last global batch: 2 images, 4 ranks
    lens = [len(DeviceLoader(split, 32, rank=r, world_size=4)) for r in range(4)]
    assert lens == [3, 3, 2, 2]


# ---------------------------------------------------------------- 2 processes vs 1
@pytest.mark.slow  # starts several processes: 7-27 CPU-s
def test_two_gloo_processes_match_one_process_and_the_checkpoint_loads_alone(tmp_path, tiny):
    one = train(cfg(tmp_path, "one", epochs=4), data=tiny)
    two = launch(2, train, cfg(tmp_path, "two"), data=tiny)  # 3 epochs, then resumed to 4
    assert (two.run_dir / "last.pt").is_file() and not list(two.run_dir.glob("*.tmp"))
    two = launch(2, resume, two.run_dir, epochs=4, data=tiny)
    a, b = losses(one.run_dir), losses(two.run_dir)
    assert len(a) == len(b) == 4
    assert a[0] - a[-1] > 100 * RTOL * a[0], "the loss must move far more than the tolerance"
    np.testing.assert_allclose(b, a, rtol=RTOL)
    summary = json.loads((two.run_dir / "summary.json").read_text())
    assert summary["hardware"]["processes"] == 2 and summary["data"]["train"] == 192
    model, meta = load_model(two.run_dir / "last.pt")  # a plain module: no "module." prefixes
    assert meta["distributed"]["world_size"] == 2 and meta["epoch"] == 4
    single = evaluate(two.run_dir / "last.pt", data=tiny)
    reference = evaluate(one.run_dir / "last.pt", data=tiny)
    assert single["n"] == 64
    assert single["loss"] == pytest.approx(reference["loss"], rel=1e-3)


@pytest.mark.slow  # starts several processes: 7-27 CPU-s
def test_sync_bn_is_refused_on_the_cpu_with_the_reason(tmp_path, tiny):
    """torch's SyncBatchNorm runs on CUDA only; the equality with sync_bn is a GPU check."""
    from cifarlab.errors import CifarlabError
    with pytest.raises(CifarlabError, match="--sync-bn needs CUDA"):
        launch(2, train, cfg(tmp_path, "bn", model="lenet5_modern"), data=tiny, sync_bn=True)


def test_batch_that_does_not_divide_over_the_processes_is_refused(tmp_path, tiny, monkeypatch):
    import torch.multiprocessing as mp

    from cifarlab.errors import CifarlabError
    spawned = []
    monkeypatch.setattr(mp, "spawn", lambda *a, **k: spawned.append(a))
    with pytest.raises(CifarlabError, match="batch_size 33 .* 2 processes"):
        launch(2, train, cfg(tmp_path, "odd", batch_size=33), data=tiny)
    assert spawned == [] and not (tmp_path / "runs").exists()  # refused before any process started


@pytest.mark.slow  # starts several processes: 7-27 CPU-s
def test_cli_nproc_trains_and_only_rank_0_reports(tmp_path, capfd):
    from cifarlab.cli import main
    from cifarlab.data.synthetic import write_cifar10_python
    data = write_cifar10_python(tmp_path / "data", per_batch=20, n_test=20).path
    runs = tmp_path / "runs"
    args = ["train", "--data", str(data), "--model", "lenet5", "--epochs", "1", "--batch-size", "20",
            "--val", "20", "--runs-dir", str(runs), "--name", "cli", "--no-tensorboard", "--no-plots",
            "--no-progress", "--augment", "none", "--nproc", "2", "--json"]
    assert main(args) == 0
    out = capfd.readouterr().out
    reports = [line for line in out.splitlines() if line.startswith("{")]
    assert len(reports) == 1 and json.loads(reports[0])["run_dir"] == str(runs / "cli")
    assert len(losses(runs / "cli")) == 1 and (runs / "cli" / "summary.json").is_file()


THROUGHPUT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


@pytest.mark.slow  # starts several processes: 7-27 CPU-s
def test_throughput_benchmark_times_the_data_parallel_step_in_two_processes():
    """benchmarks/train_throughput.py --nproc 2: the DDP step `train --nproc 2` runs, timed."""
    out = subprocess.run([sys.executable, str(THROUGHPUT), "--model", "lenet5", "--batch-size", "8", "--batches", "2",
                          "--chunks", "2", "--warmup", "1", "--nproc", "2", "--device", "cpu", "--no-results"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"batch 8 \(2 x 4, \d+ threads each\)", out.stdout), out.stdout
    assert "2 process(es)" in out.stdout and "images/s" in out.stdout


@pytest.mark.slow  # starts several processes: 7-27 CPU-s
def test_throughput_benchmark_times_a_low_resolution_stage_step():
    """--side 16: the step of a 16-px progressive-resizing stage (airnet pools globally, so it
    runs at any size); a network that cannot take 16-px input fails loudly, not silently at 32."""
    base = [sys.executable, str(THROUGHPUT), "--batch-size", "8", "--batches", "1", "--chunks", "1", "--warmup", "1",
            "--device", "cpu", "--side", "16", "--no-results"]
    out = subprocess.run(base + ["--model", "airnet_tiny"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| 16 px | compile False" in out.stdout and "images/s" in out.stdout
    fixed = subprocess.run(base + ["--model", "lenet5"], capture_output=True, text=True, timeout=300)
    assert fixed.returncode != 0 and "shapes cannot be multiplied" in fixed.stderr
