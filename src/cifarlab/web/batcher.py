"""Micro-batching: concurrent requests for one model share one forward pass.

One worker thread per model takes the first waiting job, then whatever else is queued
(waiting at most ``max_wait_s`` for more) up to ``max_batch`` pictures, and runs them as
one batch. On a CPU a batch of 16 small pictures costs little more than one, so under
load this multiplies throughput; with a single client the wait adds at most
``max_wait_s``. One thread also keeps torch from running many small forwards at once,
which on 2 cores only makes every request slower.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class BatchResult:
    probabilities: np.ndarray  # [n, classes] for this job's pictures
    batch_size: int  # pictures in the forward pass this job shared
    compute_s: float  # seconds that forward pass took


@dataclass
class _Job:
    arrays: list[np.ndarray]
    future: Future
    call: Callable[[], object] | None = None  # other work on the model, run alone in this thread


def lower_priority(steps: int = 10) -> None:
    """Make the calling thread yield the CPU to the rest of the server (Linux: threads have
    their own nice value). Decoding a large picture takes every core it is given; the event
    loop (and /health) should not wait behind it. (The batcher's thread keeps its priority:
    lowered, it slowed the valid requests under the hostile load and did not help /health;
    results/serve_load.csv.)"""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))
    except (AttributeError, OSError):  # not Linux-like: the threads share the CPU evenly
        pass


class MicroBatcher:
    """``submit(arrays) -> Future[BatchResult]``; ``fn`` maps a list of pictures to probabilities."""

    def __init__(self, fn: Callable[[list[np.ndarray]], np.ndarray], max_batch: int = 64,
                 max_wait_s: float = 0.002, name: str = "model"):
        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_s
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, arrays: list[np.ndarray]) -> Future:
        future: Future = Future()
        if not arrays:
            future.set_result(BatchResult(np.zeros((0, 0), np.float32), 0, 0.0))
        else:
            self._queue.put(_Job(list(arrays), future))
        return future

    def call(self, fn: Callable[[], object]) -> Future:
        """Run ``fn()`` in the worker thread, between two forward passes: for work that must
        not overlap them (a saliency map hooks into the model's layers)."""
        future: Future = Future()
        self._queue.put(_Job([], future, fn))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    # ------------------------------------------------------------ worker
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._gather(first)
            self._process(jobs)
            if stop:
                return

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        """The first job plus those queued within max_wait_s, up to max_batch pictures."""
        jobs, count = [first], len(first.arrays)
        deadline = time.monotonic() + self.max_wait_s
        while count < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            count += len(job.arrays)
        return jobs, False

    def _process(self, jobs: list[_Job]) -> None:
        # a caller that gave up (its deadline passed) cancelled its future: skip its pictures
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        for job in [job for job in jobs if job.call is not None]:
            try:
                job.future.set_result(job.call())
            except BaseException as exc:  # the caller, not this thread, must see the failure
                job.future.set_exception(exc)
        jobs = [job for job in jobs if job.call is None]
        if not jobs:
            return
        arrays = [a for job in jobs for a in job.arrays]
        start = time.perf_counter()
        try:
            probs = self.fn(arrays)
        except BaseException as exc:  # the callers, not this thread, must see the failure
            for job in jobs:
                job.future.set_exception(exc)
            return
        seconds = time.perf_counter() - start
        offset = 0
        for job in jobs:
            n = len(job.arrays)
            job.future.set_result(BatchResult(probs[offset:offset + n], len(arrays), seconds))
            offset += n
