"""Backprop against the numerical gradient (2 forward passes per parameter), loop and batched, side by side.

Each pytest-benchmark group is one case: a net size, a batch and a backend, with
the two methods in it. The assertion is about correctness only: the two
gradients agree.
"""

from __future__ import annotations

import pytest

from xbackprop.bench import FULL_ONLY
from xbackprop.benchcases import BATCHES, LARGE_P, LARGE_P_BACKENDS, LOOP_MAX_P, SIZES, loop_is_timed, make_case
from xbackprop.gradient_check import max_relative_error
from xbackprop.initialization import parameter_count


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("method", ["backprop", "numerical", "numerical-batched"])
def test_gradient(benchmark, backend, size, batch, method, full):
    p = parameter_count(SIZES[size])
    if not full and (size in FULL_ONLY or (method == "numerical" and p > LARGE_P)):
        pytest.skip("a large case, minutes long: pytest benchmarks/ --benchmark-only --full runs it")
    if method == "numerical" and not loop_is_timed(p, backend):
        pytest.skip(f"the loop over P={p:,} on {backend} takes minutes: it is timed up to P={LARGE_P:,} everywhere "
                    f"and up to P={LOOP_MAX_P:,} on {', '.join(LARGE_P_BACKENDS)}")
    case = make_case(size, batch, backend)
    benchmark.group = f"{size} {'-'.join(map(str, SIZES[size]))} P={p} batch {batch} {backend}"
    benchmark.extra_info.update(case.info(), method=method)
    if method == "backprop":
        grads = benchmark(case.backprop)
    elif method == "numerical-batched":
        rounds = 1 if p > 10_000 else 3
        grads = benchmark.pedantic(case.numerical_batched, rounds=rounds, iterations=1, warmup_rounds=rounds > 1)
        assert max_relative_error(grads, case.backprop()) < 1e-6
        return
    else:
        rounds = 1 if p > 1_000 else 3
        grads = benchmark.pedantic(case.numerical, rounds=rounds, iterations=1, warmup_rounds=0)
    other = case.numerical() if method == "backprop" and p <= 1_000 else case.backprop()
    if method == "backprop" and p > 1_000:
        return  # the numerical test of this case checks the agreement
    assert max_relative_error(grads, other) < 1e-6
