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
