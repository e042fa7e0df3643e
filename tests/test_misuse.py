"""Library misuse raises ValueError, TypeError or RuntimeError with a message that says what to do."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asarray

from xbackprop import (
    Affine,
    MulLayer,
    MultiLayerNet,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
    TwoLayerNet,
    directional_check,
    get_namespace,
    numerical_gradient,
)


def test_numerical_gradient_of_an_integer_array(xp):
    with pytest.raises(TypeError, match="needs a real floating array"):
        numerical_gradient(lambda v: xp.sum(v * v), xp.asarray([2, 4, 6]))
    with pytest.raises(ValueError, match="h must be positive"):
        numerical_gradient(lambda v: xp.sum(v * v), asarray(xp, [2.0]), h=0.0)


def test_an_empty_batch(xp):
    net = TwoLayerNet(4, 3, 2, xp=xp, dtype="float64", seed=0)
    x, t = xp.zeros((0, 4), dtype=xp.float64), xp.zeros((0,), dtype=xp.int64)
    with pytest.raises(ValueError, match="the batch is empty"):
        net.loss(x, t)
    with pytest.raises(ValueError, match="no rows to score"):
        net.accuracy(x, t)
    with pytest.raises(ValueError, match="h must be positive"):
        directional_check(net, asarray(xp, np.ones((2, 4))), xp.asarray([0, 1]), h=0.0)


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


def test_net_arguments():
    net = MultiLayerNet(np.int64(4), [np.int32(3)], np.int16(2), xp="numpy")  # any integer type
    assert net.sizes == [4, 3, 2] and all(type(n) is int for n in net.sizes)
    for bad in (float("nan"), float("inf"), -0.1, 0.0):
        with pytest.raises(ValueError, match="weight_init_std must be a positive finite number"):
            MultiLayerNet(4, [3], 2, weight_init_std=bad, xp="numpy")
    with pytest.raises(ValueError, match="layer sizes must be positive integers"):
        MultiLayerNet(4, [3.5], 2, xp="numpy")
    with pytest.raises(ValueError, match="unsupported dtype .*int32.*real floating"):
        TwoLayerNet(4, 3, 2, xp="numpy", dtype=np.int32)


def test_get_namespace_of_a_non_name():
    with pytest.raises(TypeError, match="a backend is a name such as 'numpy'"):
        get_namespace(123)
    with pytest.raises(ValueError, match="unknown backend 'nonsense'"):
        get_namespace("nonsense")


def test_accuracy_refuses_labels_it_cannot_score(xp):
    """(N, 1) labels, labels outside the classes and float labels were a silent 0.0."""
    net = TwoLayerNet(4, 3, 2, xp=xp, dtype="float64", seed=0)
    x = asarray(xp, np.random.default_rng(0).random((5, 4)))
    with pytest.raises(ValueError, match=r"labels of shape \(5, 1\) .* fit neither integer class indices \(5,\) nor one-hot rows \(5, 2\)"):
        net.accuracy(x, xp.zeros((5, 1), dtype=xp.int64))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), got values from 0 to 7"):
        net.accuracy(x, xp.asarray([0, 1, 7, 0, 1]))
    with pytest.raises(ValueError, match="dtype"):
        net.accuracy(x, asarray(xp, [0.0, 1.0, 1.0, 0.0, 1.0]))
    one_hot = asarray(xp, np.eye(2)[[0, 1, 1, 0, 1]])
    assert net.accuracy(x, one_hot) == net.accuracy(x, xp.asarray([0, 1, 1, 0, 1]))


def test_an_input_of_another_library_is_refused(xp):
    net = TwoLayerNet(4, 3, 2, xp=xp, dtype="float64", seed=0)
    other = np.ones((2, 4)) if type(net.params["W1"]).__module__ != "numpy" else get_namespace(
        "array_api_strict").ones((2, 4))
    with pytest.raises(TypeError, match="move x to the net's namespace"):
        net.predict(other)


def test_missing_params_and_non_arrays_are_named(xp):
    net = TwoLayerNet(4, 3, 2, xp=xp, dtype="float64", seed=0)
    x, t = asarray(xp, np.ones((2, 4))), xp.asarray([0, 1])
    with pytest.raises(ValueError, match="lack 'b1': this net needs W1, b1, W2, b2"):
        net.loss(x, t, {key: value for key, value in net.params.items() if key != "b1"})
    with pytest.raises(TypeError, match="Affine: W and b must be arrays, got list"):
        Affine([[1.0, 2.0]], asarray(xp, [0.0, 0.0]))
    net.params["W1"] = [[1.0] * 3] * 4
    with pytest.raises(TypeError, match=r"params\['W1'\] is a list, not an array"):
        net.loss(x, t)


def test_numerical_gradient_in_a_dtype_too_coarse_for_h():
    with pytest.raises(TypeError, match="below float16's resolution"):
        numerical_gradient(lambda v: (v * v).sum(), np.ones(3, dtype=np.float16))


def test_a_weight_scale_beyond_the_dtype_is_refused(xp):
    with pytest.raises(ValueError, match="gives weights beyond the range of"):
        MultiLayerNet(4, [3], 2, weight_init_std=1e308, xp=xp, dtype="float32")


def test_a_saved_net_with_nan_is_refused(tmp_path):
    from xbackprop.io import load_params, save_params

    net = TwoLayerNet(4, 3, 2, xp="numpy", seed=0)
    net.params["W2"] = net.params["W2"] * np.nan
    save_params(tmp_path / "nan.npz", net)
    with pytest.raises(ValueError, match="W2 holds NaN or infinite numbers"):
        load_params(tmp_path / "nan.npz", TwoLayerNet(4, 3, 2, xp="numpy", seed=0))


def test_labels_rewritten_in_place_are_checked_again():
    net = TwoLayerNet(4, 3, 2, xp="numpy", seed=0)
    x, t = np.ones((3, 4)), np.array([0, 1, 0])
    net.gradient(x, t)
    t[1] = 99
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), got values from 0 to 99"):
        net.gradient(x, t)


def test_misuse_that_was_an_attribute_or_broadcast_error_names_the_argument():
    from xbackprop import TwoLayerNet, check_layer
    from xbackprop.learned import evaluate
    from xbackprop.optimizers import SGD, Adam

    cases = [
        (lambda: SGD().update({"W": [1.0]}, {"W": [1.0]}), TypeError, r"params\['W'\] is a list, not an array"),
        (lambda: Adam().update({"W": np.ones(2)}, {"W": np.ones(3)}), ValueError,
         r"grads\['W'\] has shape \(3,\), params\['W'\] \(2,\)"),
        (lambda: check_layer(object(), np.ones(2)), TypeError, "has no forward or backward"),
        (lambda: evaluate(TwoLayerNet(4, 3, 2), np.ones(4), np.array([0])), ValueError, "x: images"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
