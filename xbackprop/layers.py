"""The layers of *Deep Learning from Scratch*, chapter 5, on any Array API namespace.

Every layer has ``forward(...)`` and ``backward(dout)``; ``forward`` caches what
``backward`` needs, and ``backward`` returns the gradient with respect to the
inputs of ``forward``. No layer writes into an array it was given, and every
constant is made on the input's device, so the same code runs on NumPy, CuPy,
PyTorch, JAX and array-api-strict.

Each pass also reports itself to :func:`xbackprop.graph.trace`, which draws the
computational graph; outside a ``with trace()`` block that report does nothing.
"""

from __future__ import annotations

from typing import Any

from ._namespace import is_integral, namespace_of
from ._tape import record_backward, record_forward
from .functions import log_softmax, one_hot, sigmoid

__all__ = ["MulLayer", "AddLayer", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss"]


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
    """``max(x, 0)`` elementwise. Caches the boolean ``mask`` of ``x <= 0``.

    ``backward`` returns ``dout`` where ``x > 0`` and 0 where ``mask`` (a new array:
    the book writes the zeros into ``dout``); an infinite or NaN ``dout`` under the
    mask gives NaN there rather than hiding it.
    """

    def __init__(self) -> None:
        self.mask = None

    def forward(self, x: Any) -> Any:
        xp = namespace_of(x)
        self.mask = x <= 0
        out = xp.maximum(x, 0.0)
        record_forward(self, (x,), out)
        return out

    def backward(self, dout: Any) -> Any:
        if self.mask is None:
            raise _forward_first(self)
        xp = namespace_of(dout)
        # Multiplying by a 0/1 array is several times cheaper than where() on NumPy,
        # whose scalar-broadcasting path is a plain element loop.
        dx = dout * xp.astype(~self.mask, dout.dtype)
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

    Leading axes ride along as ``torch.nn.Linear``'s do: an ``x`` of ``(..., N, D)``
    whose last axis already matches ``W`` gives ``(..., N, M)``, and backward sums the
    parameter gradients over them. A stack of parameters, ``W`` ``(K, D, M)`` with
    ``b`` ``(K, M)`` (or either one stacked), gives ``(K, N, M)``: K perturbed copies
    of the layer in one forward pass, as the batched numerical gradient uses them;
    such a pass has no backward.

    ``input_grad=False`` skips ``dx`` (``backward`` returns ``None``): the first
    layer of a network needs no gradient with respect to its data.

    ``backward`` drops the cached ``x`` once ``dW`` is computed, so a batch can be
    freed before the next one is drawn (for the first layer that is the data
    itself); a second ``backward`` needs a new ``forward``.
    """

    def __init__(self, W: Any, b: Any, *, input_grad: bool = True) -> None:
        self.W = W
        self.b = b
        self.input_grad = input_grad
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x: Any) -> Any:
        given = x
        if x.ndim < 2:
            raise ValueError(f"Affine: input must be (N, D) or (..., N, D), got shape {tuple(x.shape)} "
                             f"(W is {tuple(self.W.shape)})")
        self.original_x_shape = x.shape
        if x.shape[-1] != self.W.shape[-2]:  # an image or other (N, ...) sample: flatten it
            x = namespace_of(x).reshape(x, (x.shape[0], -1))
        if x.shape[-1] != self.W.shape[-2]:
            raise ValueError(
                f"Affine: input of shape {tuple(self.original_x_shape)} does not fit "
                f"W of shape {tuple(self.W.shape)} (inner dimensions {x.shape[-1]} != {self.W.shape[-2]})"
            )
        self.x = x
        b = self.b if self.b.ndim == 1 else namespace_of(self.b).expand_dims(self.b, axis=-2)  # (K, 1, M)
        out = x @ self.W + b
        record_forward(self, (given, self.W, self.b), out)
        return out

    def backward(self, dout: Any) -> Any:
        if self.x is None:
            raise RuntimeError("Affine.backward: call forward first (each backward uses up its forward's input)")
        if self.W.ndim != 2 or self.b.ndim != 1:
            raise ValueError("Affine.backward: a pass through a stack of parameters has no backward")
        xp = namespace_of(dout)
        x, flat_dout = self.x, dout
        if x.ndim != 2:  # leading axes: every row of every copy counts once
            x = xp.reshape(x, (-1, x.shape[-1]))
            flat_dout = xp.reshape(dout, (-1, dout.shape[-1]))
        self.dW = x.T @ flat_dout
        self.db = xp.sum(flat_dout, axis=0)
        self.x = None
        dx = None
        if self.input_grad:
            dx = dout @ self.W.T
            if tuple(dx.shape) != tuple(self.original_x_shape):
                dx = xp.reshape(dx, self.original_x_shape)
        record_backward(self, dout, (dx, self.dW, self.db))
        return dx


class SoftmaxWithLoss:
    """Softmax followed by the mean cross-entropy over the batch.

    ``forward(x, t)``: logits ``x`` ``(N, C)``; labels ``t`` either one-hot ``(N, C)``
    or integer class indices ``(N,)`` (any integer dtype, ``uint8`` included), which
    give identical results. Returns the loss as a 0-D array of ``x``'s dtype, computed
    through a stable log-softmax (exact, finite for logits of 1e4). Caches the
    probabilities ``y`` and the one-hot labels ``t``.

    ``backward(dout=1)`` returns ``dout * (y - t) / N``.

    Scores with leading axes, ``(K, N, C)`` (K copies of a network, as the batched
    numerical gradient runs them), give one loss per copy, ``(K,)``, against the same
    labels.

    ``check_labels=True`` verifies integer labels lie in ``[0, C)`` and one-hot rows
    hold a single 1 among 0s, which reads a number or two back from the device;
    ``forward(x, t, check_labels=False)`` skips it for one call (a trainer that
    validated its data once). The same labels array passed again is not checked again.
    """

    def __init__(self, *, check_labels: bool = True) -> None:
        self.check_labels = check_labels
        self._checked = None  # the labels array last found valid
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x: Any, t: Any, *, check_labels: bool | None = None) -> Any:
        xp = namespace_of(x, t)
        if x.ndim < 2:
            raise ValueError(f"SoftmaxWithLoss: scores must be (N, C) or (K, N, C), got shape {tuple(x.shape)}")
        n, c = x.shape[-2:]
        if n == 0:
            raise ValueError("SoftmaxWithLoss: the batch is empty; the mean loss of no rows is undefined")
        check = self.check_labels if check_labels is None else check_labels
        self.t = self._one_hot_labels(xp, t, n, c, x.dtype, check)
        logp = log_softmax(x, xp=xp)
        self.y = xp.exp(logp)
        # one loss per stacked copy: 0-D for (N, C) scores, (K,) for (K, N, C)
        self.loss = -xp.sum(self.t * logp, axis=(-2, -1)) / n
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
        if t.ndim == 2:
            if tuple(t.shape) != (n, c):
                raise ValueError(
                    f"SoftmaxWithLoss: one-hot labels of shape {tuple(t.shape)} do not match scores ({n}, {c})"
                )
            if check and t is not self._checked and not bool(xp.all(xp.sum(xp.astype(t == 1, dtype), axis=1) == 1)
                                                & xp.all((t == 0) | (t == 1))):
                raise ValueError("SoftmaxWithLoss: (N, C) labels must be one-hot rows, a single 1 among 0s")
            self._checked = t
            return t if t.dtype == dtype else xp.astype(t, dtype)
        if t.ndim != 1 or not is_integral(xp, t.dtype):
            raise ValueError(
                "SoftmaxWithLoss: labels must be one-hot (N, C) or integer class indices (N,), "
                f"got shape {tuple(t.shape)} and dtype {t.dtype}"
            )
        if t.shape[0] != n:
            raise ValueError(f"SoftmaxWithLoss: {t.shape[0]} labels for a batch of {n} scores")
        if check and t is not self._checked:  # the same array again (2P numerical passes) was checked
            low, high = int(xp.min(t)), int(xp.max(t))
            if low < 0 or high >= c:
                raise ValueError(f"SoftmaxWithLoss: labels must lie in [0, {c}), got values from {low} to {high}")
            self._checked = t
        return one_hot(t, c, dtype=dtype, xp=xp)
