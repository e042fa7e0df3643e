"""The batched numerical gradient: central differences for K perturbed elements per forward pass.

Still two losses per parameter element, as the book's loop, but K of them come from
one pass over a stack of K copies. For a net, the layers before the perturbed
Affine run once; that Affine's output is moved for each copy (it is linear in ``W``
and ``b``: ``x @ (W + h e_dm) + b`` is its output plus ``h x[:, d]`` in column ``m``);
the layers after it run on a ``(K, N, M)`` stack, which matrix products and
elementwise functions take as they come, and end in K losses. The layers
themselves stay the book's: this module computes the stacked pass with the
functions they are made of.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from array_api_compat import device

from .functions import log_softmax, namespace_of, one_hot, relu, sigmoid
from .gradient import central_differences, stacked_central_differences
from .layers import Affine, Relu, Sigmoid, SoftmaxWithLoss

__all__ = ["DEFAULT_MEMORY_BUDGET", "stacked_numerical_gradient", "stack_size"]

#: Bytes one stacked forward pass may use by default: small enough to stay in a CPU's cache, where
#: the many small passes run fastest; on a GPU a larger budget pays.
DEFAULT_MEMORY_BUDGET = 8 << 20

#: Layers after a perturbed Affine that a stack of copies can pass through, as functions of the scores.
_ELEMENTWISE = {Relu: relu, Sigmoid: sigmoid}


def stacked_numerical_gradient(
    net: Any, x: Any, t: Any, params: Mapping[str, Any], *, batch: int | str,
    memory_budget: int = DEFAULT_MEMORY_BUDGET, buffers: Mapping[str, Any] | None = None, h: float = 1e-4,
) -> dict[str, Any]:
    """``net.numerical_gradient(x, t, params, batch=K)``: the Affine parameters K elements per pass.

    ``batch="auto"`` picks K from ``memory_budget`` bytes (see :func:`stack_size`).
    A stack passes through Affine, Relu and Sigmoid layers and ends in SoftmaxWithLoss;
    the parameters of an Affine followed by any other layer (BatchNormalization,
    Dropout, a user's), and those of other layers, are differentiated by the book's
    loop instead: the same numbers, at the loop's speed.
    """
    if batch != "auto" and (isinstance(batch, str) or int(batch) < 1):
        raise ValueError(f"batch must be a positive number of copies or 'auto', got {batch!r}")
    net.loss(x, t, params, train_flg=True, buffers=buffers)  # checks the labels and shapes once
    names = list(net.layers)
    grads = {}
    for layer_name, layer, name, key in net.param_slots:
        value = params[key]
        position = names.index(layer_name)
        if type(layer) is not Affine or not _stackable(net, names[position + 1 :]):
            grads[key] = central_differences(
                lambda p, key=key: net.loss(x, t, {**params, key: p}, train_flg=True, check_labels=False,
                                            buffers=buffers), value, h)
            continue
        k = stack_size(net, position, x.shape[0], memory_budget) if batch == "auto" else int(batch)
        moved_losses = _moved_losses(net, x, t, params, buffers, position, perturb_weight=name == "W")
        flat = stacked_central_differences(moved_losses, math.prod(value.shape), h, k, like=value)
        grads[key] = namespace_of(value).reshape(flat, value.shape)
    return {key: grads[key] for key in params}


def stack_size(net: Any, position: int, batch_rows: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """How many perturbed copies of the Affine at ``position`` in ``net.layers`` one pass carries in
    ``memory_budget`` bytes.

    Per copy: the activations of every Affine after that one for ``batch_rows`` rows,
    three times (values, masks or exponentials, and their differences).
    """
    layers = list(net.layers.values())
    widths = [layer.W.shape[1] for layer in layers[position:] if isinstance(layer, Affine)]
    itemsize = 8 if net.dtype == net.xp.float64 else 4
    per_copy = itemsize * (batch_rows + 3 * batch_rows * sum(widths))
    return max(1, memory_budget // per_copy)


def _stackable(net: Any, after: list[str]) -> bool:
    """Whether a stack of copies can run through the layers ``after`` and the last layer."""
    return type(net.last_layer) is SoftmaxWithLoss and all(
        type(net.layers[name]) is Affine or type(net.layers[name]) in _ELEMENTWISE for name in after)


def _moved_losses(
    net: Any, x: Any, t: Any, params: Mapping[str, Any], buffers: Any, position: int, *, perturb_weight: bool
) -> Callable[[Any, float], Any]:
    """``losses(moved, step)``: the loss with element ``moved[k]`` of the W (or b) of the Affine at
    ``position`` moved by ``step``, for each k, as ``(k,)``, up to a constant that central differences
    cancel (the weight decay of everything not moved); everything before that Affine is computed once."""
    names = list(net.layers)
    affine = net.layers[names[position]]
    inputs = net.forward_until(names[position], x, params, train_flg=True, buffers=buffers)
    xp = namespace_of(inputs)
    if inputs.ndim != 2:  # images: flattened as the Affine would
        inputs = xp.reshape(inputs, (inputs.shape[0], -1))
    weight, bias = affine.W, affine.b
    product = inputs @ weight  # (N, M), before the bias: the loop adds a perturbed b to the same
    width = product.shape[-1]
    classes = xp.arange(width, device=device(product))
    after = [net.layers[name] for name in names[position + 1 :]]
    flat_w = xp.reshape(weight, (-1,))
    n = x.shape[0]
    classes_out = [layer.W.shape[1] for layer in (affine, *after) if isinstance(layer, Affine)][-1]
    targets = xp.astype(t, product.dtype) if t.ndim == 2 else one_hot(t, classes_out, dtype=product.dtype)

    def losses(moved: Any, step: float) -> Any:
        columns = moved % width if perturb_weight else moved
        hot = xp.astype(classes[None, :] == columns[:, None], product.dtype)  # (k, M)
        if perturb_weight:  # x @ (W + step e_dm) = x @ W + step * x[:, d] in column m
            rows = xp.permute_dims(xp.take(inputs, moved // width, axis=1), (1, 0))  # (k, N)
            scores = (product + step * rows[:, :, None] * hot[:, None, :]) + bias
        else:  # as the loop computes it: x @ W + (b + step e_m)
            scores = product + (bias + step * hot)[:, None, :]
        for layer in after:  # (k, N, M) stacks: matrix products and elementwise functions take them as they are
            scores = scores @ layer.W + layer.b if isinstance(layer, Affine) else _ELEMENTWISE[type(layer)](scores)
        loss = -xp.sum(targets * log_softmax(scores), axis=(-2, -1)) / n
        # The weight decay of the unmoved parameters is the same in every copy and cancels in the
        # differences; leaving it out keeps its rounding out of them too. What moves with one weight:
        if net.weight_decay_lambda and perturb_weight:  # sum((w + step)**2) - sum(w**2), per copy
            loss = loss + net.weight_decay_lambda * (step * xp.take(flat_w, moved) + 0.5 * step**2)
        return loss

    return losses
