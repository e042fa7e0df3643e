"""numerical_gradient, the book's gradient check and the directional check."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asarray, assert_close

from xbackprop import MultiLayerNet, TwoLayerNet, directional_check, gradient_check, numerical_gradient
from xbackprop.backend import to_numpy
from xbackprop.datasets import find_dataset_dir, load_split
from xbackprop.gradcheck import main as gradcheck_main
from xbackprop.gradient import max_relative_error


def test_numerical_gradient_of_a_quadratic(xp):
    x_host = np.array([[3.0, -4.0], [0.5, 2.0]])
    x = asarray(xp, x_host)
    grad = numerical_gradient(lambda v: xp.sum(v**2), x)
    assert_close(grad, 2 * x_host, xp=xp, rtol=1e-9, like=x)
    np.testing.assert_array_equal(to_numpy(x), x_host)


def test_numerical_gradient_accepts_python_numbers_and_0d(xp):
    x = asarray(xp, [1.0, 2.0])
    grad = numerical_gradient(lambda v: float(xp.sum(v**3)), x)
    assert_close(grad, [3.0, 12.0], xp=xp, rtol=1e-7)
    scalar = asarray(xp, 2.0)
    assert_close(numerical_gradient(lambda v: v * v, scalar), 4.0, xp=xp, rtol=1e-9)


def test_book_gradient_check_on_synthetic_data(xp, capsys):
    net = TwoLayerNet(20, 10, 5, weight_init_std=0.5, xp=xp, dtype="float32", seed=0)  # checked in float64
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.random((3, 20)), dtype=xp.float32)
    t = xp.asarray(rng.integers(0, 5, 3), dtype=xp.uint8)
    result = gradient_check(net, x, t)
    assert list(result.mean_abs_diff) == ["W1", "b1", "W2", "b2"]
    assert max(result.mean_abs_diff.values()) < 1e-8
    assert result.max_rel_error < 1e-5
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("W1: ") and lines[-1].startswith("max relative error: ")
    assert all(value.dtype == xp.float32 for value in net.params.values())


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_directional_check_agrees_on_a_large_net(xp, activation):
    net = MultiLayerNet(784, [100, 50], 10, activation=activation, weight_init_std="he", xp=xp, seed=1)
    rng = np.random.default_rng(1)
    x = xp.asarray(rng.random((16, 784)), dtype=xp.float32)
    t = xp.asarray(rng.integers(0, 10, 16))
    result = directional_check(net, x, t, seed=2)
    assert result.rel_error < 1e-6, result


def test_directional_check_catches_a_wrong_gradient():
    net = TwoLayerNet(6, 4, 3, weight_init_std=1.0, xp="numpy", seed=0)
    original = net.gradient

    def broken_gradient(x, t, params=None):
        grads = original(x, t, params)
        return {**grads, "b2": grads["b2"] * 1.5}

    net.gradient = broken_gradient
    x = np.random.default_rng(0).random((4, 6))
    assert directional_check(net, x, np.array([0, 1, 2, 0])).rel_error > 1e-3


def test_book_gradient_check_on_mnist(data_dir, capsys):
    folder = find_dataset_dir("mnist", data_dir / "mnist")
    if folder is None:
        pytest.skip(f"MNIST test split not found under {data_dir / 'mnist'}")
    images, labels = load_split(folder, "test")
    x = images[:3].reshape(3, -1) / 255.0
    net = TwoLayerNet(784, 50, 10, xp="numpy", dtype="float64", seed=0)
    result = gradient_check(net, x, labels[:3])
    assert all(diff <= 1e-6 for diff in result.mean_abs_diff.values()), result


def test_gradcheck_cli_says_which_data_it_used(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("XBACKPROP_DATA", raising=False)
    assert gradcheck_main(["--data-dir", str(tmp_path), "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 synthetic 28x28 images (MNIST not found" in out
    assert "\nW1: " in out and "b2: " in out
    assert out.splitlines()[-1].startswith("PASS: the largest mean |backprop - numerical| is ")


def test_gradcheck_cli_explains_a_relu_kink(monkeypatch, capsys):
    # Seed 0's synthetic images put one hidden pre-activation 9.7e-5 from 0, inside h = 1e-4.
    monkeypatch.delenv("XBACKPROP_DATA", raising=False)
    assert gradcheck_main(["--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "max relative error: 2.5e-03" in out and "from ReLU's kink, closer than the step h = 0.0001" in out
    assert "PASS: " in out and "at most the tolerance 1e-06" in out


def test_gradcheck_cli_on_mnist(data_dir, capsys):
    assert gradcheck_main(["--data-dir", str(data_dir / "mnist")]) == 0
    out = capsys.readouterr().out
    assert "the first 3 MNIST test images" in out and "\nPASS: " in out and "kink" not in out


def stack_net(xp, activation="relu", weight_decay_lambda=0.0):
    net = MultiLayerNet(12, [6, 5], 3, activation=activation, weight_init_std=0.8,
                        weight_decay_lambda=weight_decay_lambda, xp=xp, dtype="float64", seed=4)
    rng = np.random.default_rng(8)
    for key in ("b1", "b2", "b3"):  # keep ReLU kinks away from the steps
        net.params[key] = xp.asarray(rng.uniform(0.2, 0.6, tuple(net.params[key].shape)), dtype=xp.float64)
    x = xp.asarray(rng.random((4, 12)), dtype=xp.float64)
    t = xp.asarray(rng.integers(0, 3, 4), dtype=xp.int64)
    return net, x, t


def max_rel(a, b):
    a, b = to_numpy(a), to_numpy(b)
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize(("activation", "weight_decay_lambda"), [("relu", 0.0), ("sigmoid", 0.1)])
@pytest.mark.parametrize("batch", [1, 5, "auto"])
def test_batched_numerical_gradient_agrees_with_the_loop(xp, activation, weight_decay_lambda, batch):
    net, x, t = stack_net(xp, activation, weight_decay_lambda)
    loop = net.numerical_gradient(x, t)
    batched = net.numerical_gradient(x, t, batch=batch)
    assert list(batched) == list(loop)
    backprop = net.gradient(x, t)
    for key in loop:
        assert batched[key].dtype == xp.float64 and tuple(batched[key].shape) == tuple(loop[key].shape)
        # With a decay term in the loss the loop differences two larger numbers, and its own rounding
        # (amplified 1 / 2h = 5,000 times) reaches 1.5e-10 of the gradient here.
        assert max_rel(batched[key], loop[key]) <= (1e-9 if weight_decay_lambda else 1e-10), key
        assert max_rel(batched[key], backprop[key]) <= 1e-6, key


def test_generic_stacked_differences_through_the_layers(xp):
    """numerical_gradient(f, W, batch=K) with f a net's loss: the Affine takes the stack (K, D, M)."""
    net, x, t = stack_net(xp, weight_decay_lambda=0.05)
    params = dict(net.params)
    for key in ("W1", "b2"):
        def loss(p, key=key):
            return net.loss(x, t, {**params, key: p})

        loop = numerical_gradient(loss, params[key])
        stacked = numerical_gradient(loss, params[key], batch=4)
        assert max_rel(stacked, loop) <= 1e-10, key
    cube = numerical_gradient(lambda v: xp.sum(v**3, axis=(-2, -1)), params["W2"], batch=7)
    assert max_rel(cube, 3 * to_numpy(params["W2"]) ** 2) <= 1e-7


def test_a_stack_axis_forward_equals_separate_forwards(xp):
    from xbackprop import Affine, SoftmaxWithLoss

    rng = np.random.default_rng(9)
    W, b = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 4))
    x, labels = rng.standard_normal((6, 5)), rng.integers(0, 4, 6)
    out = Affine(asarray(xp, W), asarray(xp, b)).forward(asarray(xp, x))
    losses = SoftmaxWithLoss().forward(out, xp.asarray(labels))
    assert tuple(out.shape) == (3, 6, 4) and tuple(losses.shape) == (3,)
    for k in range(3):
        separate = Affine(asarray(xp, W[k]), asarray(xp, b[k])).forward(asarray(xp, x))
        assert max_rel(out[k, ...], separate) <= 1e-15
        assert max_rel(losses[k], SoftmaxWithLoss().forward(separate, xp.asarray(labels))) <= 1e-15
    # leading axes on the input ride along, and backward sums the parameter gradients over them
    layer = Affine(asarray(xp, W[0]), asarray(xp, b[0]))
    stacked_x = rng.standard_normal((2, 6, 5))
    dout = rng.standard_normal((2, 6, 4))
    assert tuple(layer.forward(asarray(xp, stacked_x)).shape) == (2, 6, 4)
    dx = layer.backward(asarray(xp, dout))
    np.testing.assert_allclose(to_numpy(layer.dW), sum(stacked_x[k].T @ dout[k] for k in range(2)), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(dx), dout @ W[0].T, rtol=1e-12)
    with pytest.raises(ValueError, match="a stack of parameters has no backward"):
        stacked = Affine(asarray(xp, W), asarray(xp, b))
        stacked.forward(asarray(xp, x))
        stacked.backward(asarray(xp, np.ones((3, 6, 4))))


def test_the_memory_budget_bounds_the_stack(xp):
    net, x, t = stack_net(xp)
    for slot in range(3):
        k = net.stack_size(slot, 4, memory_budget=64 << 10)
        per_copy = 8 * (4 + 3 * 4 * sum(net.sizes[slot + 1 :]))
        assert k * per_copy <= 64 << 10 < (k + 1) * per_copy
    assert net.stack_size(0, 4, memory_budget=1) == 1  # never less than one copy
    tiny = net.numerical_gradient(x, t, batch="auto", memory_budget=1)
    assert max_rel(tiny["W1"], net.numerical_gradient(x, t)["W1"]) <= 1e-10


def test_max_relative_error_is_the_worst_parameter(xp):
    reference = {"W": asarray(xp, [[1.0, -4.0]]), "b": asarray(xp, [0.0, 0.0])}
    approx = {"W": asarray(xp, [[1.0, -3.0]]), "b": asarray(xp, [0.0, 0.5])}
    assert max_relative_error(approx, reference) == 0.5  # b is all zeros: its absolute difference counts
    assert max_relative_error(reference, reference) == 0.0
