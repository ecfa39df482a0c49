"""Offline work over all cores with a progress bar (synthetic data, the preprocessing cache)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm


def cpu_count() -> int:
    """Cores this process may use (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def run_parallel(function: Callable, jobs: list, workers: int, what: str) -> list:
    """``[function(job) for job in jobs]`` over ``workers`` processes (0: all cores)."""
    return list(iter_parallel(function, jobs, workers, what))


def iter_parallel(function: Callable, jobs: list, workers: int, what: str) -> Iterator:
    """``function(job)`` for each job, in order, as they finish, over ``workers`` processes
    (0: all cores), with a progress bar (scans/s, time left).

    Workers are spawned, not forked: a fork of a process that already runs TensorFlow's
    threads can deadlock. They import numpy/scikit-image only, never TensorFlow.
    """
    if not jobs:
        return  # no empty progress bar
    workers = workers or cpu_count()
    progress = dict(total=len(jobs), desc=what, unit="scan", mininterval=1.0)
    # Inside a joblib (loky) worker of a parallel sweep, spawned children fail to start
    # (their bootstrap asks for a "loky" context); the sweep is the parallelism there.
    in_loky_worker = multiprocessing.get_start_method(allow_none=True) == "loky"
    if workers == 1 or len(jobs) < 8 or in_loky_worker:
        yield from (function(job) for job in tqdm(jobs, **progress))
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        # Up to 8 jobs a hand-over: one at a time cost a 768 px scan 17% of its rate in
        # hand-overs; at least 16 chunks a worker, so none idles long at the end.
        chunks = max(1, min(8, len(jobs) // (workers * 16)))
        yield from tqdm(pool.map(function, jobs, chunksize=chunks), **progress)
