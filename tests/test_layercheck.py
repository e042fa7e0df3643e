"""check_layer: every built-in layer passes on every backend; deliberate bugs fail, named where they are."""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace
from conftest import asarray

from xbackprop import AddLayer, Affine, MulLayer, Relu, Sigmoid, SoftmaxWithLoss
from xbackprop.layercheck import check_layer
from xbackprop.layers import BatchNormalization, Dropout


def built_in_cases(xp, rng):
    """(layer, inputs, forward keywords) for every layer of layers.py, with inputs clear of ReLU's kink."""
    x = asarray(xp, rng.uniform(0.1, 1.0, (4, 5)) * rng.choice([-1.0, 1.0], (4, 5)))
    W, b = asarray(xp, rng.standard_normal((5, 3))), asarray(xp, rng.standard_normal(3))
    gamma, beta = asarray(xp, rng.uniform(0.5, 2.0, 5)), asarray(xp, rng.standard_normal(5))
    labels = xp.asarray(rng.integers(0, 5, 4), dtype=xp.int64)
    running = asarray(xp, rng.uniform(0.5, 2.0, 5))
    return [
        (MulLayer(), (x, x + 1.0), {}),
        (AddLayer(), (x, x * 2.0), {}),
        (Relu(), (x,), {}),
        (Sigmoid(), (x,), {}),
        (Affine(W, b), (x,), {}),
        (Affine(W, b), (asarray(xp, rng.standard_normal((4, 5, 1))),), {}),  # (N, ...) inputs are flattened
        (SoftmaxWithLoss(), (x, labels), {}),
        (Dropout(0.4, seed=1), (x,), {"train_flg": True}),
        (Dropout(0.4, seed=1), (x,), {"train_flg": False}),
        (BatchNormalization(gamma, beta), (x,), {"train_flg": True}),
        (BatchNormalization(gamma, beta, running_mean=running - 1.0, running_var=running), (x,),
         {"train_flg": False}),
    ]


def test_every_built_in_layer_passes(xp, rng):
    for layer, inputs, keywords in built_in_cases(xp, rng):
        report = check_layer(layer, *inputs, **keywords)
        assert report.passed, str(report)


def test_the_check_leaves_the_layer_as_it_was(xp, rng):
    W, b = asarray(xp, rng.standard_normal((5, 3)), dtype=xp.float32), asarray(xp, np.zeros(3), dtype=xp.float32)
    layer = Affine(W, b)
    report = check_layer(layer, asarray(xp, rng.standard_normal((2, 5)), dtype=xp.float32))
    assert report.passed and "checked in float64" in str(report)
    assert layer.W is W and layer.b is b and layer.W.dtype == xp.float32


class TransposedAffine(Affine):
    """A square Affine whose backward returns dW transposed: shapes agree, values do not."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.dW = self.dW.T
        return dx


class DoubledBias(Affine):
    def backward(self, dout):
        dx = super().backward(dout)
        self.db = 2 * self.db
        return dx


class ForgottenMask:
    """ReLU whose backward forgets the mask."""

    def forward(self, x):
        self.mask = x <= 0
        return x * (x > 0)

    def backward(self, dout):
        return dout * 1.0


class BookRelu:
    """The book's Relu: it writes zeros into dout."""

    def forward(self, x):
        self.mask = x <= 0
        return x * (x > 0)

    def backward(self, dout):
        dout[self.mask] = 0
        return dout


def test_deliberate_bugs_fail_where_they_are(rng):
    x = rng.uniform(0.1, 1.0, (4, 4)) * rng.choice([-1.0, 1.0], (4, 4))
    W, b = rng.standard_normal((4, 4)), rng.standard_normal(4)

    report = check_layer(TransposedAffine(W, b), x)
    assert not report.passed and [a.name for a in report.arrays if not a.passed] == ["params['W']"]
    assert "params['W']: WRONG" in str(report) and "first disagreement: params['W'][" in str(report)

    report = check_layer(DoubledBias(W, b), x)
    assert [a.name for a in report.arrays if not a.passed] == ["params['b']"]
    first = report.arrays[-1].disagreements[0]
    assert first.backprop == pytest.approx(2 * first.numerical, rel=1e-6)

    report = check_layer(ForgottenMask(), x)
    assert not report.passed and "x: WRONG" in str(report)

    report = check_layer(BookRelu(), x)
    assert not report.passed and report.mutations == ("backward wrote into dout",)


def test_a_kink_is_told_apart_from_a_wrong_backward(rng):
    x = rng.uniform(0.1, 1.0, (3, 4))
    x[1, 2] = 3e-5  # within h = 1e-4 of ReLU's kink
    report = check_layer(Relu(), x)
    assert report.passed
    (kink,) = report.arrays[0].kinks
    assert kink.index == (1, 2) and kink.kink and kink.resolved
    assert "1 element(s) across a kink checked from one side" in str(report)


class NaNBackward:
    """A layer whose backward is NaN everywhere, or infinite where its input is negative."""

    def __init__(self, where):
        self.where = where

    def forward(self, x):
        self.x = x
        return x * 2.0

    def backward(self, dout):
        if self.where == "everywhere":
            return dout * float("nan")
        xp = array_namespace(self.x)
        return xp.where(self.x > 0, dout * 2.0, dout * float("inf"))


@pytest.mark.parametrize("where", ["everywhere", "in places"])
def test_a_gradient_that_is_not_a_number_fails(xp, where):
    x = asarray(xp, np.array([[0.5, -0.25], [1.5, 2.0]]))
    report = check_layer(NaNBackward(where), x)
    assert not report.passed and "FAIL" in str(report), str(report)

