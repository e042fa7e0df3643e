"""Layers: the book's numbers, backward against numerical gradients, no mutation, stability, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from array_api_compat import device as device_of
from conftest import asarray, assert_close

from xbackprop import (
    AddLayer,
    Affine,
    MulLayer,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
    numerical_gradient,
)
from xbackprop.backend import to_numpy
from xbackprop.functions import one_hot


def test_buy_apple_prints_the_books_numbers(capsys):
    apple, apple_num, tax = 100, 2, 1.1
    mul_apple_layer, mul_tax_layer = MulLayer(), MulLayer()
    apple_price = mul_apple_layer.forward(apple, apple_num)
    price = mul_tax_layer.forward(apple_price, tax)
    print(price)
    dapple_price, dtax = mul_tax_layer.backward(1)
    dapple, dapple_num = mul_apple_layer.backward(dapple_price)
    print(dapple, dapple_num, dtax)
    assert capsys.readouterr().out == "220.00000000000003\n2.2 110.00000000000001 200\n"


def test_buy_apple_orange_prints_the_books_numbers(capsys):
    apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
    mul_apple_layer, mul_orange_layer = MulLayer(), MulLayer()
    add_apple_orange_layer, mul_tax_layer = AddLayer(), MulLayer()
    apple_price = mul_apple_layer.forward(apple, apple_num)
    orange_price = mul_orange_layer.forward(orange, orange_num)
    all_price = add_apple_orange_layer.forward(apple_price, orange_price)
    price = mul_tax_layer.forward(all_price, tax)
    dall_price, dtax = mul_tax_layer.backward(1)
    dapple_price, dorange_price = add_apple_orange_layer.backward(dall_price)
    dorange, dorange_num = mul_orange_layer.backward(dorange_price)
    dapple, dapple_num = mul_apple_layer.backward(dapple_price)
    print(price)
    print(dapple_num, dapple, dorange, dorange_num, dtax)
    assert capsys.readouterr().out == "715.0000000000001\n110.00000000000001 2.2 3.3000000000000003 165.0 650\n"


def test_mul_and_add_layers_on_arrays(xp, rng):
    x_host, y_host = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    x, y = asarray(xp, x_host), asarray(xp, y_host)
    dout_host = rng.standard_normal((3, 4))
    mul, add = MulLayer(), AddLayer()
    assert_close(mul.forward(x, y), x_host * y_host, xp=xp, like=x)
    dx, dy = mul.backward(asarray(xp, dout_host))
    assert_close(dx, dout_host * y_host, xp=xp)
    assert_close(dy, dout_host * x_host, xp=xp)
    assert_close(add.forward(x, y), x_host + y_host, xp=xp)
    dx, dy = add.backward(asarray(xp, dout_host))
    assert_close(dx, dout_host, xp=xp)
    assert_close(dy, dout_host, xp=xp)


def check_backward(xp, layer, x_host, rng, *, rtol=1e-7, atol=1e-9):
    """Backward of ``sum(forward(x) * r)`` against the numerical gradient, in float64, inputs untouched."""
    x = asarray(xp, x_host)
    out = layer.forward(x)
    r_host = rng.standard_normal(tuple(out.shape))
    r = asarray(xp, r_host)
    dout = asarray(xp, r_host)
    dx = layer.backward(dout)
    numerical = numerical_gradient(lambda v: xp.sum(layer.forward(v) * r), x)
    assert_close(dx, to_numpy(numerical), xp=xp, rtol=rtol, atol=atol, like=x)
    np.testing.assert_array_equal(to_numpy(x), x_host)  # forward did not write into x
    np.testing.assert_array_equal(to_numpy(dout), r_host)  # backward did not write into dout
    return out


def test_relu_forward_backward(xp, rng):
    x_host = rng.standard_normal((4, 5))
    x_host[np.abs(x_host) < 1e-3] = 0.5  # keep away from the kink for the numerical check
    out = check_backward(xp, Relu(), x_host, rng)
    assert_close(out, np.maximum(x_host, 0), xp=xp)


def test_relu_backward_leaves_dout_alone(xp):
    relu = Relu()
    relu.forward(asarray(xp, [[-1.0, 2.0], [3.0, -4.0]]))
    dout = asarray(xp, [[5.0, 6.0], [7.0, 8.0]])
    dx = relu.backward(dout)
    assert_close(dx, [[0.0, 6.0], [7.0, 0.0]], xp=xp)
    np.testing.assert_array_equal(to_numpy(dout), [[5.0, 6.0], [7.0, 8.0]])


def test_relu_float32_and_infinities(xp):
    x = xp.asarray([[-np.inf, -1.0, 0.0, 2.0, np.inf]], dtype=xp.float32)
    relu = Relu()
    out = relu.forward(x)
    dx = relu.backward(xp.ones_like(x))
    assert out.dtype == xp.float32 and dx.dtype == xp.float32
    np.testing.assert_array_equal(to_numpy(out), [[0.0, 0.0, 0.0, 2.0, np.inf]])
    np.testing.assert_array_equal(to_numpy(dx), [[0.0, 0.0, 0.0, 1.0, 1.0]])


def test_sigmoid_forward_backward(xp, rng):
    x_host = rng.standard_normal((4, 5)) * 3
    out = check_backward(xp, Sigmoid(), x_host, rng)
    assert_close(out, 1 / (1 + np.exp(-x_host)), xp=xp, rtol=1e-14)


@pytest.mark.parametrize(("dtype_name", "num_classes"), [("int8", 10), ("uint8", 10), ("uint8", 200), ("int16", 300)])
def test_one_hot_for_any_integer_labels(xp, dtype_name, num_classes):
    labels = [0, num_classes - 1, num_classes // 2]
    t = xp.asarray(labels, dtype=getattr(xp, dtype_name))
    np.testing.assert_array_equal(to_numpy(one_hot(t, num_classes, dtype=xp.float64)), np.eye(num_classes)[labels])


@pytest.mark.parametrize("magnitude", [1e3, 1e4])
def test_sigmoid_is_stable_at_large_inputs(xp, magnitude):
    x = asarray(xp, [-magnitude, -40.0, 0.0, 40.0, magnitude])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer = Sigmoid()
        out = layer.forward(x)
        dx = layer.backward(xp.ones_like(x))
    expected = np.array([0.0, np.exp(-40.0) / (1 + np.exp(-40.0)), 0.5, 1 / (1 + np.exp(-40.0)), 1.0])
    assert_close(out, expected, xp=xp, rtol=1e-15)
    assert np.all(np.isfinite(to_numpy(dx)))


@pytest.mark.parametrize("x_shape", [(3, 6), (3, 2, 3), (3, 1, 2, 3)])
def test_affine_forward_backward(xp, x_shape, rng):
    x_host = rng.standard_normal(x_shape)
    w_host, b_host = rng.standard_normal((6, 4)), rng.standard_normal(4)
    W, b = asarray(xp, w_host), asarray(xp, b_host)
    layer = Affine(W, b)
    out = check_backward(xp, layer, x_host, rng)
    x2 = x_host.reshape(x_shape[0], -1)
    assert_close(out, x2 @ w_host + b_host, xp=xp, rtol=1e-13)
    # dW and db against the numerical gradient with respect to the parameters
    x = asarray(xp, x_host)
    r_host = rng.standard_normal((x_shape[0], 4))
    r = asarray(xp, r_host)
    layer.forward(x)
    layer.backward(r)
    assert_close(layer.dW, x2.T @ r_host, xp=xp, rtol=1e-13, like=W)
    assert_close(layer.db, r_host.sum(axis=0), xp=xp, rtol=1e-13, like=b)
    numerical_dW = numerical_gradient(lambda w: xp.sum(Affine(w, b).forward(x) * r), W)
    assert_close(layer.dW, to_numpy(numerical_dW), xp=xp, rtol=1e-7)
    np.testing.assert_array_equal(to_numpy(W), w_host)
    np.testing.assert_array_equal(to_numpy(b), b_host)


def test_affine_without_input_gradient(xp):
    layer = Affine(asarray(xp, np.ones((3, 2))), asarray(xp, np.zeros(2)), input_grad=False)
    layer.forward(asarray(xp, np.ones((4, 3))))
    assert layer.backward(asarray(xp, np.ones((4, 2)))) is None
    assert_close(layer.dW, np.full((3, 2), 4.0), xp=xp)


def test_affine_backward_releases_its_input(xp):
    layer = Affine(asarray(xp, np.ones((3, 2))), asarray(xp, np.zeros(2)))
    layer.forward(asarray(xp, np.ones((4, 3))))
    layer.backward(asarray(xp, np.ones((4, 2))))
    assert layer.x is None  # the batch can be freed before the next one is drawn
    with pytest.raises(RuntimeError, match="call forward first"):
        layer.backward(asarray(xp, np.ones((4, 2))))


def test_affine_rejects_wrong_inner_dimension(xp):
    layer = Affine(asarray(xp, np.ones((6, 4))), asarray(xp, np.zeros(4)))
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(6, 4\)"):
        layer.forward(asarray(xp, np.ones((3, 5))))


def reference_softmax_loss(x, labels):
    """float64 host reference: mean cross-entropy and (y - t) / N."""
    z = x - x.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    t = np.eye(x.shape[1])[labels]
    return -(t * logp).sum() / len(x), (np.exp(logp) - t) / len(x)


def test_softmax_with_loss_forward_backward(xp, rng):
    x_host = rng.standard_normal((5, 4)) * 2
    labels = np.array([0, 3, 1, 1, 2])
    expected_loss, expected_dx = reference_softmax_loss(x_host, labels)
    x, t = asarray(xp, x_host), asarray(xp, labels, dtype=xp.int64)
    layer = SoftmaxWithLoss()
    loss = layer.forward(x, t)
    assert_close(loss, expected_loss, xp=xp, rtol=1e-14, like=x)
    assert_close(layer.backward(), expected_dx, xp=xp, rtol=1e-13, like=x)
    assert_close(layer.backward(2.0), 2 * expected_dx, xp=xp, rtol=1e-13)
    numerical = numerical_gradient(lambda v: SoftmaxWithLoss().forward(v, t), x)
    assert_close(layer.backward(1), to_numpy(numerical), xp=xp, rtol=1e-7, atol=1e-10)
    np.testing.assert_array_equal(to_numpy(x), x_host)
    np.testing.assert_array_equal(to_numpy(t), labels)


def test_softmax_with_loss_label_forms_agree(xp, rng):
    x_host = rng.standard_normal((6, 3))
    labels = np.array([2, 0, 1, 1, 0, 2])
    x = asarray(xp, x_host)
    forms = {
        "one-hot": asarray(xp, np.eye(3)[labels]),
        "int64": asarray(xp, labels, dtype=xp.int64),
        "uint8": asarray(xp, labels, dtype=xp.uint8),
    }
    results = {}
    for name, t in forms.items():
        layer = SoftmaxWithLoss()
        results[name] = (to_numpy(layer.forward(x, t)), to_numpy(layer.backward()))
    for name in ("int64", "uint8"):
        np.testing.assert_array_equal(results[name][0], results["one-hot"][0])
        np.testing.assert_array_equal(results[name][1], results["one-hot"][1])


@pytest.mark.parametrize("magnitude", [1e3, 1e4])
def test_softmax_with_loss_is_exact_at_huge_logits(xp, magnitude):
    x = asarray(xp, [[magnitude, 0.0, -magnitude], [0.0, magnitude, 0.0]])
    t = asarray(xp, [2, 1], dtype=xp.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer = SoftmaxWithLoss()
        loss = layer.forward(x, t)
        dx = layer.backward()
    # Row 1 misses by 2 * magnitude; row 2 is right with probability 1 - 2 exp(-magnitude).
    assert_close(loss, (2 * magnitude) / 2, xp=xp, rtol=1e-14)
    assert_close(dx, [[0.5, 0.0, -0.5], [0.0, 0.0, 0.0]], xp=xp, atol=1e-15)


def test_softmax_with_loss_float32(xp):
    x = xp.asarray([[1.0, 2.0, 3.0]], dtype=xp.float32)
    loss = SoftmaxWithLoss().forward(x, xp.asarray([2]))
    assert_close(loss, reference_softmax_loss(np.array([[1.0, 2.0, 3.0]]), [2])[0], xp=xp, dtype=xp.float32, rtol=1e-6)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 3], r"labels must lie in \[0, 3\), got values from 0 to 3"),
        ([-1, 0], r"labels must lie in \[0, 3\)"),
        ([0, 1, 2], r"labels of shape \(3,\) and dtype .*int64 fit neither"),
        ([[0.0, 1.0], [1.0, 0.0]], r"labels of shape \(2, 2\) .* fit neither .* one-hot rows \(2, 3\)"),
        ([0.0, 1.0], r"integer class indices"),
    ],
)
def test_softmax_with_loss_rejects_bad_labels(xp, labels, message):
    x = asarray(xp, np.zeros((2, 3)))
    host = np.asarray(labels)
    t = xp.asarray(host, dtype=xp.int64) if host.dtype.kind == "i" else asarray(xp, host)
    with pytest.raises(ValueError, match=message):
        SoftmaxWithLoss().forward(x, t)


def test_every_layer_keeps_the_device(xp, device, rng):
    """On a non-default device where the backend has one (see the ``device`` fixture), against host values."""
    x_host, w_host, b_host = rng.standard_normal((2, 3)), rng.standard_normal((3, 4)), rng.standard_normal(4)
    x, ones = (xp.asarray(a, dtype=xp.float64, device=device) for a in (x_host, np.ones((2, 3))))
    for layer, expected in ((Relu(), np.maximum(x_host, 0)), (Sigmoid(), 1 / (1 + np.exp(-x_host)))):
        assert_close(layer.forward(x), expected, xp=xp, rtol=1e-14, like=x)
        assert_close(layer.backward(ones), (x_host > 0) if isinstance(layer, Relu) else expected * (1 - expected),
                     xp=xp, rtol=1e-14, like=x)
    for layer, expected in ((MulLayer(), x_host * x_host), (AddLayer(), 2 * x_host)):
        assert_close(layer.forward(x, x), expected, xp=xp, rtol=1e-14, like=x)
        assert all(device_of(d) == device for d in layer.backward(ones))
    W, b = (xp.asarray(a, dtype=xp.float64, device=device) for a in (w_host, b_host))
    affine = Affine(W, b)
    scores = affine.forward(x)
    assert_close(scores, x_host @ w_host + b_host, xp=xp, rtol=1e-13, like=x)
    last = SoftmaxWithLoss()
    t = xp.asarray(np.array([1, 3], dtype=np.uint8), device=device)
    expected_loss, expected_dx = reference_softmax_loss(x_host @ w_host + b_host, [1, 3])
    assert_close(last.forward(scores, t), expected_loss, xp=xp, rtol=1e-13, like=x)
    dscores = last.backward()
    assert_close(dscores, expected_dx, xp=xp, rtol=1e-12, like=x)
    assert_close(affine.backward(dscores), expected_dx @ w_host.T, xp=xp, rtol=1e-12, like=x)
    assert_close(affine.dW, x_host.T @ expected_dx, xp=xp, rtol=1e-12, like=x)
    assert_close(affine.db, expected_dx.sum(axis=0), xp=xp, rtol=1e-12, like=x)


def test_float_labels_must_be_one_hot(xp):
    x = asarray(xp, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="one-hot rows"):
        SoftmaxWithLoss().forward(x, asarray(xp, [[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="one-hot rows"):
        SoftmaxWithLoss().forward(x, asarray(xp, [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


@pytest.mark.parametrize("layer", [MulLayer(), Relu(), Sigmoid(), SoftmaxWithLoss()], ids=lambda layer: type(layer).__name__)
def test_backward_before_forward(layer):
    with pytest.raises(RuntimeError, match=f"{type(layer).__name__}.backward: call forward first"):
        layer.backward(1.0)


def test_affine_needs_a_batch_axis(xp):
    layer = Affine(asarray(xp, np.ones((3, 2))), asarray(xp, np.zeros(2)))
    with pytest.raises(ValueError, match=r"must be \(N, D\), got shape \(\)"):
        layer.forward(asarray(xp, 1.0))
