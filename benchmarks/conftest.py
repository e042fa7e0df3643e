"""Backends for the benchmarks: every importable one; CuPy only with a GPU (skipped with the reason)."""

from __future__ import annotations

import pytest

from xbackprop.backend import BackendUnavailableError, get_namespace

BENCH_BACKENDS = ("numpy", "torch", "jax", "cupy")


@pytest.fixture(params=BENCH_BACKENDS)
def backend(request) -> str:
    try:
        get_namespace(request.param, strict=True)
    except BackendUnavailableError as exc:
        pytest.skip(f"{request.param}: {exc}")
    return request.param
