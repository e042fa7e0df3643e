"""Timing helpers shared by python -m xbackprop.bench and benchmarks/ (xbackprop.timing)."""

from __future__ import annotations

import time

from xbackprop.timing import back_to_back_seconds, machine_description, median_seconds, timed_runs, warm_up


def counter():
    calls = []

    def fn():
        calls.append(None)
        return len(calls)

    return fn, calls


def test_warm_up_and_median_call_as_asked():
    fn, calls = counter()
    warm_up(fn, calls=7)
    assert len(calls) == 7
    assert median_seconds(fn, min_time=0.0, min_runs=5, warm_up_calls=2) >= 0 and len(calls) == 7 + 2 + 5
    assert back_to_back_seconds(fn, 4) >= 0 and len(calls) == 18


def test_timed_runs_stop_at_the_budget_or_the_count():
    fn, calls = counter()
    beside = []
    times, last = timed_runs(fn, budget_s=1e9, max_runs=3, after_each=lambda: beside.append(None))
    assert len(times) == 3 and last == 3 and len(beside) == 3

    def slow():
        time.sleep(0.02)

    times, _ = timed_runs(slow, budget_s=0.01, max_runs=10)
    assert len(times) == 1  # always one run, never more once the budget is spent


def test_machine_description_names_cpus_and_blas():
    assert "CPUs" in machine_description()
