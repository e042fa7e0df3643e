"""Pure, numerically stable functions used by the layers (any Array API namespace).

Each function takes its namespace from its array arguments (or from ``xp=``, when
the caller already knows it) and returns arrays of the input's dtype on the
input's device.

Besides what the layers use, this is the functional API that courses built on the
book call: ``relu``/``d_relu``, ``sigmoid``/``d_sigmoid``, ``softmax``,
``cross_entropy_error``, ``mean_squared_error`` and ``d_softmax_with_loss``. The
losses take the book's argument order, prediction first (``(y, t)``); the course's
``d_softmax_with_loss(d, y)`` keeps its own order, labels first.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace, device

__all__ = [
    "namespace_of",
    "is_integral",
    "relu",
    "d_relu",
    "sigmoid",
    "d_sigmoid",
    "softmax",
    "log_softmax",
    "one_hot",
    "checked_labels",
    "random_bits",
    "cross_entropy_error",
    "mean_squared_error",
    "d_softmax_with_loss",
    "sigmoid_grad",
    "relu_grad",
]

#: The book's guard against ``log(0)`` in :func:`cross_entropy_error` (its printed numbers include it).
CROSS_ENTROPY_DELTA = 1e-7

# How array code finds its inputs' namespace: ``array_namespace`` inspects every argument against every library
# it knows, and a training step asks about ten times, a measurable share of a small net's step; the namespace is
# a function of the array types, so it is looked up once per combination of types.
_NAMESPACES: dict[tuple[type, ...], Any] = {}
_INTEGRAL: dict[tuple[Any, Any], bool] = {}


def namespace_of(*arrays: Any) -> Any:
    """The Array API namespace of ``arrays`` (as ``array_api_compat.array_namespace``, memoised per types)."""
    types = tuple(map(type, arrays))
    xp = _NAMESPACES.get(types)
    if xp is None:
        xp = array_namespace(*arrays)  # raises for mixed or unsupported libraries, every time
        _NAMESPACES[types] = xp
    return xp


def is_integral(xp: Any, dtype: Any) -> bool:
    """``xp.isdtype(dtype, "integral")``, remembered per dtype (asked on every layer call; the answer never changes)."""
    key = (xp, dtype)  # the namespace first: dtypes of different libraries must never be compared
    answer = _INTEGRAL.get(key)
    if answer is None:
        answer = _INTEGRAL[key] = bool(xp.isdtype(dtype, "integral"))
    return answer


def relu(x: Any, *, xp: Any = None) -> Any:
    """``max(x, 0)`` elementwise, in ``x``'s dtype."""
    xp = namespace_of(x) if xp is None else xp
    # NaN passes. The zero is made on x's device: array-api-compat's torch maximum would copy a Python 0.0 there
    # from the host; and where(x < 0, 0.0, x) mispredicts a branch an element on NumPy
    return xp.maximum(x, xp.zeros((), dtype=x.dtype, device=device(x)))


def d_relu(x: Any, *, xp: Any = None) -> Any:
    """Derivative of :func:`relu` at ``x``: 1 where ``x > 0``, else 0, in ``x``'s dtype.

    ``Relu.backward(dout)`` is ``dout * d_relu(x)`` for the ``x`` of its forward pass.
    """
    xp = namespace_of(x) if xp is None else xp
    return xp.astype(x > 0, x.dtype)


def sigmoid(x: Any, *, xp: Any = None) -> Any:
    """Logistic function ``1 / (1 + exp(-x))``, stable for any ``|x|``.

    ``exp`` is only ever taken of ``-|x| <= 0``, so nothing overflows: for
    ``x >= 0`` the result is ``1 / (1 + e)``, for ``x < 0`` it is ``e / (1 + e)``
    with ``e = exp(-|x|)``.
    """
    xp = namespace_of(x) if xp is None else xp
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def d_sigmoid(x: Any, *, xp: Any = None) -> Any:
    """Derivative of :func:`sigmoid` at ``x``: ``(1 - s) * s`` with ``s = sigmoid(x)``.

    Computed as ``e / (1 + e)**2`` with ``e = exp(-|x|)``: nothing overflows, and far
    out on either side the result is the tiny true value rather than ``1 - s``
    rounded to 0. ``Sigmoid.backward(dout)`` equals ``dout * d_sigmoid(x)`` for the
    ``x`` of its forward pass (to rounding).
    """
    xp = namespace_of(x) if xp is None else xp
    e = xp.exp(-xp.abs(x))
    return e / (1 + e) ** 2


def log_softmax(x: Any, *, xp: Any = None) -> Any:
    """Log of the softmax over the last axis, shifted by the row maximum so ``exp`` never overflows.

    ``x``: ``(..., C)`` real floating. Returns the same shape and dtype.
    """
    xp = namespace_of(x) if xp is None else xp
    shifted = x - xp.max(x, axis=-1, keepdims=True)
    log_sum = xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))
    if shifted.dtype != log_sum.dtype:  # integer scores: the result is floating
        return shifted - log_sum
    shifted -= log_sum  # into the new array: no third one
    return shifted


def softmax(x: Any, *, xp: Any = None) -> Any:
    """Softmax over the last axis (``exp`` of :func:`log_softmax`); rows sum to 1."""
    xp = namespace_of(x) if xp is None else xp
    return xp.exp(log_softmax(x, xp=xp))


def one_hot(labels: Any, num_classes: int, *, dtype: Any, xp: Any = None) -> Any:
    """One-hot rows ``(N, num_classes)`` of ``dtype`` from integer labels ``(N,)``.

    Built by comparing each label with ``arange(num_classes)`` (the standard has
    no integer-array assignment, and one comparison is cheaper than
    ``array_api_extra.one_hot``'s general path). A label outside ``[0, num_classes)``
    gives a row of zeros: range checks belong to the caller
    (see :class:`xbackprop.layers.SoftmaxWithLoss`).
    """
    xp = namespace_of(labels) if xp is None else xp
    # Classes in the labels' own dtype spare casting every label (any integer dtype holds 0..127).
    classes = xp.arange(num_classes, dtype=labels.dtype if num_classes <= 128 else None, device=device(labels))
    return xp.astype(xp.expand_dims(labels, axis=1) == classes, dtype)  # no indexing: see backend.rows


#: The book's names (``common/functions.py``) for the same derivatives, so its chapter 4 code runs unchanged.
sigmoid_grad = d_sigmoid
relu_grad = d_relu


def _to_int32(value: int) -> int:
    """The int32 whose bits are ``value``'s lowest 32 (a Python int, as a wrapped product would be)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _mix32(h: Any, xp: Any) -> Any:
    """A bijective avalanche mix of 32-bit integers (the "lowbias32" hash), on int32 arrays.

    Products wrap modulo 2**32 on every backend; shifts of int32 are arithmetic, so each
    is masked to the logical shift an unsigned hash means.
    """
    h = h ^ ((h >> 16) & 0xFFFF)
    h = h * 0x7FEB352D
    h = h ^ ((h >> 15) & 0x1FFFF)
    h = h * _to_int32(0x846CA68B)
    return h ^ ((h >> 16) & 0xFFFF)


def random_bits(shape: tuple[int, ...], seed: int, counter: Any, *, like: Any) -> Any:
    """Pseudo-random integers uniform on ``[0, 2**31)``, int32 of ``shape``, on ``like``'s device.

    Counter-based, with the standard's integer operations only: element ``i`` is a
    hash of ``seed``, the ``(1,)`` int32 array ``counter`` and ``i`` itself, so the
    same arguments give the same bits on every backend and inside ``jax.jit``, and a
    new ``counter`` gives a new, independent draw. What dropout masks are made of.
    """
    xp = namespace_of(like)
    size = math.prod(shape)
    if size >= 2**31:
        raise ValueError(f"random_bits: {size} elements do not fit the int32 counter")
    index = xp.arange(size, dtype=xp.int32, device=device(like))
    stream = _mix32(index ^ _to_int32(seed * 0x9E3779B1 + 0x632BE5AB), xp)
    bits = _mix32(stream + counter * _to_int32(0x85EBCA77), xp)
    return xp.reshape(bits & 0x7FFFFFFF, shape)


def _as_batch(y: Any, t: Any, xp: Any) -> tuple[Any, Any]:
    """One sample ``(C,)`` becomes a batch of one, as the book's ``reshape(1, size)``."""
    if y.ndim == 1:
        y = xp.reshape(y, (1, y.shape[0]))
        t = xp.reshape(t, (1, t.shape[0])) if t.ndim == 1 and t.shape[0] == y.shape[1] else xp.reshape(t, (1,))
    return y, t


def checked_labels(t: Any, n: int, c: int, *, who: str, one_hot_dtype: Any = None, check: bool = True,
                   column: bool = False) -> Any:
    """The one reading of labels for ``n`` rows of ``c`` scores, used by every loss, layer, net and trainer.

    ``t`` is integer class indices ``(n,)`` (any integer dtype) or one-hot rows ``(n, c)``; with ``column``,
    integers ``(n, 1)`` are indices too (the book's chapter 7 passes them to its loss). Returns one-hot rows
    of ``one_hot_dtype`` when it is given, else class indices ``(n,)``. With ``check``, the labels' values are
    read back (a number or two from the device): indices must lie in ``[0, c)``, one-hot rows hold a single 1
    among 0s (a prediction passed where the labels belong would otherwise give a plausible number). Anything
    else is a ``ValueError`` that starts with ``who``.
    """
    xp = namespace_of(t)
    integral = is_integral(xp, t.dtype)
    if column and integral and t.ndim == 2 and t.shape[1] == 1 < c:
        t = xp.reshape(t, (t.shape[0],))
    if tuple(t.shape) == (n, c):
        # every number 0 or 1 (t * t == t; NaN fails) and each row summing to 1: one reduction, one read
        if check and n and not bool(xp.all((t * t == t) & (xp.sum(t, axis=1, keepdims=True) == 1))):
            raise ValueError(f"{who}: ({n}, {c}) labels must be one-hot rows, a single 1 among 0s (is a "
                             "prediction where the labels belong? the book's order is prediction first, labels second)")
        if one_hot_dtype is None:
            return xp.argmax(t, axis=1)
        return t if t.dtype == one_hot_dtype else xp.astype(t, one_hot_dtype)
    if tuple(t.shape) != (n,) or not integral:
        raise ValueError(f"{who}: labels of shape {tuple(t.shape)} and dtype {t.dtype} fit neither integer class "
                         f"indices ({n},) nor one-hot rows ({n}, {c})")
    if check and n:
        low = 0 if xp.iinfo(t.dtype).min == 0 else int(xp.min(t))  # unsigned (MNIST's uint8): no minimum to read
        high = int(xp.max(t))
        if low < 0 or high >= c:
            raise ValueError(f"{who}: labels must lie in [0, {c}), got values from {low} to {high}")
    return t if one_hot_dtype is None else one_hot(t, c, dtype=one_hot_dtype, xp=xp)


def cross_entropy_error(y: Any, t: Any, *, xp: Any = None) -> Any:
    """The book's mean cross-entropy ``-sum(t * log(y + 1e-7)) / N`` of probabilities ``y``.

    ``y``: ``(N, C)`` (or one sample ``(C,)``) probabilities, e.g. :func:`softmax` output.
    ``t``: one-hot ``(N, C)`` or integer labels ``(N,)``. Returns a 0-D array of ``y``'s
    dtype. The ``1e-7`` (:data:`CROSS_ENTROPY_DELTA`) keeps ``log(0)`` finite and gives the
    book's printed numbers; from scores, :class:`~xbackprop.layers.SoftmaxWithLoss` is exact.
    """
    xp = namespace_of(y, t) if xp is None else xp
    y, t = _as_batch(y, t, xp)
    n, c = y.shape
    targets = checked_labels(t, n, c, who="cross_entropy_error", one_hot_dtype=y.dtype)
    return -xp.sum(targets * xp.log(y + CROSS_ENTROPY_DELTA)) / n


def mean_squared_error(y: Any, t: Any, *, xp: Any = None) -> Any:
    """The book's ``0.5 * sum((y - t)**2)``, averaged over the batch for ``(N, C)`` input.

    ``y`` and ``t`` of the same shape, ``(C,)`` for one sample (the book's example) or
    ``(N, C)``. Returns a 0-D array. (Some course libraries divide by ``N * C`` instead.)
    """
    xp = namespace_of(y, t) if xp is None else xp
    if tuple(y.shape) != tuple(t.shape):
        raise ValueError(f"mean_squared_error: y {tuple(y.shape)} and t {tuple(t.shape)} differ in shape")
    batch_size = y.shape[0] if y.ndim == 2 else 1
    return 0.5 * xp.sum((y - t) ** 2) / batch_size


def d_softmax_with_loss(d: Any, y: Any, *, xp: Any = None) -> Any:
    """Gradient of the mean softmax cross-entropy with respect to the scores: ``(y - d) / N``.

    The course's signature: ``d`` the labels (one-hot ``(N, C)`` or integer ``(N,)``),
    ``y`` the softmax probabilities ``(N, C)``. Equals ``SoftmaxWithLoss.backward()``
    after a forward pass on the same scores and labels.
    """
    xp = namespace_of(y, d) if xp is None else xp
    y, d = _as_batch(y, d, xp)
    n, c = y.shape
    return (y - checked_labels(d, n, c, who="d_softmax_with_loss", one_hot_dtype=y.dtype)) / n
