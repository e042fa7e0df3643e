"""Pure, numerically stable functions used by the layers (any Array API namespace).

Each function takes its namespace from its array arguments and returns arrays of
the input's dtype on the input's device.
"""

from __future__ import annotations

from typing import Any

import array_api_extra as xpx
from array_api_compat import array_namespace

__all__ = ["sigmoid", "softmax", "log_softmax", "one_hot", "cross_entropy_with_logits"]


def sigmoid(x: Any) -> Any:
    """Logistic function ``1 / (1 + exp(-x))``, stable for any ``|x|``.

    ``exp`` is only ever taken of ``-|x| <= 0``, so nothing overflows: for
    ``x >= 0`` the result is ``1 / (1 + e)``, for ``x < 0`` it is ``e / (1 + e)``
    with ``e = exp(-|x|)``.
    """
    xp = array_namespace(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def log_softmax(x: Any) -> Any:
    """Log of the softmax over the last axis, shifted by the row maximum so ``exp`` never overflows.

    ``x``: ``(..., C)`` real floating. Returns the same shape and dtype.
    """
    xp = array_namespace(x)
    shifted = x - xp.max(x, axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def softmax(x: Any) -> Any:
    """Softmax over the last axis (``exp`` of :func:`log_softmax`); rows sum to 1."""
    xp = array_namespace(x)
    return xp.exp(log_softmax(x))


def one_hot(labels: Any, num_classes: int, *, dtype: Any = None) -> Any:
    """One-hot rows ``(N, num_classes)`` from integer labels ``(N,)`` (no integer-array assignment).

    ``dtype`` defaults to the namespace's default floating dtype. Labels are not
    range-checked here (see :class:`xbackprop.layers.SoftmaxWithLoss`).
    """
    return xpx.one_hot(labels, num_classes, dtype=dtype)


def cross_entropy_with_logits(x: Any, t: Any) -> Any:
    """Mean cross-entropy over the batch of ``softmax(x)`` against one-hot ``t``.

    ``x``, ``t``: ``(N, C)`` of the same floating dtype. Returns a 0-D array.
    Computed from :func:`log_softmax`, so it is exact and finite even for logits of 1e4
    (the book's ``log(y + 1e-7)`` is neither).
    """
    xp = array_namespace(x, t)
    return -xp.sum(t * log_softmax(x)) / x.shape[0]
