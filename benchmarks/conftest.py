"""Backends for the benchmarks: every importable one; CuPy only with a GPU (skipped with the reason)."""

from __future__ import annotations

import pytest

from xbackprop.backend import BackendUnavailableError, get_namespace

BENCH_BACKENDS = ("numpy", "torch", "jax", "cupy")


@pytest.fixture(params=BENCH_BACKENDS)
def backend(request) -> str:
    """A backend name; JAX's float64 is on inside the benchmark only (the gradient cases are float64)."""
    try:
        get_namespace(request.param, strict=True)
    except BackendUnavailableError as exc:
        pytest.skip(f"{request.param}: {exc}")
    if request.param == "jax":
        import jax

        with jax.enable_x64(True):
            yield request.param
    else:
        yield request.param


@pytest.fixture(params=["cpu", "cuda"])
def torch_device(request) -> str:
    """A PyTorch device for the eager peers: the CPU, and CUDA where PyTorch sees a GPU (skipped otherwise)."""
    torch = pytest.importorskip("torch", reason="PyTorch not installed")
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA device")
    return request.param


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true",
                     help="also the largest gradient cases (the wide net, the book's net by the element loop): "
                          "many minutes more")


@pytest.fixture
def full(request) -> bool:
    """Whether ``--full`` asked for the largest cases too."""
    return request.config.getoption("--full")
