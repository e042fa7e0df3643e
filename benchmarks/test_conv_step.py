"""One SGD step of the book's SimpleConvNet, batch 100 (batch draw included), float32: xbackprop on each backend
beside PyTorch's ``nn.Conv2d`` net and the book's own code (with ``XBACKPROP_BOOK`` naming a checkout of it);
and the chapter's point in numbers: backprop against the numerical gradient on the book's gradient-check net."""

from __future__ import annotations

import numpy as np
import pytest

from xbackprop import SimpleConvNet
from xbackprop.timing import blas_info, warm_up

from . import conv_steps

GROUP = "SimpleConvNet step batch 100 float32"


@pytest.fixture(scope="module")
def data():
    return conv_steps.image_data()


def _run(benchmark, step, name, backend, device="cpu"):
    benchmark.group = GROUP
    benchmark.extra_info.update(implementation=name, backend=backend, device=device, dtype="float32", batch=100,
                                blas=blas_info())
    warm_up(step)
    benchmark.pedantic(step, rounds=30, iterations=2, warmup_rounds=1)


def test_xbackprop(benchmark, backend, data):
    _run(benchmark, conv_steps.make_xbackprop(backend, *data), f"xbackprop-{backend}", backend)


def test_torch_eager(benchmark, data, torch_device):
    _run(benchmark, conv_steps.make_torch_eager(*data, device=torch_device), f"torch-eager-{torch_device}", "torch",
         torch_device)


def test_the_books_code(benchmark, data):
    step = conv_steps.make_book(*data)
    if step is None:
        pytest.skip(f"set {conv_steps.BOOK_ENV} to a checkout of oreilly-japan/deep-learning-from-scratch")
    _run(benchmark, step, "book-numpy", "numpy")


@pytest.mark.parametrize("method", ["backprop", "numerical", "numerical-batched"])
def test_gradient_of_the_books_gradient_check_net(benchmark, method):
    """ch07/gradient_check.py's net (1x10x10 input, ten 3x3 filters, hidden 10), float64, one image."""
    net = SimpleConvNet(input_dim=(1, 10, 10), conv_param={"filter_num": 10, "filter_size": 3, "pad": 0, "stride": 1},
                        hidden_size=10, output_size=10, weight_init_std=0.01, xp="numpy", dtype="float64", seed=0)
    x = np.random.default_rng(0).random(100).reshape((1, 1, 10, 10))
    t = np.array([1])
    gradient = {"backprop": lambda: net.gradient(x, t),
                "numerical": lambda: net.numerical_gradient(x, t),
                "numerical-batched": lambda: net.numerical_gradient(x, t, batch="auto")}[method]
    benchmark.group = "SimpleConvNet gradient, the book's gradient-check net (1x10x10, float64)"
    benchmark.extra_info.update(method=method, parameters=sum(v.size for v in net.params.values()))
    benchmark.pedantic(gradient, rounds=5 if method != "backprop" else 200, iterations=1, warmup_rounds=1)
