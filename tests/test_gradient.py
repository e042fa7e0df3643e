"""numerical_gradient, the book's gradient check and the directional check."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asarray, assert_close

from xbackprop import (
    Affine,
    LayerNet,
    MultiLayerNet,
    TwoLayerNet,
    directional_check,
    gradient_check,
    numerical_gradient,
)
from xbackprop.backend import to_numpy
from xbackprop.datasets import find_dataset_dir, load_split
from xbackprop.gradcheck import main as gradcheck_main
from xbackprop.gradient_check import max_relative_error


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
    first, relu, second = net.layers.values()
    broken = LayerNet([first, relu, DoubledBiasAffine(second.W, second.b)])  # its backward doubles db
    x = np.random.default_rng(0).random((4, 6))
    assert directional_check(net, x, np.array([0, 1, 2, 0])).rel_error < 1e-8
    assert directional_check(broken, x, np.array([0, 1, 2, 0])).rel_error > 1e-3


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
    assert gradcheck_main(["--data-dir", str(tmp_path), "--batch", "2"]) == 2  # asked for, not there: no fallback
    assert "no MNIST test files" in capsys.readouterr().err
    assert gradcheck_main(["--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 synthetic 28x28 images (MNIST not found" in out
    assert "\nW1: " in out and "b2: " in out
    assert out.splitlines()[-1] == "PASS: backprop agrees with the numerical gradient in every element"


def test_gradcheck_cli_checks_a_relu_kink_from_one_side(monkeypatch, capsys):
    # Seed 0's synthetic images put one hidden pre-activation 9.7e-5 from 0, inside h = 1e-4.
    monkeypatch.delenv("XBACKPROP_DATA", raising=False)
    assert gradcheck_main(["--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "max relative error: 2.5e-03" in out and "straddled ReLU's kink at h = 0.0001" in out
    assert "kink: W1[" in out and "(agrees)" in out
    assert out.splitlines()[-1] == "PASS: backprop agrees with the numerical gradient in every element"


class DoubledBiasAffine(Affine):
    def backward(self, dout):
        dx = super().backward(dout)
        self.db = 2 * self.db
        return dx


def test_a_wrong_backward_fails_the_check_and_is_named(xp):
    net, x, t = stack_net(xp)
    layers = list(net.layers.values())
    layers[2] = DoubledBiasAffine(layers[2].W, layers[2].b)
    broken = LayerNet(layers)
    result = gradient_check(broken, x, t, verbose=False)
    assert not result.passed and not result.kinks
    assert {d.key for d in result.disagreements} == {"b2"}
    assert str(result.disagreements[0]).startswith("b2[0]: backprop ")


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


def test_generic_stacked_differences(xp):
    """numerical_gradient(f, W, batch=K): f receives a stack (K, D, M) and returns K values."""
    net, x, t = stack_net(xp)
    W = net.params["W2"]
    hidden = xp.asarray(np.random.default_rng(3).standard_normal((6, W.shape[0])), dtype=W.dtype)

    def energy(v):  # a (D, M) matrix or a (K, D, M) stack of them: matmul lets the leading axis ride along
        return xp.sum((hidden @ v) ** 2, axis=(-2, -1))

    assert max_rel(numerical_gradient(energy, W, batch=4), numerical_gradient(energy, W)) <= 1e-10
    cube = numerical_gradient(lambda v: xp.sum(v**3, axis=(-2, -1)), W, batch=7)
    assert max_rel(cube, 3 * to_numpy(W) ** 2) <= 1e-7


def test_affine_holds_one_layer_of_parameters(xp):
    from xbackprop import Affine

    rng = np.random.default_rng(9)
    with pytest.raises(ValueError, match=r"W must be \(D, M\) and b \(M,\)"):
        Affine(asarray(xp, rng.standard_normal((3, 5, 4))), asarray(xp, rng.standard_normal((3, 4))))


def test_the_memory_budget_bounds_the_stack(xp):
    from xbackprop.stacked_gradient import stack_size

    net, x, t = stack_net(xp)
    for slot, position in enumerate([0, 2, 4]):  # Affine1, Relu1, Affine2, Relu2, Affine3
        k = stack_size(net, position, 4, memory_budget=64 << 10)
        per_copy = 8 * (4 + 3 * 4 * sum(net.sizes[slot + 1 :]))
        assert k * per_copy <= 64 << 10 < (k + 1) * per_copy
    assert stack_size(net, 0, 4, memory_budget=1) == 1  # never less than one copy
    tiny = net.numerical_gradient(x, t, batch="auto", memory_budget=1)
    assert max_rel(tiny["W1"], net.numerical_gradient(x, t)["W1"]) <= 1e-10


def test_max_relative_error_is_the_worst_parameter(xp):
    reference = {"W": asarray(xp, [[1.0, -4.0]]), "b": asarray(xp, [0.0, 0.0])}
    approx = {"W": asarray(xp, [[1.0, -3.0]]), "b": asarray(xp, [0.0, 0.5])}
    assert max_relative_error(approx, reference) == 0.5  # b is all zeros: its absolute difference counts
    assert max_relative_error(reference, reference) == 0.0


def test_a_numerical_gradient_reports_its_progress_to_the_bar_a_command_shows():
    from xbackprop.hooks import reporting

    class Counter:
        done = 0

        def update(self, steps):
            self.done += steps

    x = np.arange(6.0).reshape(2, 3)
    with reporting(Counter()) as bar:
        numerical_gradient(lambda v: float((v**2).sum()), x)
    assert bar.done == 6
    numerical_gradient(lambda v: float((v**2).sum()), x)  # outside the block nothing is reported
    assert bar.done == 6


def test_a_gradient_check_over_gradients_that_are_not_numbers_fails():
    net = TwoLayerNet(4, 3, 2, xp="numpy", dtype="float64", seed=0)
    net.params["W2"][0, 0] = np.nan  # the loss and every gradient after it are NaN
    x = np.random.default_rng(0).random((3, 4))
    result = gradient_check(net, x, np.array([0, 1, 1]), verbose=False)
    assert not result.passed and result.disagreements


def test_numerical_gradient_takes_another_librarys_values_exactly_and_says_when_they_are_coarse():
    torch = pytest.importorskip("torch", reason="needs PyTorch: its values are another library's here")
    x = np.array([1.0, 2.0, 3.0])
    exact = numerical_gradient(lambda v: torch.sum(torch.asarray(v) ** 2), x)
    np.testing.assert_allclose(exact, [2.0, 4.0, 6.0], rtol=1e-9)
    with pytest.warns(RuntimeWarning, match="f returns torch.float32 values for a float64 x"):
        numerical_gradient(lambda v: torch.sum(torch.asarray(v, dtype=torch.float32) ** 2), x)


@pytest.mark.parametrize(("f", "h", "message"), [
    (lambda v: v**2, 1e-4, r"f must return a scalar .* not an array of shape \(3,\)"),
    (lambda v: float((v**2).sum()), float("inf"), "must be positive and finite, got inf"),
    (lambda v: float((v**2).sum()), float("nan"), "must be positive and finite, got nan"),
])
def test_numerical_gradient_refuses_what_it_cannot_differentiate(f, h, message):
    with pytest.raises(ValueError, match=message):
        numerical_gradient(f, np.array([1.0, 2.0, 3.0]), h)


def test_an_f_that_writes_into_its_argument_is_caught_and_the_argument_restored():
    x = np.array([1.0, 2.0, 3.0])

    def writes(v):
        v[2] = 9.0  # a careless f: every later difference is taken elsewhere
        return float((v**2).sum())

    with pytest.raises(ValueError, match="f wrote into its argument"):
        numerical_gradient(writes, x)
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])


def test_gradcheck_refuses_a_data_dir_that_is_not_mnist(data_dir, capsys):
    assert gradcheck_main(["--data-dir", str(data_dir / "fashion-mnist")]) == 2
    assert "holds fashion-mnist, not MNIST" in capsys.readouterr().err


def test_the_cli_threads_default_and_the_immutable_check_stacks_its_copies(monkeypatch):
    """gradient_check moves K elements per pass on immutable arrays (copying one array per element took JAX
    minutes); central_differences stacks its differences in pieces (JAX compiled one stack of 79,520 operands
    for minutes)."""
    from xbackprop import gradient as module

    calls = []
    real = TwoLayerNet.numerical_gradient

    def spying(self, *args, **kwargs):
        calls.append(kwargs.get("batch"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TwoLayerNet, "numerical_gradient", spying)
    net = TwoLayerNet(4, 3, 2, xp="numpy", dtype="float64", seed=0)
    x = np.random.default_rng(0).random((2, 4))
    gradient_check(net, x, np.array([0, 1]), verbose=False)
    assert calls == [None]  # writable: the book's loop
    jax = pytest.importorskip("jax", reason="needs JAX: pip install 'jax[cpu]'")
    with jax.enable_x64(True):
        net = TwoLayerNet(4, 3, 2, xp="jax", dtype="float64", seed=0)
        assert gradient_check(net, jax.numpy.asarray(x), jax.numpy.asarray([0, 1]), verbose=False).passed
    assert calls == [None, "auto"]  # immutable: K copies a pass
    monkeypatch.setattr(module, "STACKED", 3)
    g = numerical_gradient(lambda v: np.asarray((v**2).sum()), np.arange(7.0))  # 0-D arrays: stacked
    np.testing.assert_allclose(g, 2 * np.arange(7.0), rtol=1e-8, atol=1e-8)


def test_numerical_gradient_of_an_integer_array(xp):
    with pytest.raises(TypeError, match="needs a real floating array"):
        numerical_gradient(lambda v: xp.sum(v * v), xp.asarray([2, 4, 6]))
    with pytest.raises(ValueError, match="h must be positive"):
        numerical_gradient(lambda v: xp.sum(v * v), asarray(xp, [2.0]), h=0.0)


def test_numerical_gradient_in_a_dtype_too_coarse_for_h():
    with pytest.raises(TypeError, match="below float16's resolution"):
        numerical_gradient(lambda v: (v * v).sum(), np.ones(3, dtype=np.float16))
