"""Numerical differentiation, the book's ``common/gradient.py``.

``numerical_gradient`` is the book's element-by-element central difference: a writable array is perturbed in
place and restored exactly, as the book does, and ``f`` also receives the perturbed array (copies where arrays
are immutable, as on JAX). ``numerical_gradient(f, x, batch=K)`` moves K elements per call of ``f`` on a stack
of copies. Gradient checks built on these are in :mod:`xbackprop.gradient_check`.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any

import array_api_extra as xpx
from array_api_compat import device, is_writeable_array

from .functions import namespace_of
from .hooks import advance

__all__ = ["CENTRAL_DIFFERENCE_STEP", "numerical_gradient", "central_differences", "stacked_differences",
           "stacked_central_differences"]


#: The book's step h of central differences, ``(f(x + h) - f(x - h)) / 2h``: accurate to about 1e-8 in float64,
#: and too small for float32, whose rounding of ``x + h`` then dominates.
CENTRAL_DIFFERENCE_STEP = 1e-4


def numerical_gradient(
    f: Callable[[Any], Any], x: Any, h: float = CENTRAL_DIFFERENCE_STEP, *, batch: int | None = None
) -> Any:
    """Gradient of the scalar function ``f`` at ``x`` by central differences, as the book computes it.

    For each element ``x[i]``, ``(f(x + h e_i) - f(x - h e_i)) / (2 h)``; ``f`` returns a
    0-D array or a number.

    ``batch=None`` is the book's loop, ``2 * x.size`` calls of ``f``. Where ``x`` is
    writable (NumPy, CuPy, PyTorch, array-api-strict) each element is moved in place
    and ``f`` receives ``x`` itself, so the book's ``lambda W: net.loss(x, t)``, which
    ignores its argument and reads the parameter through the net, works; every element
    is written back exactly, also when ``f`` raises. Where ``x`` is immutable (JAX) ``f``
    receives a perturbed copy, and must compute from it: a function whose value never
    moves gets a ``RuntimeWarning`` that says so.

    ``batch=K`` perturbs K elements per call: ``f`` receives a stack ``(K, *x.shape)``
    of copies, copy ``k`` with its own element moved by ``h``, and returns their K
    values ``(K,)`` — ``2 * ceil(x.size / K)`` calls (see
    :func:`stacked_differences`).

    Returns an array shaped and typed like ``x``.
    """
    xp = namespace_of(x)
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"numerical_gradient needs a real floating array, got {x.dtype}: h = {h} would be rounded away")
    if not (h > 0 and math.isfinite(h)):
        raise ValueError(f"the step h must be positive and finite, got {h}")
    resolution = float(xp.finfo(x.dtype).eps)
    if resolution >= h:
        raise TypeError(f"numerical_gradient: h = {h} is below {x.dtype}'s resolution ({resolution:.1e}), so x + h "
                        "rounds back to x and every difference would be 0: cast x to float64")
    if batch is not None:
        return stacked_differences(f, x, h, int(batch))
    in_place = is_writeable_array(x)
    gradient = central_differences(f, x, h)
    if not in_place and math.prod(x.shape) and not bool(xp.any(gradient != 0)):
        warnings.warn(
            "numerical_gradient: f's value did not move when any element of x was moved by h; x is immutable, "
            "so f receives perturbed copies and must compute from its argument (lambda W: net.loss(x, t, "
            "{**net.params, 'W1': W}), not lambda W: net.loss(x, t))", RuntimeWarning, stacklevel=2,
        )
    return gradient


def central_differences(f: Callable[[Any], Any], x: Any, h: float = CENTRAL_DIFFERENCE_STEP) -> Any:
    """The loop of :func:`numerical_gradient` without its checks and warning: for callers whose ``f``
    is known to compute from its argument (a net's own numerical gradient), where a gradient of zeros
    is a true answer."""
    xp = namespace_of(x)
    work = x if is_writeable_array(x) else xp.asarray(x, copy=True)
    untouched = xp.asarray(x, copy=True)
    differences = []
    coarse: set[str] = set()  # the dtypes of f's values coarser than x's
    for index in itertools.product(*(range(n) for n in x.shape)):
        original = xp.asarray(work[index], copy=True)  # a copy: a torch element is a view
        try:
            work = xpx.at(work, index).set(original + h, copy=None, xp=xp)
            f_plus = _value(f(work), xp, x.dtype, coarse)
            work = xpx.at(work, index).set(original - h, copy=None, xp=xp)
            f_minus = _value(f(work), xp, x.dtype, coarse)
        finally:
            work = xpx.at(work, index).set(original, copy=None, xp=xp)
        differences.append(f_plus - f_minus)
        advance()
    if not bool(xp.all((work == untouched) | (xp.isnan(work) & xp.isnan(untouched)))):
        if work is x:
            x[...] = untouched
        raise ValueError("numerical_gradient: f wrote into its argument, so every difference after that was taken "
                         "at another point; x is as it was. Let f compute from its argument without changing it")
    if coarse:
        warnings.warn(f"numerical_gradient: f returns {', '.join(sorted(coarse))} values for a float64 x: each "
                      "difference carries their rounding, far coarser than h; compute f in float64", RuntimeWarning,
                      stacklevel=3)
    if differences and not hasattr(differences[0], "shape"):  # f returned numbers (or another library's arrays)
        stacked = xp.asarray(differences, dtype=x.dtype, device=device(x))
    elif differences:  # in pieces: JAX compiles a stack of its operands' count, slowly for tens of thousands
        stacked = xp.concat([xp.stack(differences[i : i + STACKED]) for i in range(0, len(differences), STACKED)])
    else:
        stacked = xp.zeros((0,), dtype=x.dtype, device=device(x))
    return xp.astype(xp.reshape(stacked, x.shape), x.dtype) / (2 * h)


def _value(value: Any, xp: Any, dtype: Any, coarse: set[str]) -> Any:
    """``f``'s value: a 0-D array of ``xp`` as it is (no read back), a number or another library's 0-D array as
    a Python float (exact); anything else is a ``ValueError``. The dtype of a value computed in a coarser float
    than a float64 ``x`` is added to ``coarse``."""
    shape = getattr(value, "shape", ())
    if tuple(shape) != ():
        raise ValueError(f"numerical_gradient: f must return a scalar (a 0-D array or a number), not an array of "
                         f"shape {tuple(shape)}: sum it, or differentiate one element at a time")
    if not hasattr(value, "shape") or isinstance(value, (int, float)):
        return float(value)
    if dtype == xp.float64 and str(value.dtype).rsplit(".", 1)[-1] in ("float16", "bfloat16", "float32"):
        coarse.add(str(value.dtype))
    try:
        same = namespace_of(value) is xp
    except TypeError:
        same = False
    return value if same else float(value)


#: Differences stacked into one array at a time by :func:`central_differences`.
STACKED = 1024


def stacked_central_differences(
    values: Callable[[Any, float], Any], size: int, h: float, batch: int, *, like: Any
) -> Any:
    """Central differences for ``size`` elements, ``batch`` of them per evaluation, as a flat array.

    ``values(moved, step)`` returns, for each position in the integer array ``moved``
    ``(k,)``, the function's value with that one element moved by ``step``: ``(k,)``.
    The result has ``like``'s dtype and device.
    """
    if batch < 1:
        raise ValueError(f"batch must be a positive number of copies, got {batch}")
    xp = namespace_of(like)
    differences = []
    for start in range(0, size, batch):
        moved = xp.arange(start, min(start + batch, size), device=device(like))
        differences.append(values(moved, h) - values(moved, -h))
    stacked = xp.concat(differences) if differences else xp.zeros((0,), dtype=like.dtype, device=device(like))
    return xp.astype(stacked, like.dtype) / (2 * h)


def stacked_differences(f: Callable[[Any], Any], x: Any, h: float, batch: int) -> Any:
    """``numerical_gradient(f, x, batch=K)``: ``f`` receives a stack ``(K, *x.shape)`` of copies of ``x``,
    copy ``k`` with its own element moved by ``h``, and returns their K values ``(K,)``."""
    xp = namespace_of(x)
    size = math.prod(x.shape)
    flat = xp.reshape(x, (1, size))
    positions = xp.arange(size, device=device(x))

    def values(moved: Any, step: float) -> Any:
        """f at the copies of x whose element ``moved[k]`` is moved by ``step``."""
        shift = step * xp.astype(positions[None, :] == moved[:, None], x.dtype)  # the standard has no scatter
        copies = f(xp.reshape(flat + shift, (moved.shape[0], *x.shape)))
        if tuple(copies.shape) != (moved.shape[0],):
            raise ValueError(f"with batch={batch}, f must return one value per copy, shape ({moved.shape[0]},), "
                             f"got {tuple(copies.shape)}")
        return copies

    return xp.reshape(stacked_central_differences(values, size, h, batch, like=x), x.shape)
