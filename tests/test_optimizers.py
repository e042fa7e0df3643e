"""The chapter 6 optimizers against float64 host references, on every namespace."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asarray, assert_close

from xbackprop import (
    TwoLayerNet,
)
from xbackprop.backend import to_numpy
from xbackprop.optimizers import SGD, AdaGrad, Adam, Momentum

RNG = np.random.default_rng(5)
P0 = RNG.standard_normal((3, 2))
GRADS = [RNG.standard_normal((3, 2)) for _ in range(3)]


def reference(name):
    """Three steps of each optimizer in plain NumPy, as the book writes them."""
    p = P0.copy()
    state = {"v": np.zeros_like(p), "h": np.zeros_like(p), "m": np.zeros_like(p)}
    for step, g in enumerate(GRADS, start=1):
        if name == "sgd":
            p -= 0.1 * g
        elif name == "momentum":
            state["v"] = 0.9 * state["v"] - 0.1 * g
            p += state["v"]
        elif name == "adagrad":
            state["h"] += g * g
            p -= 0.1 * g / (np.sqrt(state["h"]) + 1e-7)
        else:
            lr_t = 0.1 * np.sqrt(1 - 0.999**step) / (1 - 0.9**step)
            state["m"] += 0.1 * (g - state["m"])
            state["v"] += 0.001 * (g**2 - state["v"])
            p -= lr_t * state["m"] / (np.sqrt(state["v"]) + 1e-7)
    return p


@pytest.mark.parametrize(("name", "cls"), [("sgd", SGD), ("momentum", Momentum), ("adagrad", AdaGrad), ("adam", Adam)])
def test_three_steps_match_the_book(xp, name, cls):
    params = {"W": asarray(xp, P0.copy())}  # numpy, torch and strict may share P0's memory
    optimizer = cls(lr=0.1)
    grads = [asarray(xp, g) for g in GRADS]
    for g in grads:
        optimizer.update(params, {"W": g})
    assert_close(params["W"], reference(name), xp=xp, rtol=1e-12)
    for g, host in zip(grads, GRADS):
        np.testing.assert_array_equal(to_numpy(g), host)  # gradients untouched


def test_book_defaults():
    assert SGD().lr == 0.01 and Momentum().momentum == 0.9 and AdaGrad().lr == 0.01
    adam = Adam()
    assert (adam.lr, adam.beta1, adam.beta2) == (0.001, 0.9, 0.999)


@pytest.mark.parametrize(("name", "cls"), [("sgd", SGD), ("momentum", Momentum), ("adagrad", AdaGrad), ("adam", Adam)])
def test_apply_is_pure_and_takes_the_same_steps(xp, name, cls):
    optimizer = cls(lr=0.1)
    params = {"W": asarray(xp, P0.copy())}
    state = optimizer.init(params)
    for g in GRADS:
        before = to_numpy(params["W"]).copy()
        new_params, state = optimizer.apply(params, {"W": asarray(xp, g)}, state)
        np.testing.assert_array_equal(to_numpy(params["W"]), before)  # nothing passed in was modified
        params = new_params
    assert_close(params["W"], reference(name), xp=xp, rtol=1e-12)
    assert optimizer.state is None  # apply keeps nothing on the optimizer


def test_misuse_that_was_an_attribute_or_broadcast_error_names_the_argument():
    from xbackprop import check_layer
    from xbackprop.optimizers import SGD, Adam
    from xbackprop.show.evaluation import evaluate

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
