"""Data-parallel training on PyTorch's own engine: DistributedDataParallel, one process per device.

Two ways in, one code path: ``torchrun ... -m cifarlab train ...`` (one or several
machines) sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR in each process's environment;
``cifarlab train --nproc N`` (``launch``) spawns N processes on this machine and sets the
same variables. ``train()`` then opens a ``session``: gloo on CPU, nccl on CUDA.

What each rank does: the same model (seeded alike, then broadcast from rank 0), its shard
of every global batch (``DeviceLoader(rank=, world_size=)``), gradients averaged by DDP,
epoch metrics summed over ranks with ``all_reduce`` so every rank (and the logs rank 0
writes) sees global values. Only rank 0 writes the run folder and prints.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from cifarlab.errors import CifarlabError, ConfigError


@dataclass
class Dist:
    """Where this process stands in the job; the single-process default reduces nothing."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over ranks, in place (a no-op alone)."""
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (e.g. the run folder it created)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_module(self, module: nn.Module, params: bool = True) -> None:
        """Rank 0's parameters (unless not ``params``) and buffers (BN statistics) everywhere."""
        if not self.active:
            return
        with torch.no_grad():
            for t in [*(module.parameters() if params else ()), *module.buffers()]:
                dist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def to_dict(self) -> dict:
        return {"world_size": self.world_size, "backend": self.backend}


def env_world_size() -> int:
    """WORLD_SIZE as torchrun (or ``launch``) set it; 1 when not launched that way."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def _from_env(backend: str) -> Dist:
    return Dist(rank=int(os.environ.get("RANK", 0)), world_size=env_world_size(),
                local_rank=int(os.environ.get("LOCAL_RANK", 0)), backend=backend)


def rank_device(device_name: str, local_rank: int) -> torch.device:
    """cuda:LOCAL_RANK when CUDA is wanted and present, else the CPU (gloo)."""
    if device_name in ("auto", "cuda") and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"process {local_rank} on this machine has no GPU of its own "
                              f"({torch.cuda.device_count()} visible); use at most one process per GPU")
        return torch.device("cuda", local_rank)
    if device_name == "cuda":
        raise ConfigError("device=cuda but torch sees no CUDA GPU; use --device cpu or auto")
    if device_name == "mps":
        raise ConfigError("multi-process training runs on CUDA (nccl) or CPU (gloo), not MPS; use --device cpu")
    return torch.device("cpu")


@contextlib.contextmanager
def session(device_name: str) -> Iterator[tuple[Dist, torch.device | None]]:
    """Join the process group the environment describes (if any) for the length of a fit.

    Yields ``(Dist, device)``; device is None outside a multi-process job (the caller
    picks it as usual). The group is destroyed on exit only if this call created it.
    """
    if env_world_size() <= 1 and not dist.is_initialized():
        yield Dist(), None
        return
    probe = _from_env("gloo")
    device = rank_device(device_name, probe.local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    created = not dist.is_initialized()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if created:
        dist.init_process_group(backend=backend, init_method="env://")
    info = Dist(dist.get_rank(), dist.get_world_size(), probe.local_rank, dist.get_backend())
    try:
        yield info, device
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def wrap_model(model: nn.Module, info: Dist, device: torch.device, sync_bn: bool) -> nn.Module:
    """DDP around ``model`` (BatchNorm layers synchronized across ranks when ``sync_bn``)."""
    if not info.active:
        return model
    if sync_bn and device.type != "cuda":  # torch's SyncBatchNorm is CUDA-only
        raise ConfigError("--sync-bn needs CUDA GPUs (nccl); on the CPU drop it: each process then "
                          "normalizes its share of the batch with its own statistics")
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def check_batch(batch_size: int, info: Dist) -> None:
    if batch_size % info.world_size:
        raise ConfigError(f"batch_size {batch_size} is the global batch and must divide evenly over "
                          f"{info.world_size} processes; pick a multiple of {info.world_size}")


# ---------------------------------------------------------------- launching on this machine
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` (``train`` or ``resume``) in ``nproc`` processes on this machine.

    Returns rank 0's ``RunResult`` (its model reloaded from the run's checkpoint). A
    ``CifarlabError`` in any rank is raised here with its one line.
    """
    import torch.multiprocessing as mp
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc} must be >= 1")
    if env_world_size() > 1:
        raise ConfigError("--nproc inside a torchrun job: drop --nproc (torchrun already started the processes)")
    _check_before_spawn(nproc, fn, args)
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = free_port()
    try:
        mp.spawn(_worker, args=(nproc, port, queue, fn, args, kwargs), nprocs=nproc, join=True)
    except (mp.ProcessRaisedException, mp.ProcessExitedException):
        _raise_reported(queue)
        raise
    return _result(queue)


def _check_before_spawn(nproc: int, fn: Callable, args: tuple) -> None:
    """A new run's global batch that cannot divide over ``nproc`` is refused here, before any
    process starts (each rank checks again, for torchrun, but only after the rendezvous)."""
    from cifarlab.training.config import TrainConfig
    if getattr(fn, "__name__", "") != "train" or not args:  # resume: the run folder's config, read in the ranks
        return
    cfg = args[0] if isinstance(args[0], TrainConfig) else TrainConfig.from_dict(args[0]) \
        if isinstance(args[0], dict) else None
    if cfg is not None:
        check_batch(cfg.batch_size, Dist(world_size=nproc))


def join_local_job(rank: int, nproc: int, port: int, threads: int | None = None) -> None:
    """This spawned process becomes rank ``rank`` of ``nproc`` on this machine (env:// rendezvous
    on ``port``); on the CPU it takes ``threads`` or its share of the cores (no oversubscription)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                      LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if threads:
        torch.set_num_threads(threads)
    elif not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))


def _worker(rank: int, nproc: int, port: int, queue, fn: Callable, args: tuple, kwargs: dict) -> None:
    join_local_job(rank, nproc, port)
    try:
        result = fn(*args, **kwargs)
    except CifarlabError as exc:
        queue.put(("error", rank, str(exc), exc.exit_code))
        raise
    if rank == 0:
        queue.put(("result", str(result.run_dir), result.summary))
    exit_now()


def exit_now() -> None:
    """End a finished worker at once: the run folder is written and the process group gone.

    A normal interpreter exit runs C++ static destructors, and now and then one of them meets
    a gloo or TCPStore thread that is still joinable and aborts the process ("terminate
    called without an active exception", SIGABRT), which turns a finished job into a failed
    one. ``os._exit`` skips them; the queue's put above has already written its pipe.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def _reported_error(_rank, message: str, code: int) -> CifarlabError:
    err = CifarlabError(message)
    err.exit_code = code
    return err


def _raise_reported(queue) -> None:
    """The first rank's CifarlabError as one line (not the child's traceback)."""
    while not queue.empty():
        kind, *rest = queue.get()
        if kind == "error":
            raise _reported_error(*rest) from None


def _result(queue):
    from pathlib import Path

    from cifarlab.training.runs import RunResult
    from cifarlab.inference.checkpoint import load_model
    while not queue.empty():
        kind, *rest = queue.get()
        if kind == "error":
            raise _reported_error(*rest)
        if kind == "result":
            run_dir, summary = rest
            model, _ = load_model(Path(run_dir))
            return RunResult(Path(run_dir), summary, model)
    raise CifarlabError("the distributed job ended without a result from rank 0; see the lines above")
