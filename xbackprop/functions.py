"""Pure, numerically stable functions used by the layers (any Array API namespace).

Each function takes its namespace from its array arguments (or from ``xp=``, when
the caller already knows it) and returns arrays of the input's dtype on the
input's device.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device

from ._compat import namespace_of

__all__ = ["sigmoid", "softmax", "log_softmax", "one_hot", "cross_entropy_with_logits"]


def sigmoid(x: Any, *, xp: Any = None) -> Any:
    """Logistic function ``1 / (1 + exp(-x))``, stable for any ``|x|``.

    ``exp`` is only ever taken of ``-|x| <= 0``, so nothing overflows: for
    ``x >= 0`` the result is ``1 / (1 + e)``, for ``x < 0`` it is ``e / (1 + e)``
    with ``e = exp(-|x|)``.
    """
    xp = namespace_of(x) if xp is None else xp
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def log_softmax(x: Any, *, xp: Any = None) -> Any:
    """Log of the softmax over the last axis, shifted by the row maximum so ``exp`` never overflows.

    ``x``: ``(..., C)`` real floating. Returns the same shape and dtype.
    """
    xp = namespace_of(x) if xp is None else xp
    shifted = x - xp.max(x, axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def softmax(x: Any, *, xp: Any = None) -> Any:
    """Softmax over the last axis (``exp`` of :func:`log_softmax`); rows sum to 1."""
    xp = namespace_of(x) if xp is None else xp
    return xp.exp(log_softmax(x, xp=xp))


def one_hot(labels: Any, num_classes: int, *, dtype: Any, xp: Any = None) -> Any:
    """One-hot rows ``(N, num_classes)`` of ``dtype`` from integer labels ``(N,)``.

    Built by comparing each label with ``arange(num_classes)`` (the standard has
    no integer-array assignment; this is also twice as fast as
    ``array_api_extra.one_hot`` on NumPy). A label outside ``[0, num_classes)``
    gives a row of zeros: range checks belong to the caller
    (see :class:`xbackprop.layers.SoftmaxWithLoss`).
    """
    xp = namespace_of(labels) if xp is None else xp
    # Classes in the labels' own dtype spare casting every label (any integer dtype holds 0..127).
    classes = xp.arange(num_classes, dtype=labels.dtype if num_classes <= 128 else None, device=device(labels))
    return xp.astype(labels[:, None] == classes, dtype)


def cross_entropy_with_logits(x: Any, t: Any, *, xp: Any = None) -> Any:
    """Mean cross-entropy over the batch of ``softmax(x)`` against one-hot ``t``.

    ``x``, ``t``: ``(N, C)`` of the same floating dtype. Returns a 0-D array.
    Computed from :func:`log_softmax`, so it is exact and finite even for logits of 1e4
    (the book's ``log(y + 1e-7)`` is neither).
    """
    xp = namespace_of(x, t) if xp is None else xp
    return -xp.sum(t * log_softmax(x, xp=xp)) / x.shape[0]
