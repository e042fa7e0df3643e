"""Gradient checks: the book's comparison of backprop with numerical differentiation, and more.

``gradient_check`` prints the book's report, and tells a true disagreement from a kink (a ReLU or a max
switching inside the step h) by looking again from one side; ``directional_check`` is the two-evaluation
check (as in Chainer) that scales to large networks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_extra as xpx
from array_api_compat import device, is_writeable_array

from .backend import host_rng, require_dtype
from .functions import namespace_of
from .gradient import CENTRAL_DIFFERENCE_STEP

__all__ = [
    "gradient_check",
    "GradientCheckResult",
    "Disagreement",
    "max_relative_error",
    "directional_check",
    "DirectionalCheckResult",
]


#: An element of a gradient check agrees when ``|backprop - numerical|`` is at most ``CHECK_RTOL`` times the
#: larger of the two plus ``CHECK_ATOL`` times the largest numerical value of its array: central differences
#: with h = 1e-4 in float64 are good to about 1e-8 relative where the function is smooth; a wrong backward
#: is off by its own size.
CHECK_RTOL = 1e-5
CHECK_ATOL = 1e-6
#: Kinks and disagreements a printed report lists one by one; the rest are counted.
SHOWN = 3
#: The smallest step a kink recheck tries before it falls back to a one-sided difference.
SMALLEST_STEP = 1e-9


@dataclass(frozen=True)
class Disagreement:
    """One element where backprop and the central difference disagree.

    ``kink`` says the steps ``x - h`` and ``x + h`` fell on different sides of a kink
    (a layer's ``mask``, such as ReLU's, differs between the two passes); ``rechecked``
    is then the numerical derivative from a step that stays on one side (``None`` when
    no kink was found), and ``resolved`` whether that one agrees with backprop.
    """

    key: str
    index: tuple[int, ...]
    backprop: float
    numerical: float
    kink: bool = False
    rechecked: float | None = None
    resolved: bool = False

    def __str__(self) -> str:
        where = f"{self.key}[{', '.join(map(str, self.index))}]"
        if self.kink:
            verdict = "agrees" if self.resolved else "still disagrees"
            return (f"{where} straddles a kink at h: numerical {self.numerical:.6g} there, {self.rechecked:.6g} "
                    f"with a step on one side, backprop {self.backprop:.6g} ({verdict})")
        return f"{where}: backprop {self.backprop:.6g}, numerical {self.numerical:.6g}"


@dataclass(frozen=True)
class GradientCheckResult:
    """Backprop against numerical gradients, per parameter.

    ``mean_abs_diff[key]`` is the book's figure, ``mean(|backprop - numerical|)``;
    ``max_rel_error`` is the worst ``max|backprop - numerical| / max|numerical|``
    over the parameters. ``kinks`` are the elements whose central difference straddled
    a kink and were checked again from one side; ``disagreements`` the elements that
    really disagree (a wrong backward). ``passed`` when there are none.
    """

    mean_abs_diff: dict[str, float]
    max_rel_error: float
    kinks: tuple[Disagreement, ...] = ()
    disagreements: tuple[Disagreement, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.disagreements

    def __str__(self) -> str:
        lines = [f"{key}: {diff:.1e}" for key, diff in self.mean_abs_diff.items()]
        lines.append(f"max relative error: {self.max_rel_error:.1e}")
        for label, found in (("kink", self.kinks), ("disagrees", self.disagreements)):
            lines += [f"{label}: {item}" for item in found[:SHOWN]]
            if len(found) > SHOWN:
                lines.append(f"{label}: ... and {len(found) - SHOWN} more")
        return "\n".join(lines)


def finite_scale(numerical: Any) -> float:
    """The largest finite ``|numerical|`` (0 for none): what the absolute tolerance is a fraction of."""
    xp = namespace_of(numerical)
    if not math.prod(numerical.shape):
        return 0.0
    return float(xp.max(xp.where(xp.isfinite(numerical), xp.abs(numerical), 0.0)))


def _suspects(backprop: Any, numerical: Any, scale: float) -> list[tuple[tuple[int, ...], float, float]]:
    """``(index, backprop, numerical)`` of the elements outside the check's tolerance, NaN and infinities
    included (a gradient that is not a number never agrees)."""
    xp = namespace_of(backprop, numerical)
    tolerance = CHECK_RTOL * xp.maximum(xp.abs(backprop), xp.abs(numerical)) + CHECK_ATOL * scale
    agrees = (xp.abs(backprop - numerical) <= tolerance) & xp.isfinite(backprop) & xp.isfinite(numerical)
    positions = xp.nonzero(~agrees)
    suspects = []
    for k in range(positions[0].shape[0]):
        index = tuple(int(axis[k]) for axis in positions)
        suspects.append((index, float(backprop[index]), float(numerical[index])))
    return suspects


def _agrees(backprop: float, numerical: float, scale: float) -> bool:
    return abs(backprop - numerical) <= CHECK_RTOL * max(abs(backprop), abs(numerical)) + CHECK_ATOL * scale


def one_sided_derivative(evaluate: Callable[[float], tuple[float, list[Any]]], value: float,
                         h: float = CENTRAL_DIFFERENCE_STEP) -> tuple[bool, float | None]:
    """Whether the central difference of ``evaluate`` at ``value`` straddles a kink, and if so a derivative
    from steps that do not.

    ``evaluate(v) -> (f(v), masks)`` returns the function's value and the boolean
    masks of the layers it ran. Masks that differ between ``v - h`` and ``v + h``
    mean a kink lies between them; the step is then divided by 10 until both sides
    give the same masks (a central difference again), down to :data:`SMALLEST_STEP`,
    and then the one side that keeps the masks of ``value`` itself gives a forward or
    backward difference. Returns ``(False, None)`` where there is no kink.
    """
    def same(a: list[Any], b: list[Any]) -> bool:
        return all(bool(namespace_of(p, q).all(p == q)) for p, q in zip(a, b))

    _, masks_plus = evaluate(value + h)
    _, masks_minus = evaluate(value - h)
    if same(masks_plus, masks_minus):
        return False, None
    step = h / 10
    while step >= SMALLEST_STEP:
        f_plus, masks_plus = evaluate(value + step)
        f_minus, masks_minus = evaluate(value - step)
        if same(masks_plus, masks_minus):
            return True, (f_plus - f_minus) / (2 * step)
        step /= 10
    f_here, masks_here = evaluate(value)
    step = SMALLEST_STEP * 10
    f_plus, masks_plus = evaluate(value + step)
    if same(masks_plus, masks_here):
        return True, (f_plus - f_here) / step
    f_minus, _ = evaluate(value - step)
    return True, (f_here - f_minus) / step


def layer_masks(layers: Any) -> list[Any]:
    """The boolean ``mask`` every layer that has one cached in its last pass (ReLU's ``x <= 0``, Dropout's
    kept units; each pass makes new ones): what tells two passes on either side of a kink apart."""
    return [layer.mask for layer in layers if getattr(layer, "mask", None) is not None]


def classify(key: str, backprop: Any, numerical: Any,
             evaluate_at: Callable[[tuple[int, ...]], Callable[[float], tuple[float, list[Any]]]],
             value_of: Callable[[tuple[int, ...]], float], scale: float, h: float = CENTRAL_DIFFERENCE_STEP,
             ) -> tuple[list[Disagreement], list[Disagreement]]:
    """The elements of one array outside the tolerance, split into kinks (checked again from one side) and
    real disagreements (a kink whose recheck still disagrees counts as one). ``scale`` is the largest
    numerical derivative of the whole check, which the absolute tolerance is a fraction of."""
    kinks, disagreements = [], []
    for index, bp, num in _suspects(backprop, numerical, scale):
        if not (math.isfinite(bp) and math.isfinite(num)):  # no step size makes a NaN agree
            disagreements.append(Disagreement(key, index, bp, num))
            continue
        kink, rechecked = one_sided_derivative(evaluate_at(index), value_of(index), h)
        resolved = kink and _agrees(bp, rechecked, scale)
        found = Disagreement(key, index, bp, num, kink, rechecked, resolved)
        (kinks if kink else disagreements).append(found)
        if kink and not resolved:
            disagreements.append(found)
    return kinks, disagreements


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

    ``net`` is a :class:`~xbackprop.LayerNet` (any of its layers). The parameters,
    buffers, inputs and one-hot labels are cast to float64 for the check; the net's own
    arrays are left as they are, and every pass starts from the same buffers (Dropout
    draws one mask). Elements that disagree by more than the tolerance
    (:data:`CHECK_RTOL`, :data:`CHECK_ATOL`) are looked at again: where the two passes
    of the central difference fall on both sides of a kink (ReLU's at 0: a layer's mask
    differs between them), the derivative is taken from a step on one side and reported
    under ``kinks``; the rest are ``disagreements``, a wrong backward. Prints the book's
    report, then any kinks and disagreements, when ``verbose``. The numerical gradient is the book's
    element-by-element loop where arrays are writable, and K perturbed copies per pass on immutable ones (JAX),
    which would otherwise be copied for every element.
    """
    xp = namespace_of(x, *net.params.values())
    params = {key: _float64_copy(xp, value) for key, value in net.params.items()}
    buffers = {key: _float64_copy(xp, value) for key, value in net.buffers.items()}
    x, t = _float64_copy(xp, x), _float64_copy(xp, t)
    backprop = net.loss_and_gradient(x, t, params, buffers=buffers)[1]
    # Immutable arrays (JAX) would be copied once per element: their elements are moved K at a time in one
    # pass instead, the same central differences (see LayerNet.numerical_gradient's batch).
    batch = None if is_writeable_array(next(iter(params.values()))) else "auto"
    numerical = net.numerical_gradient(x, t, params, buffers=buffers, batch=batch)

    def evaluate_at(key: str) -> Callable[[tuple[int, ...]], Callable[[float], tuple[float, list[Any]]]]:
        def at(index: tuple[int, ...]) -> Callable[[float], tuple[float, list[Any]]]:
            def evaluate(value: float) -> tuple[float, list[Any]]:
                moved = xpx.at(params[key], index).set(value, copy=True, xp=xp)
                loss = net.loss(x, t, {**params, key: moved}, train_flg=True, buffers=buffers, check_labels=False)
                return float(loss), layer_masks(net.layers.values())
            return evaluate
        return at

    kinks, disagreements = [], []
    scale = max(finite_scale(value) for value in numerical.values())
    for key in params:
        found = classify(key, backprop[key], numerical[key], evaluate_at(key),
                         lambda index, key=key: float(params[key][index]), scale)
        kinks += found[0]
        disagreements += found[1]
    mean_abs_diff = {key: float(xp.mean(xp.abs(backprop[key] - numerical[key]))) for key in params}
    result = GradientCheckResult(mean_abs_diff, max_relative_error(backprop, numerical), tuple(kinks),
                                 tuple(disagreements))
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
    has, all in float64, of the training loss (``train_flg=True``) from the net's
    buffers, which are left as they are. ``d`` is drawn on the host with NumPy's
    ``Generator(seed)`` and spans every parameter.
    """
    if not (h > 0 and math.isfinite(h)):
        raise ValueError(f"the step h must be positive and finite, got {h}")
    xp = namespace_of(x, *net.params.values())
    params = {key: _float64_copy(xp, value) for key, value in net.params.items()}
    x, t = _float64_copy(xp, x), _float64_copy(xp, t)

    rng = host_rng(seed)
    raw = {key: rng.standard_normal(tuple(value.shape)) for key, value in params.items()}
    norm = math.sqrt(sum(float((r * r).sum()) for r in raw.values()))
    direction = {
        key: xp.asarray(raw[key] / norm, dtype=xp.float64, device=device(params[key])) for key in params
    }

    buffers = {key: _float64_copy(xp, value) for key, value in net.buffers.items()}  # one state for all passes
    grads = net.loss_and_gradient(x, t, params, buffers=buffers)[1]
    along = sum(float(xp.sum(grads[key] * direction[key])) for key in params)
    plus = {key: params[key] + h * direction[key] for key in params}
    minus = {key: params[key] - h * direction[key] for key in params}
    losses = [float(net.loss(x, t, moved, train_flg=True, buffers=buffers)) for moved in (plus, minus)]
    return DirectionalCheckResult(along, (losses[0] - losses[1]) / (2 * h))
