"""``check_layer``: a layer's ``backward`` against central differences, for the book's layer protocol.

A layer is any object with ``forward(*inputs)`` and ``backward(dout)`` (and, for
parameters, a ``params`` dict and the ``grads`` dict its ``backward`` fills). The check
takes the scalar ``L = sum(forward(*inputs) * dout)`` for a random ``dout``, whose
gradient is exactly what ``backward(dout)`` must return, and differentiates it
numerically in float64 with respect to every floating input and every parameter.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import array_api_extra as xpx
from array_api_compat import device

from .backend import host_rng, require_dtype, to_numpy
from .functions import namespace_of
from .gradient import CENTRAL_DIFFERENCE_STEP, central_differences
from .gradient_check import Disagreement, classify, finite_scale, layer_masks

__all__ = ["check_layer", "LayerCheckReport", "CheckedArray"]


@dataclass(frozen=True)
class CheckedArray:
    """One input or parameter: ``name`` (``"x"``, ``"input 1"``, ``"params['W']"``), the largest
    ``|backprop - numerical|``, the elements across a kink and those that disagree."""

    name: str
    max_abs_error: float
    kinks: tuple[Disagreement, ...] = ()
    disagreements: tuple[Disagreement, ...] = ()
    missing: str | None = None  # why no gradient could be compared (backward returned None, ...)

    @property
    def passed(self) -> bool:
        return not self.disagreements and self.missing is None


@dataclass(frozen=True)
class LayerCheckReport:
    """What :func:`check_layer` found; ``passed`` when every array agrees and nothing was written into."""

    layer: str
    dtype: str
    arrays: tuple[CheckedArray, ...]
    mutations: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return not self.mutations and all(array.passed for array in self.arrays)

    def __str__(self) -> str:
        lines = [f"check_layer({self.layer}) in {self.dtype}: {'PASS' if self.passed else 'FAIL'}"]
        for array in self.arrays:
            if array.missing:
                lines.append(f"  {array.name}: FAIL, {array.missing}")
                continue
            verdict = "ok" if array.passed else "WRONG"
            extra = f", {len(array.kinks)} element(s) across a kink checked from one side" if array.kinks else ""
            lines.append(f"  {array.name}: {verdict}, max |backprop - numerical| {array.max_abs_error:.1e}{extra}")
            if array.disagreements:
                first = array.disagreements[0]
                lines.append(f"    first disagreement: {first} ({len(array.disagreements)} element(s) in all)")
        lines += [f"  FAIL: {mutation}" for mutation in self.mutations]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def check_layer(layer: Any, *inputs: Any, seed: int = 0, h: float = CENTRAL_DIFFERENCE_STEP,
                **forward_kwargs: Any) -> LayerCheckReport:
    """Compare ``layer.backward`` with central differences for every floating input and every parameter.

    ``inputs`` are the arrays (or numbers) ``forward`` takes, in order; integer arrays
    (labels) are passed as they are and not differentiated. ``forward_kwargs`` go to
    every ``forward`` call (``train_flg=True``, say). The check runs in float64 on the
    inputs' own namespace and device: floating inputs and the layer's parameters are
    cast for it and the layer's own arrays are put back afterwards; its buffers (a
    Dropout's mask count) are reset before each pass, so every pass draws the same mask.

    The report names the first element that disagrees, and by how much. Elements
    whose two central-difference passes fall on both sides of a kink (the layer's
    ``mask`` differs between them) are checked again with a step on one side and
    reported apart; and it fails when ``forward`` writes into an input or
    ``backward`` into ``dout``. ``print(report)`` shows it; ``report.passed`` is the verdict.
    """
    missing = [name for name in ("forward", "backward") if not callable(getattr(layer, name, None))]
    if missing:
        raise TypeError(f"check_layer: {type(layer).__name__} has no {' or '.join(missing)} method; a layer has "
                        "forward(x) and backward(dout)")
    arrays = [value for value in inputs if hasattr(value, "shape")]
    if not arrays:
        raise TypeError("check_layer needs at least one array input")
    xp = namespace_of(*arrays)
    require_dtype(xp, xp.float64)
    float_inputs = [_is_float(xp, value) for value in inputs]
    inputs = tuple(xp.astype(v, xp.float64) if is_float else v for v, is_float in zip(inputs, float_inputs))
    params = getattr(layer, "params", None) or {}
    own_params = dict(params)
    own_buffers = dict(getattr(layer, "buffers", None) or {})
    buffers = {key: xp.astype(v, xp.float64) if _is_float(xp, v) else v for key, v in own_buffers.items()}
    notes = []
    if any(_is_float(xp, v) and v.dtype != xp.float64 for v in (*arrays, *own_params.values())):
        notes.append("checked in float64: in float32, central differences with h = 1e-4 are good to about 1e-3, "
                     "so a float32 check would show rounding, not a wrong backward")
    try:
        for name, value in own_params.items():
            params[name] = xp.astype(value, xp.float64)
        return _check(layer, xp, inputs, float_inputs, params, buffers, seed, h, forward_kwargs, notes)
    finally:
        params.update(own_params)
        if hasattr(layer, "buffers"):
            layer.buffers.clear()
            layer.buffers.update(own_buffers)


def _check(layer: Any, xp: Any, inputs: tuple[Any, ...], float_inputs: list[bool], params: dict[str, Any],
           buffers: dict[str, Any], seed: int, h: float, forward_kwargs: dict[str, Any],
           notes: list[str]) -> LayerCheckReport:
    names = _input_names(layer, len(inputs))

    def forward(*args: Any) -> Any:
        if hasattr(layer, "buffers"):  # every pass from the same state: a Dropout draws the same mask
            layer.buffers.clear()
            layer.buffers.update(buffers)
        return layer.forward(*args, **forward_kwargs)

    before = [to_numpy(v).copy() if hasattr(v, "shape") else None for v in inputs]
    out = forward(*inputs)
    mutations = [f"forward wrote into its input {names[i]}" for i, v in enumerate(inputs)
                 if before[i] is not None and not _same(to_numpy(v), before[i])]
    rng = host_rng(seed)
    dout = xp.asarray(rng.standard_normal(tuple(out.shape)), dtype=xp.float64, device=device(out))
    dout_before = to_numpy(dout).copy()
    if hasattr(layer, "grads"):
        layer.grads.clear()
    returned = layer.backward(dout)
    if not _same(to_numpy(dout), dout_before):
        mutations.append("backward wrote into dout")
    returned = returned if isinstance(returned, tuple) else (returned,)
    backprop_grads = dict(getattr(layer, "grads", None) or {})

    def loss_with(position: int | None, name: str | None) -> Callable[[Any], Any]:
        def loss(value: Any) -> Any:
            args = list(inputs)
            if position is not None:
                args[position] = value
            else:
                layer.params[name] = value
            try:
                return xp.sum(forward(*args) * dout)
            finally:
                if name is not None:
                    layer.params[name] = params[name]
        return loss

    targets = [(names[i], inputs[i], returned[i] if i < len(returned) else None, loss_with(i, None))
               for i in range(len(inputs)) if float_inputs[i]]
    targets += [(f"params[{name!r}]", value, backprop_grads.get(name), loss_with(None, name))
                for name, value in params.items()]
    checked = _compared(layer, xp, targets, h)
    return LayerCheckReport(type(layer).__name__, "float64", tuple(checked), tuple(mutations), tuple(notes))


def _compared(layer: Any, xp: Any, targets: list[tuple[str, Any, Any, Callable[[Any], Any]]],
              h: float) -> list[CheckedArray]:
    """Each ``(label, value, backprop gradient, loss of value)`` against central differences, kinks told apart."""
    numericals = {label: central_differences(loss, value, h) for label, value, _, loss in targets}
    scale = max((finite_scale(n) for n in numericals.values()), default=0.0)
    checked = []
    for label, value, grad, loss in targets:
        numerical = numericals[label]
        missing = _missing(grad, value)
        if missing:
            checked.append(CheckedArray(label, float("nan"), missing=missing))
            continue

        def evaluate_at(index: tuple[int, ...], value: Any = value, loss: Callable[[Any], Any] = loss) -> Any:
            def evaluate(moved: float) -> tuple[float, list[Any]]:
                result = float(loss(xpx.at(value, index).set(moved, copy=True, xp=xp)))
                return result, layer_masks([layer])
            return evaluate

        kinks, wrong = classify(label, grad, numerical, evaluate_at,
                                lambda index, value=value: float(value[index]), scale, h)
        error = float(xp.max(xp.abs(grad - numerical))) if numerical.ndim == 0 or numerical.shape[0] else 0.0
        checked.append(CheckedArray(label, error, tuple(kinks), tuple(wrong)))
    return checked


def _is_float(xp: Any, value: Any) -> bool:
    return hasattr(value, "dtype") and xp.isdtype(value.dtype, "real floating")


def _same(a: Any, b: Any) -> bool:
    return a.shape == b.shape and bool((a == b).all() | ((a != a) & (b != b)).all())


def _missing(grad: Any, value: Any) -> str | None:
    if grad is None:
        return "backward gave no gradient for it"
    if tuple(grad.shape) != tuple(value.shape):
        return f"backward's gradient has shape {tuple(grad.shape)}, the array {tuple(value.shape)}"
    return None


def _input_names(layer: Any, count: int) -> list[str]:
    """The names of ``forward``'s parameters (``x``, ``y``, ``t``), else ``input 0``, ``input 1``, ..."""
    try:
        names = [p.name for p in inspect.signature(layer.forward).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        names = []
    return [names[i] if i < len(names) else f"input {i}" for i in range(count)]
