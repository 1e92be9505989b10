"""Training throughput (images/s) of one model through the real training step.

Prints the environment (python, torch, device, CPU, cores, threads, commit), then the
median images/s over several timed chunks after warm-up. Random uint8 data of CIFAR's
shape by default (the data source does not change the compute); ``--data`` uses a real
subset. CPU timing: time.perf_counter; GPU: CUDA events + synchronize. The result is also
appended as a row to ``results/train_throughput.csv`` (``--results``/``--no-results``).

    python benchmarks/train_throughput.py --model resnet20 --batch-size 128
    python benchmarks/train_throughput.py --model resnet20 --batch-size 128 --nproc 2
    python benchmarks/train_throughput.py --model airnet_small --batch-size 250 --compile
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from _env import add_results_args, environment, record  # benchmarks/_env.py
from cifarlab.data import DeviceLoader, build_augment, random_cifar
from cifarlab.training.config import TrainConfig
from cifarlab.inference.hardware import bf16_native, pick_device
from cifarlab.training.loop import autocast
from cifarlab.training.losses import build_loss
from cifarlab.training.optim import build_optimizer
from cifarlab.models import create_model


def timed_chunk(step, batches, device) -> float:
    """Seconds to run ``step`` over ``batches``, measured the right way for the device."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for x, y in batches:
            step(x, y)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000
    t = time.perf_counter()
    for x, y in batches:
        step(x, y)
    return time.perf_counter() - t


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=int, default=128, help="global batch (split over --nproc)")
    p.add_argument("--batches", type=int, default=8, help="batches per timed chunk")
    p.add_argument("--chunks", type=int, default=5, help="timed chunks (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this machine, as `cifarlab train --nproc N`: each "
                        "takes batch/N images and cores/N threads; gradients are all-reduced (DDP, gloo)")
    p.add_argument("--data", default=None, help="real CIFAR source; default random data of the right shape")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=TrainConfig.amp,
                   help="bf16 autocast where the device runs it natively, as training does "
                        "(default: on; --no-amp times float32)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model as `train --compile` does; the warm-up batches then "
                        "include the compilation, whose time is printed")
    p.add_argument("--side", type=int, default=32,
                   help="train at this resolution (px), as a progressive-resizing stage does (default 32)")
    add_results_args(p)
    args = p.parse_args(argv)
    if args.nproc < 1 or args.batch_size % args.nproc:
        p.error(f"--batch-size {args.batch_size} must divide evenly over --nproc {args.nproc}")
    return args


def measure(args: argparse.Namespace, rank: int = 0, world: int = 1) -> dict:
    """Median images/s of the whole job (every process's images) over the timed chunks."""
    from cifarlab.training import distributed
    with distributed.session(args.device) as (info, rank_dev):
        device = rank_dev or pick_device(args.device)
        local = args.batch_size // world
        n = local * (args.batches * args.chunks + args.warmup)
        if args.data:
            from cifarlab.data import load_cifar
            data = load_cifar(args.data, val=0, progress=False).subset(train=n)
        else:
            data = random_cifar(n_train=n, n_test=10, seed=rank)
        cfg = TrainConfig(model=args.model, batch_size=args.batch_size)
        torch.manual_seed(0)
        model = create_model(cfg.model).to(device).train()
        if cfg.channels_last:  # as the engine trains it (TrainConfig's default)
            model = model.to(memory_format=torch.channels_last)
        opt = build_optimizer(model, cfg)
        model = distributed.wrap_model(model, info, device, sync_bn=False)
        if args.compile:
            model = torch.compile(model)
        loss_fn = build_loss(cfg.loss, 10, cfg.label_smoothing)
        loader = DeviceLoader(data.train, local, device, (0.5,) * 3, (0.25,) * 3, shuffle=True,
                              augment=build_augment(cfg.augment), drop_last=True,
                              channels_last=cfg.channels_last)
        loader.size = args.side  # as a low-resolution stage sets it: the loader resizes each batch
        batches = list(loader)  # augmentation is part of the loader, timed separately below

        def step(x, y):
            with autocast(device, args.amp):
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # under DDP: the gradients' all-reduce happens here
            opt.step()

        if rank == 0:
            print(environment(device))
            print(f"model {args.model} | batch {args.batch_size} ({world} x {local}, "
                  f"{torch.get_num_threads()} threads each) | {'real' if args.data else 'random'} data | "
                  f"augment {cfg.augment} | optimizer {cfg.optimizer} | amp {args.amp and bf16_native(device)} | "
                  f"channels_last {cfg.channels_last} | {args.side} px | compile {args.compile}", flush=True)
        warm_s = timed_chunk(step, batches[:args.warmup], device)
        if rank == 0 and args.compile:
            print(f"warm-up with compilation: {warm_s:.1f} s for {args.warmup} batches", flush=True)
        rates = []
        for c in range(args.chunks):
            chunk = batches[args.warmup + c * args.batches: args.warmup + (c + 1) * args.batches]
            info.barrier()  # every process starts the chunk together
            seconds = timed_chunk(step, chunk, device)
            rates.append(len(chunk) * args.batch_size / seconds)
            if rank == 0:
                print(f"chunk {c + 1}/{args.chunks}: {rates[-1]:.0f} images/s", flush=True)
        info.barrier()
        t = time.perf_counter()
        for _ in loader:
            pass
        aug_rate = len(loader) * local / (time.perf_counter() - t)
    return {"rates": rates, "aug_rate": aug_rate, "device": device, "threads": torch.get_num_threads(),
            "amp": bool(args.amp and bf16_native(device)), "augment": cfg.augment, "optimizer": cfg.optimizer,
            "channels_last": cfg.channels_last, **({"compile_s": round(warm_s, 1)} if args.compile else {})}


def _worker(rank: int, args: argparse.Namespace, port: int, queue) -> None:
    from cifarlab.training.distributed import exit_now, join_local_job
    join_local_job(rank, args.nproc, port, args.threads)  # as `train --nproc` sets up its workers
    result = measure(args, rank, args.nproc)
    if rank == 0:
        queue.put(result)
    exit_now()  # as `train --nproc` workers: no C++ static destructors racing gloo's threads


def main(argv=None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.nproc == 1:
        result = measure(args)
    else:
        import torch.multiprocessing as mp

        from cifarlab.training.distributed import free_port
        ctx = mp.get_context("spawn")
        queue = ctx.SimpleQueue()
        mp.spawn(_worker, args=(args, free_port(), queue), nprocs=args.nproc, join=True)
        result = queue.get()
    rates = result["rates"]
    print(f"train step: median {statistics.median(rates):.0f} images/s (min {min(rates):.0f}, max {max(rates):.0f}, "
          f"{args.chunks} chunks of {args.batches} batches, {args.nproc} process(es)) | loader+augment alone: "
          f"{result['aug_rate']:.0f} images/s per process")
    epoch_s = 45000 / statistics.median(rates)
    print(f"=> one epoch of 45,000 images: about {epoch_s / 60:.1f} min on this device")
    record("train_throughput", {
        "model": args.model, "batch_size": args.batch_size, "nproc": args.nproc,
        "data": "real" if args.data else "random", "augment": result["augment"], "optimizer": result["optimizer"],
        "amp": result["amp"], "channels_last": result["channels_last"], "side": args.side, "compile": args.compile,
        "images_per_s": round(statistics.median(rates)), "images_per_s_min": round(min(rates)),
        "images_per_s_max": round(max(rates)), "chunks": args.chunks, "batches": args.batches,
        "loader_images_per_s": round(result["aug_rate"]), "compile_s": result.get("compile_s"),
        "load_avg": round(os.getloadavg()[0], 2), "threads": result["threads"], "torch": torch.__version__,
    }, device=result["device"], args=args)


if __name__ == "__main__":
    main()
