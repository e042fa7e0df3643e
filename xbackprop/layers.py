"""The layers of *Deep Learning from Scratch*, chapter 5, on any Array API namespace.

Every layer has ``forward(...)`` and ``backward(dout)``; ``forward`` caches what
``backward`` needs, and ``backward`` returns the gradient with respect to the
inputs of ``forward``. No layer writes into an array it was given, and every
constant is made on the input's device, so the same code runs on NumPy, CuPy,
PyTorch, JAX and array-api-strict.

A layer with parameters keeps them in a ``params`` dict (``{"W": ..., "b": ...}``) and,
after ``backward``, their gradients under the same keys in a ``grads`` dict; state that
is not trained but carried from pass to pass (BatchNormalization's running statistics,
Dropout's count of masks drawn) lives in a ``buffers`` dict. The book's attributes
(``W``, ``b``, ``dW``, ``db``, ``gamma``, ``dgamma``, ``running_mean``, ...) read and
write those dicts, so the classes below read as the book's. A net finds every
parameter through ``params``, whatever the layer's class (see
:class:`xbackprop.nets.LayerNet`). Layers that behave differently in training,
``Dropout`` and ``BatchNormalization``, take the book's ``forward(x, train_flg)``.

Each pass also reports itself to :func:`xbackprop.graph.trace`, which draws the
computational graph; outside a ``with trace()`` block that report does nothing.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device

from ._matmul import dot
from ._namespace import is_integral, namespace_of
from ._tape import record_backward, record_forward
from .functions import log_softmax, one_hot, random_bits, sigmoid

__all__ = [
    "MulLayer",
    "AddLayer",
    "Relu",
    "Sigmoid",
    "Affine",
    "SoftmaxWithLoss",
    "Dropout",
    "BatchNormalization",
]


class _Entry:
    """The book's attribute for one entry of a layer's dict: ``self.W`` is ``self.params["W"]``,
    ``self.dW`` is ``self.grads.get("W")`` (``None`` before the first backward)."""

    def __init__(self, table: str, key: str) -> None:
        self.table, self.key = table, key

    def __get__(self, layer: Any, owner: type | None = None) -> Any:
        if layer is None:
            return self
        return getattr(layer, self.table).get(self.key)

    def __set__(self, layer: Any, value: Any) -> None:
        getattr(layer, self.table)[self.key] = value


def _param(key: str) -> _Entry:
    return _Entry("params", key)


def _grad(key: str) -> _Entry:
    return _Entry("grads", key)


def _buffer(key: str) -> _Entry:
    return _Entry("buffers", key)


def _forward_first(layer: Any) -> RuntimeError:
    return RuntimeError(f"{type(layer).__name__}.backward: call forward first")


class MulLayer:
    """``out = x * y`` for Python numbers or arrays (the book's apple example)."""

    def __init__(self) -> None:
        self.x = None
        self.y = None

    def forward(self, x: Any, y: Any) -> Any:
        self.x = x
        self.y = y
        out = x * y
        record_forward(self, (x, y), out)
        return out

    def backward(self, dout: Any) -> tuple[Any, Any]:
        if self.x is None:
            raise _forward_first(self)
        dx = dout * self.y  # the two inputs swap places
        dy = dout * self.x
        record_backward(self, dout, (dx, dy))
        return dx, dy


class AddLayer:
    """``out = x + y`` for Python numbers or arrays; the gradient passes through unchanged."""

    def __init__(self) -> None:
        pass

    def forward(self, x: Any, y: Any) -> Any:
        out = x + y
        record_forward(self, (x, y), out)
        return out

    def backward(self, dout: Any) -> tuple[Any, Any]:
        dx = dout * 1
        dy = dout * 1
        record_backward(self, dout, (dx, dy))
        return dx, dy


class Relu:
    """``max(x, 0)`` elementwise. Caches where ``x`` passed, as 1 and 0 in ``x``'s dtype (``passed``, the
    derivative); the book's boolean ``mask`` (``x <= 0``) is read from it.

    ``backward`` returns ``dout`` where ``x > 0`` and 0 where ``mask`` (a new array:
    the book writes the zeros into ``dout``); an infinite or NaN ``dout`` under the
    mask gives NaN there rather than hiding it.
    """

    def __init__(self) -> None:
        self.passed = None

    @property
    def mask(self) -> Any:
        """The book's ``x <= 0`` of the last forward, ``(N, ...)`` bool (``None`` before it)."""
        return None if self.passed is None else self.passed == 0

    def forward(self, x: Any) -> Any:
        xp = namespace_of(x)
        out = xp.where(x < 0, 0.0, x)  # maximum(x, 0.0) would make 0.0 an array on the device first (torch)
        # 1 where x passed (out is not 0; NaN passes, as x <= 0 is false for NaN), 0 where it was cut; kept as
        # numbers, the backward is one multiplication.
        self.passed = xp.astype(xp.astype(out, xp.bool), x.dtype)
        record_forward(self, (x,), out)
        return out

    def backward(self, dout: Any) -> Any:
        if self.passed is None:
            raise _forward_first(self)
        dx = dout * self.passed
        record_backward(self, dout, (dx,))
        return dx


class Sigmoid:
    """Logistic function (stable for any ``|x|``). Caches its output ``out``."""

    def __init__(self) -> None:
        self.out = None

    def forward(self, x: Any) -> Any:
        self.out = sigmoid(x)
        record_forward(self, (x,), self.out)
        return self.out

    def backward(self, dout: Any) -> Any:
        if self.out is None:
            raise _forward_first(self)
        dx = dout * (1.0 - self.out) * self.out
        record_backward(self, dout, (dx,))
        return dx


class Affine:
    """``x @ W + b``.

    ``W``: ``(D, M)``, ``b``: ``(M,)``; ``x``: ``(N, D)``, or any ``(N, ...)`` whose
    trailing axes multiply to ``D`` (flattened, as for images). ``backward`` sets
    ``dW`` ``(D, M)`` and ``db`` ``(M,)`` and returns ``dx`` in ``x``'s original shape.
    ``params`` is ``{"W": W, "b": b}``, ``grads`` ``{"W": dW, "b": db}``.

    ``input_grad=False`` skips ``dx`` (``backward`` returns ``None``): the first
    layer of a network needs no gradient with respect to its data.

    ``backward`` drops the cached ``x`` once ``dW`` is computed, so a batch can be
    freed before the next one is drawn (for the first layer that is the data
    itself); a second ``backward`` needs a new ``forward``.
    """

    W, b = _param("W"), _param("b")
    dW, db = _grad("W"), _grad("b")

    def __init__(self, W: Any, b: Any, *, input_grad: bool = True) -> None:
        if not hasattr(W, "ndim") or not hasattr(b, "ndim"):
            raise TypeError(f"Affine: W and b must be arrays, got {type(W).__name__} and {type(b).__name__}")
        if W.ndim != 2 or b.ndim != 1 or b.shape[0] != W.shape[1]:
            raise ValueError(f"Affine: W must be (D, M) and b (M,), got {tuple(W.shape)} and {tuple(b.shape)}")
        self.params = {"W": W, "b": b}
        self.grads: dict[str, Any] = {}
        self.input_grad = input_grad
        self.x = None
        self.original_x_shape = None

    def forward(self, x: Any) -> Any:
        given = x
        if x.ndim < 2:
            raise ValueError(f"Affine: input must be (N, D), got shape {tuple(x.shape)} (W is {tuple(self.W.shape)})")
        self.original_x_shape = x.shape
        if x.ndim != 2:  # an image or other (N, ...) sample: flatten it
            x = namespace_of(x).reshape(x, (x.shape[0], -1))
        if x.shape[1] != self.W.shape[0]:
            raise ValueError(
                f"Affine: input of shape {tuple(self.original_x_shape)} does not fit "
                f"W of shape {tuple(self.W.shape)} (inner dimensions {x.shape[1]} != {self.W.shape[0]})"
            )
        self.x = x
        out = dot(x, self.W)
        out += self.b  # into the product's own new array: one array less per call
        record_forward(self, (given, self.W, self.b), out)
        return out

    def backward(self, dout: Any) -> Any:
        if self.x is None:
            raise RuntimeError("Affine.backward: call forward first (each backward uses up its forward's input)")
        xp = namespace_of(dout)
        self.dW = dot(self.x.T, dout)
        self.db = xp.sum(dout, axis=0)
        self.x = None
        dx = None
        if self.input_grad:
            dx = dot(dout, self.W.T)
            if tuple(dx.shape) != tuple(self.original_x_shape):
                dx = xp.reshape(dx, self.original_x_shape)
        record_backward(self, dout, (dx, self.dW, self.db))
        return dx


class SoftmaxWithLoss:
    """Softmax followed by the mean cross-entropy over the batch.

    ``forward(x, t)``: scores ``x`` ``(N, C)``; labels ``t`` either one-hot ``(N, C)``
    or integer class indices ``(N,)`` (any integer dtype, ``uint8`` included; ``(N, 1)`` integers are read as
    indices, as the book's chapter 7 passes them), which give identical results. Returns the loss as a 0-D array of ``x``'s dtype, computed
    through a stable log-softmax (exact, finite for scores of 1e4). Caches the
    probabilities ``y`` and the one-hot labels ``t``.

    ``backward(dout=1)`` returns ``dout * (y - t) / N``.

    ``check_labels=True`` verifies integer labels lie in ``[0, C)`` and one-hot rows
    hold a single 1 among 0s, at every call (labels rewritten in place are checked
    again), which reads a number or two back from the device;
    ``forward(x, t, check_labels=False)`` skips it for one call (a trainer that
    validated its data once, the 2P passes of a numerical gradient after the first).
    """

    def __init__(self, *, check_labels: bool = True) -> None:
        self.check_labels = check_labels
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x: Any, t: Any, *, check_labels: bool | None = None) -> Any:
        xp = namespace_of(x, t)
        if x.ndim != 2:
            raise ValueError(f"SoftmaxWithLoss: scores must be (N, C), got shape {tuple(x.shape)}")
        n, c = x.shape
        if n == 0:
            raise ValueError("SoftmaxWithLoss: the batch is empty; the mean loss of no rows is undefined")
        check = self.check_labels if check_labels is None else check_labels
        self.t = self._one_hot_labels(xp, t, n, c, x.dtype, check)
        logp = log_softmax(x, xp=xp)
        self.y = xp.exp(logp)
        # the mean cross-entropy -sum(t log y) / N, by elementwise products and one reduction (a vecdot would be a
        # matrix product, which a captured CuPy graph cannot call)
        self.loss = xp.sum(self.t * logp) * (-1.0 / n)
        record_forward(self, (x, t), self.loss)
        return self.loss

    def backward(self, dout: Any = 1) -> Any:
        if self.t is None:
            raise _forward_first(self)
        batch_size = self.t.shape[0]
        dx = (self.y - self.t) * (dout / batch_size)
        record_backward(self, dout, (dx, None))
        return dx

    def _one_hot_labels(self, xp: Any, t: Any, n: int, c: int, dtype: Any, check: bool) -> Any:
        if t.ndim == 2 and t.shape[1] == 1 < c and is_integral(xp, t.dtype):  # (N, 1) integers: only indices
            t = xp.reshape(t, (t.shape[0],))  # (the book's ch07 gradient check passes them so)
        if t.ndim == 2:
            if tuple(t.shape) != (n, c):
                raise ValueError(
                    f"SoftmaxWithLoss: one-hot labels of shape {tuple(t.shape)} do not match scores ({n}, {c})"
                )
            # every number 0 or 1 (t * t == t; NaN fails) and each row summing to 1: one reduction, one read
            if check and not bool(xp.all((t * t == t) & (xp.sum(t, axis=1, keepdims=True) == 1))):
                raise ValueError("SoftmaxWithLoss: (N, C) labels must be one-hot rows, a single 1 among 0s")
            return t if t.dtype == dtype else xp.astype(t, dtype)
        if t.ndim != 1 or not is_integral(xp, t.dtype):
            raise ValueError(
                "SoftmaxWithLoss: labels must be one-hot (N, C) or integer class indices (N,), "
                f"got shape {tuple(t.shape)} and dtype {t.dtype}"
            )
        if t.shape[0] != n:
            raise ValueError(f"SoftmaxWithLoss: {t.shape[0]} labels for a batch of {n} scores")
        if check:
            low = 0 if xp.iinfo(t.dtype).min == 0 else int(xp.min(t))  # unsigned (MNIST's uint8): no minimum to read
            high = int(xp.max(t))
            if low < 0 or high >= c:
                raise ValueError(f"SoftmaxWithLoss: labels must lie in [0, {c}), got values from {low} to {high}")
        return one_hot(t, c, dtype=dtype, xp=xp)


class Dropout:
    """Chapter 6's dropout: in training, each unit is kept with probability ``1 - dropout_ratio``.

    ``forward(x, train_flg=True)`` multiplies ``x`` by a fresh boolean ``mask`` of
    ``x``'s shape; ``forward(x, train_flg=False)`` scales ``x`` by ``1 - dropout_ratio``
    instead, as the book does. ``backward`` passes ``dout`` where the mask kept a unit
    (after an evaluation pass, ``dout`` scaled as the values were).

    The standard has no random numbers, so the mask comes from a counter-based hash
    (:func:`xbackprop.functions.random_bits`) of ``seed``, the number of masks drawn so
    far and each element's position: the same seed drops the same units on every
    backend and inside a compiled step. The count is the buffer ``draws`` (a
    ``(1,)`` int32 array, created by :meth:`init_buffers` or on the first training
    pass if not given).
    """

    draws = _buffer("draws")

    def __init__(self, dropout_ratio: float = 0.5, *, seed: int = 0, draws: Any = None) -> None:
        if not 0.0 <= dropout_ratio < 1.0:
            raise ValueError(f"Dropout: dropout_ratio must lie in [0, 1), got {dropout_ratio}")
        self.dropout_ratio = dropout_ratio
        self.seed = int(seed)
        self.buffers: dict[str, Any] = {} if draws is None else {"draws": draws}
        self.mask = None
        self.train_flg = None

    def init_buffers(self, like: Any) -> None:
        """Create the ``draws`` count (zero) on ``like``'s namespace and device unless it exists: a net calls
        this when it is built, so the count is one of its buffers from the start."""
        if self.draws is None:
            xp = namespace_of(like)
            self.draws = xp.zeros((1,), dtype=xp.int32, device=device(like))

    def forward(self, x: Any, train_flg: bool = True) -> Any:
        xp = namespace_of(x)
        if train_flg:
            self.init_buffers(x)
            bits = random_bits(x.shape, self.seed, self.draws, like=x)  # uniform on [0, 2**31)
            self.mask = bits >= math.floor(self.dropout_ratio * 2.0**31)
            self.draws = self.draws + 1
            out = x * xp.astype(self.mask, x.dtype)
        else:
            self.mask = None
            out = x * (1.0 - self.dropout_ratio)
        self.train_flg = train_flg
        record_forward(self, (x,), out)
        return out

    def backward(self, dout: Any) -> Any:
        if self.train_flg is None:
            raise _forward_first(self)
        if self.train_flg:
            dx = dout * namespace_of(dout).astype(self.mask, dout.dtype)
        else:
            dx = dout * (1.0 - self.dropout_ratio)
        record_backward(self, dout, (dx,))
        return dx


class BatchNormalization:
    """Chapter 6's batch normalization: ``gamma * (x - mean) / sqrt(var + 1e-6) + beta`` per feature.

    ``gamma``, ``beta``: ``(D,)``; ``x``: ``(N, D)`` or ``(N, ...)`` (flattened to ``D``
    features and reshaped back). ``forward(x, train_flg=True)`` normalises with the
    batch's own mean and variance and moves the running statistics towards them,
    ``running = momentum * running + (1 - momentum) * batch``; ``train_flg=False``
    normalises with the running statistics. ``backward`` sets ``dgamma`` and ``dbeta``
    and returns ``dx`` of whichever pass came last.

    ``params`` is ``{"gamma", "beta"}``; the running statistics are the buffers
    ``running_mean`` and ``running_var``, zeros of ``gamma``'s shape unless given (as
    the book starts them).
    """

    gamma, beta = _param("gamma"), _param("beta")
    dgamma, dbeta = _grad("gamma"), _grad("beta")
    running_mean, running_var = _buffer("running_mean"), _buffer("running_var")

    #: The book's ``10e-7`` under the square root.
    EPSILON = 1e-6

    def __init__(self, gamma: Any, beta: Any, momentum: float = 0.9, running_mean: Any = None,
                 running_var: Any = None) -> None:
        if gamma.ndim != 1 or tuple(beta.shape) != tuple(gamma.shape):
            raise ValueError(f"BatchNormalization: gamma and beta must be (D,), got {tuple(gamma.shape)} "
                             f"and {tuple(beta.shape)}")
        xp = namespace_of(gamma)
        self.params = {"gamma": gamma, "beta": beta}
        self.grads: dict[str, Any] = {}
        self.buffers = {
            "running_mean": xp.zeros_like(gamma) if running_mean is None else running_mean,
            "running_var": xp.zeros_like(gamma) if running_var is None else running_var,
        }
        self.momentum = momentum
        self.input_shape = None
        self.train_flg = None
        self.batch_size = None
        self.xc = None
        self.xn = None
        self.std = None

    def forward(self, x: Any, train_flg: bool = True) -> Any:
        xp = namespace_of(x)
        self.input_shape = x.shape
        flat = x if x.ndim == 2 else xp.reshape(x, (x.shape[0], -1))
        if flat.shape[1] != self.gamma.shape[0]:
            raise ValueError(f"BatchNormalization: input of shape {tuple(x.shape)} has {flat.shape[1]} features, "
                             f"gamma {self.gamma.shape[0]}")
        if train_flg:
            mu = xp.mean(flat, axis=0)
            xc = flat - mu
            var = xp.mean(xc * xc, axis=0)
            std = xp.sqrt(var + self.EPSILON)
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            xc = flat - self.running_mean
            std = xp.sqrt(self.running_var + self.EPSILON)
        xn = xc / std
        self.train_flg, self.batch_size, self.xc, self.xn, self.std = train_flg, flat.shape[0], xc, xn, std
        out = self.gamma * xn + self.beta
        if out.ndim != len(self.input_shape):
            out = xp.reshape(out, self.input_shape)
        record_forward(self, (x, self.gamma, self.beta), out)
        return out

    def backward(self, dout: Any) -> Any:
        if self.xc is None:
            raise _forward_first(self)
        xp = namespace_of(dout)
        flat = dout if dout.ndim == 2 else xp.reshape(dout, (dout.shape[0], -1))
        self.dbeta = xp.sum(flat, axis=0)
        self.dgamma = xp.sum(self.xn * flat, axis=0)
        dxn = self.gamma * flat
        dxc = dxn / self.std
        if self.train_flg:  # the batch's mean and variance depend on x too
            dstd = -xp.sum((dxn * self.xc) / (self.std * self.std), axis=0)
            dvar = 0.5 * dstd / self.std
            dxc = dxc + (2.0 / self.batch_size) * self.xc * dvar
            dmu = xp.sum(dxc, axis=0)
            dx = dxc - dmu / self.batch_size
        else:  # the running statistics are constants
            dx = dxc
        if dx.ndim != len(self.input_shape):
            dx = xp.reshape(dx, self.input_shape)
        record_backward(self, dout, (dx, self.dgamma, self.dbeta))
        return dx
