"""The functional API: the book's printed numbers, agreement with the layers' backward, stability, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import asarray, assert_close

from xbackprop import Relu, Sigmoid, SoftmaxWithLoss
from xbackprop.backend import to_numpy as to_host
from xbackprop.functions import (
    cross_entropy_error,
    d_relu,
    d_sigmoid,
    d_softmax_with_loss,
    mean_squared_error,
    relu,
    sigmoid,
    softmax,
)

# The book's chapter 4 example: the prediction y and the one-hot label of class 2.
BOOK_Y = [0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]
BOOK_T = [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]


def test_losses_print_the_books_numbers(capsys):
    t = np.array(BOOK_T, dtype=float)
    print(float(mean_squared_error(np.array(BOOK_Y), t)))
    print(float(cross_entropy_error(np.array(BOOK_Y), t)))
    wrong = [0.1, 0.05, 0.1, 0.0, 0.05, 0.1, 0.0, 0.6, 0.0, 0.0]
    print(float(mean_squared_error(np.array(wrong), t)))
    print(float(cross_entropy_error(np.array(wrong), t)))
    assert capsys.readouterr().out.split() == [
        "0.09750000000000003", "0.510825457099338", "0.5975", "2.302584092994546",
    ]


def test_cross_entropy_error_takes_one_hot_or_integer_labels(xp):
    rng = np.random.default_rng(0)
    y_host = rng.dirichlet(np.ones(4), size=5)
    labels = np.array([0, 3, 1, 1, 2])
    expected = -np.mean(np.log(y_host[np.arange(5), labels] + 1e-7))
    y = asarray(xp, y_host)
    assert_close(cross_entropy_error(y, asarray(xp, labels)), expected, xp=xp, rtol=1e-14)
    assert_close(cross_entropy_error(y, asarray(xp, np.eye(4)[labels])), expected, xp=xp, rtol=1e-14)


def test_losses_refuse_labels_in_the_predictions_place(xp):
    y = asarray(xp, [[0.2, 0.8], [0.6, 0.4]])
    t = asarray(xp, [[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match=r"prediction first, labels second"):
        cross_entropy_error(t, y)
    with pytest.raises(ValueError, match=r"labels of shape \(3,\)"):
        cross_entropy_error(y, asarray(xp, [0, 1, 1]))
    with pytest.raises(ValueError, match="differ in shape"):
        mean_squared_error(y, asarray(xp, [0.0, 1.0]))


def test_d_relu_is_relu_backward(xp):
    x_host = np.array([[-2.0, -0.0, 0.0, 1e-300], [3.0, -1e4, 1e4, 0.5]])
    dout_host = np.random.default_rng(1).standard_normal(x_host.shape)
    x, dout = asarray(xp, x_host), asarray(xp, dout_host)
    assert_close(relu(x), np.maximum(x_host, 0), xp=xp)
    assert_close(d_relu(x), (x_host > 0).astype(float), xp=xp)
    layer = Relu()
    layer.forward(x)
    assert_close(layer.backward(dout), dout_host * (x_host > 0), xp=xp)
    assert_close(dout * d_relu(x), dout_host * (x_host > 0), xp=xp)


@pytest.mark.parametrize("magnitude", [1.0, 1e3, 1e4])
def test_d_sigmoid_is_sigmoid_backward_and_stable(xp, magnitude):
    x_host = np.linspace(-magnitude, magnitude, 9)
    dout_host = np.random.default_rng(2).standard_normal(9)
    e = np.exp(-np.abs(x_host))
    s = np.where(x_host >= 0, 1, e) / (1 + e)
    x, dout = asarray(xp, x_host), asarray(xp, dout_host)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        derivative = d_sigmoid(x)
        layer = Sigmoid()
        layer.forward(x)
        backward = layer.backward(dout)
    assert_close(derivative, e / (1 + e) ** 2, xp=xp, rtol=1e-14)
    # The layer's (1 - out) * out rounds to 0 where 1 - out does; values are at most 0.25.
    assert_close(backward, to_host(dout * derivative), xp=xp, rtol=1e-13, atol=1e-16)
    assert_close(sigmoid(x), s, xp=xp, rtol=1e-15)


@pytest.mark.parametrize("labels_as", ["indices", "one-hot"])
def test_d_softmax_with_loss_is_softmax_with_loss_backward(xp, labels_as):
    rng = np.random.default_rng(3)
    x_host = rng.standard_normal((6, 5))
    labels = rng.integers(0, 5, 6)
    t_host = labels if labels_as == "indices" else np.eye(5)[labels]
    x, t = asarray(xp, x_host), asarray(xp, t_host)
    layer = SoftmaxWithLoss()
    loss = layer.forward(x, t)
    y = softmax(x)
    assert_close(d_softmax_with_loss(t, y), to_host(layer.backward()), xp=xp, rtol=1e-15)
    # The layer is exact; the function keeps the book's log(y + 1e-7), a relative 1e-7/y apart.
    assert_close(cross_entropy_error(y, t), float(loss), xp=xp, rtol=1e-5)


def test_one_sample_is_a_batch_of_one(xp):
    y_host = np.array(BOOK_Y)
    y = asarray(xp, y_host)
    assert_close(cross_entropy_error(y, asarray(xp, np.array(2))), -np.log(0.6 + 1e-7), xp=xp, rtol=1e-14)
    assert_close(d_softmax_with_loss(asarray(xp, np.array(BOOK_T, dtype=float)), y),
                 (y_host - np.array(BOOK_T))[None, :], xp=xp, rtol=1e-15)


def test_softmax_of_integer_scores_is_floating():
    """The book's examples pass floats; a learner's np.array([1, 2, 3]) must work too."""
    from xbackprop import log_softmax, softmax

    np.testing.assert_allclose(softmax(np.array([1, 2, 3])), np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum(), rtol=1e-12)
    assert log_softmax(np.array([[0, 0]])).dtype == np.float64
