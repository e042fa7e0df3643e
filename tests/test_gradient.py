"""numerical_gradient, the book's gradient check and the directional check."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asarray, assert_close

from xbackprop import MultiLayerNet, TwoLayerNet, directional_check, gradient_check, numerical_gradient
from xbackprop.backend import to_numpy
from xbackprop.datasets import find_dataset_dir, load_split
from xbackprop.gradcheck import main as gradcheck_main


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


def test_gradcheck_cli_rejects_unknown_backend(capsys):
    with pytest.raises(SystemExit) as exc:
        gradcheck_main(["--backend", "tensorflow"])
    assert exc.value.code == 2
