"""Networks as the book builds them: a params dict, ordered layers and a last layer.

``LayerNet`` runs any ordered list of the book's layers; ``MultiLayerNet`` builds the
fully connected one (Affine -> activation ... -> Affine -> SoftmaxWithLoss) and
``TwoLayerNet`` is chapter 5's special case.

Parameters are looked up in ``params`` (or in a ``params=`` mapping passed to a
method) at every forward pass, so both ``net.params["W1"] -= lr * g`` on mutable
arrays and ``net.params["W1"] = new_array`` on any backend (JAX included) take
effect at once.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from array_api_compat import device as device_of

from ._namespace import namespace_of
from .backend import get_namespace, host_rng, resolve_device, resolve_dtype
from .gradient import CENTRAL_DIFFERENCE_STEP, numerical_gradient, stacked_central_differences
from .layers import Affine, Relu, Sigmoid, SoftmaxWithLoss

__all__ = ["LayerNet", "MultiLayerNet", "TwoLayerNet", "ACTIVATIONS", "NAMED_INITS", "parameter_count"]

#: Bytes one stacked forward pass of the batched numerical gradient may use by default: small enough
#: to stay in a CPU's cache, where the many small passes run fastest; on a GPU a larger budget pays.
DEFAULT_MEMORY_BUDGET = 8 << 20
#: Hidden-layer activations of :class:`MultiLayerNet`, by name.
ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid}
#: The book's named weight scales, ``std = sqrt(k / fan_in)``: He for ReLU, Xavier for sigmoid.
NAMED_INITS = {"he": 2.0, "relu": 2.0, "xavier": 1.0, "sigmoid": 1.0}


class LayerNet:
    """A network as an ordered list of the book's layers and a last layer.

    ``layers`` is a mapping of names to layers (the book's ``OrderedDict``) or a
    sequence, named ``Affine1``, ``Relu1``, ``Affine2``, ... in order. Every
    :class:`~xbackprop.layers.Affine` contributes ``W{i}``/``b{i}`` to ``params``; a
    ``params`` dict may be passed instead, whose arrays are the Affine layers' own
    ``W`` and ``b`` (matched by identity, so any keys work). ``last_layer`` defaults
    to :class:`~xbackprop.layers.SoftmaxWithLoss`. Any layer with ``forward(x)`` and
    ``backward(dout)`` may sit between the Affines (a Relu after the last one too).

    Parameters are looked up in ``params`` (or in a ``params=`` mapping passed to a
    method) at every forward pass.
    """

    weight_decay_lambda = 0.0
    activation: str | None = None

    def __init__(
        self,
        layers: Mapping[str, Any] | Sequence[Any],
        last_layer: Any = None,
        *,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.layers: OrderedDict[str, Any] = OrderedDict(
            layers.items() if isinstance(layers, Mapping) else _book_names(layers)
        )
        self.last_layer = SoftmaxWithLoss() if last_layer is None else last_layer
        affines = [layer for layer in self.layers.values() if isinstance(layer, Affine)]
        if not affines:
            raise ValueError("LayerNet: the layers hold no Affine, so the network has no parameters")
        if params is None:
            params = {}
            for i, affine in enumerate(affines, start=1):
                params[f"W{i}"], params[f"b{i}"] = affine.W, affine.b
        self.params = params
        # (layer, weight key, bias key) of every Affine, looked up at each forward and backward
        self._affine_slots = [(affine, _key_of(params, affine.W, "W"), _key_of(params, affine.b, "b"))
                              for affine in affines]
        first = affines[0].W
        self.xp = namespace_of(first)
        self.device = device_of(first)
        self.dtype = first.dtype
        self.sizes = [int(first.shape[0]), *(int(affine.W.shape[1]) for affine in affines)]

    @property
    def lastLayer(self) -> Any:  # the book's spelling, for its readers
        return self.last_layer

    def _bind(self, params: Mapping[str, Any] | None) -> None:
        """Point every Affine at the current arrays in ``params`` (default ``self.params``)."""
        params = self.params if params is None else params
        for layer, w_key, b_key in self._affine_slots:
            layer.W = params[w_key]
            layer.b = params[b_key]

    def predict(self, x: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Scores ``(N, C)`` before softmax for inputs ``x`` ``(N, D)`` (or ``(N, ...)``)."""
        self._bind(params)
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(
        self, x: Any, t: Any, params: Mapping[str, Any] | None = None, *, check_labels: bool = True
    ) -> Any:
        """Mean cross-entropy (plus weight decay) as a 0-D array; ``t`` one-hot ``(N, C)`` or labels ``(N,)``.

        ``check_labels=False`` skips the last layer's label check (a device read-back),
        for callers that validated their labels once.
        """
        y = self.predict(x, params)
        loss = self.last_layer.forward(y, t, check_labels=check_labels)
        if self.weight_decay_lambda:
            xp = namespace_of(y)
            params = self.params if params is None else params
            for _, w_key, _ in self._affine_slots:  # per copy when a W is stacked (K, D, M)
                loss = loss + 0.5 * self.weight_decay_lambda * xp.sum(params[w_key] ** 2, axis=(-2, -1))
        return loss

    def accuracy(
        self, x: Any, t: Any, params: Mapping[str, Any] | None = None, *, batch_size: int | None = None
    ) -> float:
        """Fraction of rows whose highest score is the true class, as a Python float.

        ``t`` is one-hot ``(N, C)`` or labels ``(N,)``. ``batch_size`` bounds the rows
        scored at once (the book's ``accuracy(x, t, batch_size=100)``).
        """
        if x.shape[0] == 0:
            raise ValueError("accuracy: no rows to score")
        return float(self.count_correct(x, t, params, batch_size=batch_size)) / x.shape[0]

    def count_correct(
        self, x: Any, t: Any, params: Mapping[str, Any] | None = None, *, batch_size: int | None = None
    ) -> Any:
        """How many rows' highest score is the true class, as a 0-D integer array left on the device.

        Scores at most ``batch_size`` rows at a time; nothing is read back, so a caller
        can gather several counts and read them in one go.
        """
        xp = namespace_of(x)
        if t.ndim != 1:
            t = xp.argmax(t, axis=1)
        n = x.shape[0]
        step = max(n, 1) if batch_size is None else max(int(batch_size), 1)
        correct = xp.zeros((), dtype=xp.int64, device=device_of(x))
        for start in range(0, n, step):
            stop = min(start + step, n)
            predicted = xp.argmax(self.predict(x[start:stop, ...], params), axis=1)
            hits = predicted == xp.astype(t[start:stop], predicted.dtype)
            correct = correct + xp.sum(xp.astype(hits, xp.int64))
        return correct

    def numerical_gradient(
        self, x: Any, t: Any, params: Mapping[str, Any] | None = None, *, batch: int | str | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> dict[str, Any]:
        """Gradients of :meth:`loss` by central differences (the book's ``h = 1e-4``): 2 losses per parameter element.

        ``batch=None`` is the book's method: one perturbed element, one whole forward
        pass. ``batch=K`` evaluates K perturbed copies per forward pass: the layers
        before the perturbed Affine run once, its output is moved for each copy (an
        Affine is linear in ``W`` and ``b``: ``x @ (W + h e_dm) + b`` is its output plus
        ``h x[:, d]`` in column ``m``), and the layers after it run on a stack of K
        copies (leading axes ride along), ending in K losses. ``batch="auto"`` picks
        K from ``memory_budget`` bytes (see :meth:`stack_size`).
        """
        params = dict(self.params if params is None else params)
        if batch is None:
            return {key: numerical_gradient(lambda p, key=key: self.loss(x, t, {**params, key: p}), value)
                    for key, value in params.items()}
        grads = {}
        for slot, (_, w_key, b_key) in enumerate(self._affine_slots):
            for key in (w_key, b_key):
                value = params[key]
                k = self.stack_size(slot, x.shape[0], memory_budget) if batch == "auto" else int(batch)
                moved_losses = self._moved_losses(x, t, params, slot, perturb_weight=key == w_key)
                size, step = math.prod(value.shape), CENTRAL_DIFFERENCE_STEP
                flat = stacked_central_differences(moved_losses, size, step, k, like=value)
                grads[key] = namespace_of(value).reshape(flat, value.shape)
        return {key: grads[key] for key in params}

    def stack_size(self, slot: int, batch_rows: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
        """How many perturbed copies of the ``slot``-th Affine's parameters one pass carries in ``memory_budget``.

        Per copy: the activations of every layer after that Affine for ``batch_rows``
        rows, three times (values, masks or exponentials, and their differences).
        """
        itemsize = 8 if self.dtype == self.xp.float64 else 4
        per_copy = itemsize * (batch_rows + 3 * batch_rows * sum(self.sizes[slot + 1 :]))
        return max(1, memory_budget // per_copy)

    def _moved_losses(
        self, x: Any, t: Any, params: dict[str, Any], slot: int, *, perturb_weight: bool
    ) -> Callable[[Any, float], Any]:
        """``losses(moved, step)``: the loss with element ``moved[k]`` of the ``slot``-th Affine's W (or b)
        moved by ``step``, for each k, as ``(k,)``, up to a constant that central differences cancel (the
        weight decay of everything not moved); everything before that Affine is computed once."""
        affine, w_key, b_key = self._affine_slots[slot]
        names = list(self.layers)
        position = names.index(next(name for name in names if self.layers[name] is affine))
        self._bind(params)
        inputs = x
        for name in names[:position]:
            inputs = self.layers[name].forward(inputs)
        xp = namespace_of(inputs)
        if inputs.shape[-1] != affine.W.shape[0]:  # images: flattened as the Affine would
            inputs = xp.reshape(inputs, (inputs.shape[0], -1))
        product = inputs @ params[w_key]  # (N, M), before the bias: the loop adds a perturbed b to the same
        width = product.shape[-1]
        classes = xp.arange(width, device=device_of(product))
        after = [self.layers[name] for name in names[position + 1 :]]
        flat_w = xp.reshape(params[w_key], (-1,))

        def losses(moved: Any, step: float) -> Any:
            columns = moved % width if perturb_weight else moved
            one_hot = xp.astype(classes[None, :] == columns[:, None], product.dtype)  # (k, M)
            if perturb_weight:  # x @ (W + step e_dm) = x @ W + step * x[:, d] in column m
                rows = xp.permute_dims(xp.take(inputs, moved // width, axis=1), (1, 0))  # (k, N)
                scores = (product + step * rows[:, :, None] * one_hot[:, None, :]) + params[b_key]
            else:  # as the loop computes it: x @ W + (b + step e_m)
                scores = product + (params[b_key] + step * one_hot)[:, None, :]
            for layer in after:
                scores = layer.forward(scores)
            # The weight decay of the unmoved parameters is the same in every copy and cancels in the
            # differences; leaving it out keeps its rounding out of them too. What moves with one weight:
            loss = self.last_layer.forward(scores, t)
            if self.weight_decay_lambda and perturb_weight:  # sum((w + step)**2) - sum(w**2), per copy
                loss = loss + self.weight_decay_lambda * (step * xp.take(flat_w, moved) + 0.5 * step**2)
            return loss

        return losses

    def loss_and_gradient(
        self, x: Any, t: Any, params: Mapping[str, Any] | None = None, *, check_labels: bool = True
    ) -> tuple[Any, dict[str, Any]]:
        """The loss (0-D array) and its gradients by backpropagation, shaped like ``params``, in one pass.

        A pure function of its arguments as far as callers see (the layers cache this
        pass's values for their backward), so a backend that compiles whole functions
        can trace it.
        """
        loss = self.loss(x, t, params, check_labels=check_labels)

        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)

        params = self.params if params is None else params
        grads = {}
        for affine, w_key, b_key in self._affine_slots:
            grads[w_key] = affine.dW
            if self.weight_decay_lambda:
                grads[w_key] = grads[w_key] + self.weight_decay_lambda * params[w_key]
            grads[b_key] = affine.db
        return loss, grads

    def gradient(self, x: Any, t: Any, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The book's ``gradient``: gradients of :meth:`loss` by backpropagation, shaped like ``params``."""
        return self.loss_and_gradient(x, t, params)[1]


class MultiLayerNet(LayerNet):
    """Fully connected network ``input -> hidden_size_list... -> output`` with softmax loss.

    Parameters
    ----------
    input_size, output_size : int
        Sizes D of the input rows and C of the classes.
    hidden_size_list : sequence of int
        Hidden layer widths, e.g. ``[100, 100]``.
    activation : {"relu", "sigmoid"}
    weight_init_std : float or {"he", "xavier", "relu", "sigmoid"}
        Standard deviation of the Gaussian weights, or a named scale
        (``"he"``/``"relu"``: ``sqrt(2 / fan_in)``, ``"xavier"``/``"sigmoid"``: ``sqrt(1 / fan_in)``).
        Biases start at zero.
    weight_decay_lambda : float
        L2 penalty ``0.5 * lambda * sum(W**2)`` added to the loss (the book's chapter 6).
    xp : namespace or str, optional
        Array namespace or backend name; ``None`` reads ``XP`` (see :func:`get_namespace`).
    device : optional
        Device for the parameters (a device object or string such as ``"cuda:0"``).
    dtype : optional
        Floating dtype of the parameters (a dtype of ``xp`` or ``"float32"``/``"float64"``);
        default: the namespace's default floating dtype, as the book's ``np.random.randn``
        (float64 on NumPy, float32 on PyTorch). The trainer asks for float32.
    seed : int, optional
        Seed of NumPy's ``Generator`` that draws the weights on the host.

    Attributes
    ----------
    params : dict
        ``W1 (D, H1)``, ``b1 (H1,)``, ..., ``WL (H_{L-1}, C)``, ``bL (C,)``.
    layers : OrderedDict
        ``Affine1``, ``Relu1``, ..., ``AffineL``, in forward order.
    last_layer : SoftmaxWithLoss
    """

    def __init__(
        self,
        input_size: int,
        hidden_size_list: Sequence[int],
        output_size: int,
        activation: str = "relu",
        weight_init_std: float | str = 0.01,
        weight_decay_lambda: float = 0.0,
        *,
        xp: Any = None,
        device: Any = None,
        dtype: Any = None,
        seed: int | None = None,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}")
        sizes = _layer_sizes(input_size, hidden_size_list, output_size)
        if not isinstance(weight_init_std, str) and not 0 < float(weight_init_std) < math.inf:
            raise ValueError(f"weight_init_std must be a positive finite number or a name, got {weight_init_std}")
        xp = get_namespace(xp)
        device = resolve_device(xp, device)
        params = _draw_params(sizes, weight_init_std, seed, xp, device, resolve_dtype(xp, dtype, device))

        n_affine = len(sizes) - 1
        layers: OrderedDict[str, Any] = OrderedDict()
        for i in range(1, n_affine + 1):
            # The first Affine sees data: its input gradient is never needed.
            layers[f"Affine{i}"] = Affine(params[f"W{i}"], params[f"b{i}"], input_grad=i > 1)
            if i < n_affine:
                layers[f"{activation.capitalize()}{i}"] = ACTIVATIONS[activation]()
        super().__init__(layers, SoftmaxWithLoss(), params=params)
        self.activation = activation
        self.weight_decay_lambda = weight_decay_lambda


def parameter_count(sizes: Sequence[int]) -> int:
    """P, the weights and biases of a fully connected net with layer ``sizes`` (784-50-10: 39,760);
    a numerical gradient costs 2P loss evaluations."""
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))


def _layer_sizes(input_size: Any, hidden_size_list: Any, output_size: Any) -> list[int]:
    """``[input, *hidden, output]`` as Python ints; any integer type (NumPy's too) is accepted."""
    if isinstance(hidden_size_list, (str, bytes)) or not isinstance(hidden_size_list, Sequence):
        hidden_size_list = [hidden_size_list] if isinstance(hidden_size_list, numbers.Integral) else hidden_size_list
    try:
        sizes = [operator.index(s) for s in (input_size, *hidden_size_list, output_size)]
    except TypeError:
        raise ValueError(
            f"layer sizes must be positive integers, got {[input_size, *hidden_size_list, output_size]}"
        ) from None
    if min(sizes) < 1:
        raise ValueError(f"layer sizes must be positive integers, got {sizes}")
    return sizes


def _draw_params(
    sizes: Sequence[int], weight_init_std: float | str, seed: int | None, xp: Any, device: Any, dtype: Any
) -> dict[str, Any]:
    """``W{i}`` Gaussian, drawn on the host with NumPy's ``Generator(seed)``, and ``b{i}`` zero, on ``device``."""
    rng = host_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        if isinstance(weight_init_std, str):
            key = weight_init_std.lower()
            if key not in NAMED_INITS:
                raise ValueError(
                    f"unknown weight_init_std {weight_init_std!r}; use a number or one of {', '.join(NAMED_INITS)}"
                )
            scale = math.sqrt(NAMED_INITS[key] / fan_in)
        else:
            scale = float(weight_init_std)
        w = scale * rng.standard_normal((fan_in, fan_out))
        params[f"W{i}"] = xp.asarray(w, dtype=dtype, device=device)
        params[f"b{i}"] = xp.zeros((fan_out,), dtype=dtype, device=device)
    return params


def _book_names(layers: Sequence[Any]) -> list[tuple[str, Any]]:
    """``[(name, layer)]`` numbered per class as the book names them: Affine1, Relu1, Affine2, Relu2, ..."""
    counts: dict[str, int] = {}
    named = []
    for layer in layers:
        kind = type(layer).__name__
        counts[kind] = counts.get(kind, 0) + 1
        named.append((f"{kind}{counts[kind]}", layer))
    return named


def _key_of(params: Mapping[str, Any], array: Any, what: str) -> str:
    """The key under which ``params`` holds this very array (an Affine's ``W`` or ``b``)."""
    for key, value in params.items():
        if value is array:
            return key
    raise ValueError(f"LayerNet: an Affine's {what} is not one of the arrays in params ({', '.join(params)})")


class TwoLayerNet(MultiLayerNet):
    """Chapter 5's ``Affine1 -> Relu1 -> Affine2 -> SoftmaxWithLoss`` network.

    ``params``: ``W1 (input_size, hidden_size)``, ``b1 (hidden_size,)``,
    ``W2 (hidden_size, output_size)``, ``b2 (output_size,)``; weights are
    ``weight_init_std`` times standard normal draws, biases zero.
    Keyword arguments as for :class:`MultiLayerNet`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        weight_init_std: float | str = 0.01,
        *,
        xp: Any = None,
        device: Any = None,
        dtype: Any = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            input_size,
            [hidden_size],
            output_size,
            activation="relu",
            weight_init_std=weight_init_std,
            xp=xp,
            device=device,
            dtype=dtype,
            seed=seed,
        )
