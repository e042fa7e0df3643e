"""One SGD step of the book's 784-50-10 net, batch 100 (batch draw included): xbackprop beside its peers.

Group "train step": xbackprop on each backend, a hand-written NumPy step, PyTorch
eager autograd, JAX jit and the floor of the five matrix products, float32.
"""

from __future__ import annotations

import importlib.util

import pytest

from xbackprop.initialization import parameter_count
from xbackprop.timing import blas_info, warm_up

from . import steps

GROUP = "train step 784-50-10 batch 100 float32"
P = parameter_count(steps.SIZES)


@pytest.fixture(scope="module")
def data():
    return steps.training_data()


def _run(benchmark, step, name, backend, device="cpu"):
    benchmark.group = GROUP
    benchmark.extra_info.update(implementation=name, backend=backend, device=device, dtype="float32",
                                P=P, batch=100, blas=blas_info())
    warm_up(step)
    benchmark.pedantic(step, rounds=300, iterations=5, warmup_rounds=1)


def test_xbackprop(benchmark, backend, data):
    step = steps.make_xbackprop(backend, *data)
    _run(benchmark, step, f"xbackprop-{backend}", backend)


def test_handwritten_numpy(benchmark, data):
    _run(benchmark, steps.make_handwritten(*data), "handwritten-numpy", "numpy")


def test_matmul_floor(benchmark, data):
    _run(benchmark, steps.make_matmul_floor(data[0]), "matmul-floor", "numpy")


def test_torch_eager(benchmark, data, torch_device):
    _run(benchmark, steps.make_torch_eager(*data, device=torch_device), f"torch-eager-{torch_device}", "torch",
         torch_device)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX not installed")
def test_jax_jit(benchmark, data):
    _run(benchmark, steps.make_jax_jit(*data), "jax-jit", "jax")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX not installed")
def test_xbackprop_jax_scan(benchmark, data):
    """The trainer's compiled loop on JAX: 100 steps per dispatch; the figure is per 100 steps."""
    steps_100 = steps.make_xbackprop_blocks("jax", *data, block=100)
    benchmark.group = GROUP + " (x100 for the scan)"
    benchmark.extra_info.update(implementation="xbackprop-jax-scan-100", backend="jax", device="cpu",
                                dtype="float32", P=P, batch=100, steps_per_call=100, blas=blas_info())
    warm_up(steps_100, calls=3)
    benchmark.pedantic(steps_100, rounds=20, iterations=1, warmup_rounds=1)
