"""Timing helpers shared by ``python -m xbackprop.bench`` and ``benchmarks/``: medians, warm-ups, the machine.

The callables timed here must finish their device work before returning (see
:func:`xbackprop.backend.synchronize`), or the figures measure queueing, not work.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["warm_up", "median_seconds", "timed_runs", "back_to_back_seconds", "blas_info", "machine_description"]

#: Calls before timing starts: enough to fill caches, settle allocators and finish JIT compilation.
WARM_UP_CALLS = 50


def warm_up(fn: Callable[[], Any], calls: int = WARM_UP_CALLS) -> None:
    """Call ``fn`` ``calls`` times, untimed."""
    for _ in range(calls):
        fn()


def median_seconds(fn: Callable[[], Any], *, min_time: float = 0.2, min_runs: int = 5, max_runs: int = 1000,
                   warm_up_calls: int = 1) -> float:
    """Median wall time of ``fn`` over at least ``min_runs`` calls and ``min_time`` seconds, after
    ``warm_up_calls`` untimed calls."""
    warm_up(fn, warm_up_calls)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timed_runs(fn: Callable[[], Any], *, budget_s: float, max_runs: int,
               after_each: Callable[[], Any] | None = None) -> tuple[list[float], Any]:
    """Time ``fn`` once, then again while the runs total less than ``budget_s`` (``max_runs`` at most),
    for calls too slow to repeat hundreds of times. ``after_each`` runs untimed after every run (to time
    something beside it). Returns the seconds of each run and the last run's result."""
    times: list[float] = []
    result = None
    while not times or (len(times) < max_runs and sum(times) < budget_s):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        if after_each is not None:
            after_each()
    return times, result


def back_to_back_seconds(fn: Callable[[], Any], calls: int) -> float:
    """Wall time of ``calls`` back-to-back calls of ``fn``."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - start


def blas_info() -> str:
    """The BLAS library NumPy uses and its thread count, e.g. ``"openblas, 2 threads"``."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    if not pools:
        return "none found"
    return ", ".join(f"{p['internal_api']}, {p['num_threads']} threads" for p in pools)


def machine_description() -> str:
    """The host in a few words, e.g. ``"x86_64, 2 CPUs, openblas, 2 threads"``."""
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {blas_info()}"
