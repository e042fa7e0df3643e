"""Everything computed stays on the device its inputs live on.

The ``device`` fixture is a non-default device where the backend has one
(array_api_strict's "device1"): an array created without ``device=`` lands on the
default device instead, and the next operation combining the two fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import device as device_of

from xbackprop import MultiLayerNet, functions, gradient_check
from xbackprop.datasets import Dataset
from xbackprop.optimizers import OPTIMIZERS
from xbackprop.training import Schedule, to_device, train


def all_on(device, arrays):
    arrays = list(arrays)
    assert arrays and all(device_of(a) == device for a in arrays), [device_of(a) for a in arrays]


def small_batch(xp, device, rng, n=5, d=6, c=3):
    x = xp.asarray(rng.random((n, d)), dtype=xp.float64, device=device)
    t = xp.asarray(rng.integers(0, c, n).astype(np.uint8), device=device)
    return x, t


def test_a_net_and_its_gradients_stay_on_the_device(xp, device, rng):
    net = MultiLayerNet(6, [5, 4], 3, activation="sigmoid", xp=xp, device=device, dtype="float64", seed=0)
    x, t = small_batch(xp, device, rng)
    all_on(device, net.params.values())
    all_on(device, [net.predict(x), net.loss(x, t), net.count_correct(x, t)])
    all_on(device, net.gradient(x, t).values())
    all_on(device, net.numerical_gradient(x, t).values())
    all_on(device, net.numerical_gradient(x, t, batch="auto").values())
    assert gradient_check(net, x, t, verbose=False).max_rel_error < 1e-6


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizers_keep_the_device(xp, device, rng, name):
    net = MultiLayerNet(6, [5], 3, xp=xp, device=device, dtype="float64", seed=0)
    x, t = small_batch(xp, device, rng)
    optimizer = OPTIMIZERS[name](lr=0.01)
    grads = net.gradient(x, t)
    params, state = optimizer.apply(net.params, grads, optimizer.init(net.params))
    all_on(device, params.values())
    optimizer.update(net.params, grads)
    optimizer.update(net.params, grads)
    all_on(device, net.params.values())


def test_functions_keep_the_device(xp, device, rng):
    x, t = small_batch(xp, device, rng, d=3)
    y = functions.softmax(x)
    all_on(device, [y, functions.log_softmax(x), functions.relu(x), functions.d_relu(x), functions.sigmoid(x),
                    functions.d_sigmoid(x), functions.one_hot(t, 3, dtype=xp.float64),
                    functions.cross_entropy_error(y, t), functions.d_softmax_with_loss(t, y)])


def test_training_keeps_the_device(xp, device, rng):
    images = rng.integers(0, 256, (40, 3, 3)).astype(np.uint8)
    labels = rng.integers(0, 3, 40).astype(np.uint8)
    dataset = Dataset("tiny", images[:30], labels[:30], images[30:], labels[30:], 255, "test", 3)
    data = to_device(dataset, xp, device=device, dtype=xp.float64)
    all_on(device, [data.x_train, data.t_train, data.x_test, data.t_test])
    net = MultiLayerNet(9, [4], 3, xp=xp, device=device, dtype="float64", seed=0)
    result = train(net, OPTIMIZERS["adam"](), data, Schedule(iters=6, batch_size=10, seed=0, eval_interval=3))
    assert result.steps_done == 6 and len(result.history) == 3
    all_on(device, net.params.values())
