"""Numerical differentiation and gradient checks.

``numerical_gradient`` is the book's element-by-element central difference, made
functional: ``f`` receives the perturbed array (so it works on immutable JAX
arrays) and the caller's array is never touched. ``gradient_check`` prints the
book's report; ``directional_check`` is the two-evaluation check (as in Chainer)
that scales to large networks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_extra as xpx
from array_api_compat import device

from ._namespace import namespace_of
from .backend import host_rng, require_dtype

__all__ = [
    "CENTRAL_DIFFERENCE_STEP",
    "numerical_gradient",
    "stacked_central_differences",
    "gradient_check",
    "GradientCheckResult",
    "max_relative_error",
    "directional_check",
    "DirectionalCheckResult",
]


#: The book's step h of central differences, ``(f(x + h) - f(x - h)) / 2h``: accurate to about 1e-8 in float64,
#: and too small for float32, whose rounding of ``x + h`` then dominates.
CENTRAL_DIFFERENCE_STEP = 1e-4


def numerical_gradient(
    f: Callable[[Any], Any], x: Any, h: float = CENTRAL_DIFFERENCE_STEP, *, batch: int | None = None
) -> Any:
    """Gradient of the scalar function ``f`` at ``x`` by central differences.

    For each element ``x[i]``, ``(f(x + h e_i) - f(x - h e_i)) / (2 h)``.

    ``batch=None`` is the book's loop: ``2 * x.size`` calls of ``f``, each with one
    perturbed copy of ``x``; ``f`` returns a 0-D array or a number. ``x`` itself is not
    modified (a private copy is perturbed, in place where the backend allows it).

    ``batch=K`` perturbs K elements per call: ``f`` receives a stack ``(K, *x.shape)``
    of copies, copy ``k`` with its own element moved by ``h``, and returns their K
    values ``(K,)`` — ``2 * ceil(x.size / K)`` calls. The stack is built by comparing
    element positions (the standard has no scatter), so memory grows as ``K * x.size``.

    Returns an array shaped and typed like ``x``.
    """
    xp = namespace_of(x)
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"numerical_gradient needs a real floating array, got {x.dtype}: h = {h} would be rounded away")
    if not h > 0:
        raise ValueError(f"the step h must be positive, got {h}")
    if batch is not None:
        return _stacked_differences(f, x, h, int(batch), xp)
    work = xp.asarray(x, copy=True)
    differences = []
    for index in itertools.product(*(range(n) for n in x.shape)):
        original = x[index]
        work = xpx.at(work, index).set(original + h, copy=None, xp=xp)
        f_plus = f(work)
        work = xpx.at(work, index).set(original - h, copy=None, xp=xp)
        f_minus = f(work)
        work = xpx.at(work, index).set(original, copy=None, xp=xp)
        differences.append(f_plus - f_minus)
    if differences and not hasattr(differences[0], "shape"):  # f returned Python numbers
        stacked = xp.asarray(differences, dtype=x.dtype, device=device(x))
    else:
        stacked = xp.stack(differences) if differences else xp.zeros((0,), dtype=x.dtype, device=device(x))
    return xp.astype(xp.reshape(stacked, x.shape), x.dtype) / (2 * h)


def _stacked_differences(f: Callable[[Any], Any], x: Any, h: float, batch: int, xp: Any) -> Any:
    """``numerical_gradient`` with ``batch`` perturbed copies of ``x`` per call of ``f``."""
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


@dataclass(frozen=True)
class GradientCheckResult:
    """Backprop against numerical gradients, per parameter.

    ``mean_abs_diff[key]`` is the book's figure, ``mean(|backprop - numerical|)``;
    ``max_rel_error`` is the worst ``max|backprop - numerical| / max|numerical|``
    over the parameters.
    """

    mean_abs_diff: dict[str, float]
    max_rel_error: float

    def __str__(self) -> str:
        lines = [f"{key}: {diff:.1e}" for key, diff in self.mean_abs_diff.items()]
        lines.append(f"max relative error: {self.max_rel_error:.1e}")
        return "\n".join(lines)


def _float64_copy(xp: Any, a: Any) -> Any:
    require_dtype(xp, xp.float64)  # JAX without x64 would hand back float32
    return xp.astype(a, xp.float64) if xp.isdtype(a.dtype, "real floating") else a


def max_relative_error(approx: dict[str, Any], reference: dict[str, Any]) -> float:
    """The worst ``max|approx - reference| / max|reference|`` over the keys (the absolute difference where
    ``reference`` is all zeros): how far two gradients of the same parameters are apart."""
    worst = 0.0
    for key, value in reference.items():
        xp = namespace_of(value)
        difference = float(xp.max(xp.abs(approx[key] - value)))
        scale = float(xp.max(xp.abs(value)))
        worst = max(worst, difference / scale if scale > 0 else difference)
    return worst


def gradient_check(net: Any, x: Any, t: Any, *, verbose: bool = True) -> GradientCheckResult:
    """The book's gradient check: backprop against :func:`numerical_gradient`, in float64.

    ``net`` needs ``params``, ``gradient(x, t, params)`` and
    ``numerical_gradient(x, t, params)`` (as :class:`~xbackprop.MultiLayerNet`).
    The parameters, inputs and one-hot labels are cast to float64 for the check;
    the net's own parameters are left as they are. Prints the report when
    ``verbose``.
    """
    xp = namespace_of(x, *net.params.values())
    params = {key: _float64_copy(xp, value) for key, value in net.params.items()}
    x, t = _float64_copy(xp, x), _float64_copy(xp, t)
    backprop = net.gradient(x, t, params)
    numerical = net.numerical_gradient(x, t, params)

    mean_abs_diff = {key: float(xp.mean(xp.abs(backprop[key] - numerical[key]))) for key in params}
    max_rel_error = max_relative_error(backprop, numerical)
    result = GradientCheckResult(mean_abs_diff, max_rel_error)
    if verbose:
        print(result)
    return result


@dataclass(frozen=True)
class DirectionalCheckResult:
    """Directional derivative of the loss along one random unit direction, two ways."""

    backprop: float
    numerical: float

    @property
    def rel_error(self) -> float:
        scale = max(abs(self.backprop), abs(self.numerical))
        return abs(self.backprop - self.numerical) / scale if scale > 0 else 0.0


def directional_check(
    net: Any, x: Any, t: Any, *, h: float = CENTRAL_DIFFERENCE_STEP, seed: int | None = 0
) -> DirectionalCheckResult:
    """Compare ``<gradient, d>`` with ``(L(p + h d) - L(p - h d)) / 2h`` for a random unit ``d``.

    Two loss evaluations and one backward pass, however many parameters the net
    has, all in float64. ``d`` is drawn on the host with NumPy's ``Generator(seed)``
    and spans every parameter.
    """
    if not h > 0:
        raise ValueError(f"the step h must be positive, got {h}")
    xp = namespace_of(x, *net.params.values())
    params = {key: _float64_copy(xp, value) for key, value in net.params.items()}
    x, t = _float64_copy(xp, x), _float64_copy(xp, t)

    rng = host_rng(seed)
    raw = {key: rng.standard_normal(tuple(value.shape)) for key, value in params.items()}
    norm = math.sqrt(sum(float((r * r).sum()) for r in raw.values()))
    direction = {
        key: xp.asarray(raw[key] / norm, dtype=xp.float64, device=device(params[key])) for key in params
    }

    grads = net.gradient(x, t, params)
    along = sum(float(xp.sum(grads[key] * direction[key])) for key in params)
    plus = {key: params[key] + h * direction[key] for key in params}
    minus = {key: params[key] - h * direction[key] for key in params}
    numerical = (float(net.loss(x, t, plus)) - float(net.loss(x, t, minus))) / (2 * h)
    return DirectionalCheckResult(along, numerical)
