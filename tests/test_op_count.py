"""How many arrays one training step creates, counted on array-api-strict (see ``op_count.py``): on a GPU most
are a kernel launch and all are a Python call, so this is the step's fixed cost. 784-50-10, batch 100, float32."""

from __future__ import annotations

import numpy as np
import pytest

xp = pytest.importorskip("array_api_strict", reason="the count runs on array-api-strict: pip install array-api-strict")

from op_count import counting_arrays, table  # noqa: E402

from xbackprop import TwoLayerNet  # noqa: E402
from xbackprop.optimizers import SGD  # noqa: E402
from xbackprop.training import DeviceData, EagerSteps, training_targets  # noqa: E402

#: The trainer's eager step (``EagerSteps``: gather, backprop, SGD) created 50 arrays before the count was cut.
#: A ReLU is a ``maximum`` with a zero made on the device (2 arrays), not ``maximum(x, 0.0)``, whose 0.0
#: array-api-compat's torch wrapper copies to the device from the host, nor ``where(x < 0, 0.0, x)`` (4 here).
MOST_PER_TRAINING_STEP = 35
#: The book's own step (``net.gradient`` + ``SGD.update``, 51 before; 59 with one-hot labels) also checks the
#: labels and, for integer labels, builds their one-hot rows at every call, which the trainer does once per run.
MOST_PER_BOOK_STEP = 40
MOST_PER_BOOK_STEP_ONE_HOT = 42


@pytest.fixture
def setting():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 1000).astype(np.uint8)
    data = DeviceData(xp.asarray(rng.random((1000, 784)).astype(np.float32)), xp.asarray(labels),
                      xp.asarray(rng.random((10, 784)).astype(np.float32)), xp.asarray(labels[:10]), 10)
    net = TwoLayerNet(784, 50, 10, xp=xp, dtype="float32", seed=0)
    epoch = xp.asarray(rng.integers(0, 1000, (10, 100)))  # an epoch's minibatch rows, drawn on the host
    return net, data, epoch


def counted(step):
    step()  # the first call makes what is kept (the optimizer's lr as an array)
    with counting_arrays() as counter:
        step()
    return counter


def test_the_eager_training_step_creates_at_most_35_arrays(setting):
    net, data, epoch = setting
    steps = EagerSteps(net, SGD(lr=0.1), xp, batch_size=100)
    targets = training_targets(data, 10)
    counter = counted(lambda: steps(data.x_train, targets, epoch[3, :]))  # as train() calls it
    assert sum(counter.values()) <= MOST_PER_TRAINING_STEP, table(counter)


@pytest.mark.parametrize("labels", ["uint8", "one-hot"])
def test_the_books_step_creates_at_most_40_or_42_arrays(setting, labels):
    net, data, epoch = setting
    optimizer = SGD(lr=0.1)
    t_train = data.t_train if labels == "uint8" else training_targets(data, 10)  # load_mnist(one_hot_label=True)

    def book_step():
        batch_mask = epoch[3, :]
        x_batch, t_batch = xp.take(data.x_train, batch_mask, axis=0), xp.take(t_train, batch_mask, axis=0)
        grad = net.gradient(x_batch, t_batch)
        optimizer.update(net.params, grad)

    counter = counted(book_step)
    most = MOST_PER_BOOK_STEP if labels == "uint8" else MOST_PER_BOOK_STEP_ONE_HOT
    assert sum(counter.values()) <= most, table(counter)
