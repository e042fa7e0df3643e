"""The general net over an ordered list of layers: a params dict, the layers, a last layer.

Parameters are looked up in ``params`` (or in a ``params=`` mapping passed to a method) at every forward
pass, so both ``net.params["W1"] -= lr * g`` on mutable arrays and ``net.params["W1"] = new_array`` on any
backend (JAX included) take effect at once. Every parameter is found through the layers' own ``params``
dicts, whatever their class: nets, optimizers, saving, MPI and compiled steps work on what layers declare.
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

from array_api_compat import device as device_of
from array_api_compat import is_array_api_obj

from . import hooks
from .backend import backend_name, get_namespace, rows
from .functions import checked_labels, namespace_of
from .gradient import central_differences
from .layers import Affine, SoftmaxWithLoss
from .stacked_gradient import DEFAULT_MEMORY_BUDGET, stacked_numerical_gradient

__all__ = ["LayerNet"]


class LayerNet:
    """A network as an ordered list of layers and a last layer.

    ``layers`` is a mapping of names to layers (the book's ``OrderedDict``) or a
    sequence, named ``Affine1``, ``Relu1``, ``Affine2``, ... in order. Any layer with
    ``forward(x)`` and ``backward(dout)`` may take part (``forward(x, train_flg)`` for
    layers that train differently, as Dropout and BatchNormalization). Every layer's
    ``params`` dict contributes to ``net.params`` under the book's keys, the name and
    the how-manyeth layer holds it: ``W1``, ``b1``, ``gamma1``, ``beta1``, ``W2``, ...;
    every layer's ``buffers`` (running statistics) to ``net.buffers`` likewise
    (``running_mean1``, ...; a layer's ``init_buffers(like)``, where it has one, is
    called first, so buffers it would make on its first pass exist from the start). A ``params`` dict may be passed instead, whose arrays are
    the layers' own (matched by identity, so any keys work). ``last_layer`` defaults to
    :class:`~xbackprop.layers.SoftmaxWithLoss`. The same layer object may appear only
    once: it caches one pass at a time.

    Parameters and buffers are looked up in ``params`` and ``buffers`` (or in mappings
    passed to a method) at every forward pass, so ``net.params["W1"] -= lr * g`` and
    ``net.params["W1"] = new_array`` both take effect at once. ``weight_decay_lambda``
    adds ``0.5 * lambda * sum(W**2)`` for every parameter named ``W`` (chapter 6).

    A net is not thread-safe: its layers cache the last pass for their backward, as the
    book's do, so two threads using one net would mix their passes. Give each thread its own
    (``copy.deepcopy(net)``; nets also pickle, their namespace by its name).
    """

    activation: str | None = None
    #: The shape ``(C, H, W)`` of one input of a net of images: rows ``(N, C*H*W)``, as the trainer and
    #: ``load_mnist(flatten=True)`` give them, are reshaped to images ``(N, C, H, W)``.
    input_dim: tuple[int, ...] | None = None
    #: The most rows scored at once by ``accuracy`` and ``count_correct`` (``None``: as asked), for nets whose
    #: every row makes large intermediate arrays (a convolution's im2col: the book's conv nets score 100).
    evaluation_batch_size: int | None = None

    def __init__(
        self,
        layers: Mapping[str, Any] | Sequence[Any],
        last_layer: Any = None,
        *,
        params: dict[str, Any] | None = None,
        weight_decay_lambda: float = 0.0,
    ) -> None:
        self.layers: OrderedDict[str, Any] = OrderedDict(
            layers.items() if isinstance(layers, Mapping) else _book_names(layers)
        )
        self.last_layer = SoftmaxWithLoss() if last_layer is None else last_layer
        _refuse_shared_layers([*self.layers.items(), ("last_layer", self.last_layer)])
        _refuse_undeclared_parameters(self.layers)
        self.weight_decay_lambda = weight_decay_lambda
        # (layer name, layer, name in the layer, key in the net) of every parameter and buffer
        self._param_slots = _slots(self.layers, "params")
        if not self._param_slots:
            raise ValueError("LayerNet: no layer declares parameters (a params dict), so there is nothing to train")
        first = self._param_slots[0][1].params[self._param_slots[0][2]]
        for layer in self.layers.values():  # buffers a layer would make on its first pass exist from the start
            if hasattr(layer, "init_buffers"):
                layer.init_buffers(first)
        self._buffer_slots = _slots(self.layers, "buffers")
        for layer_name, layer, _, _ in self._param_slots:
            if not isinstance(getattr(layer, "grads", None), MutableMapping):
                raise TypeError(f"LayerNet: {layer_name} has params but no grads dict for backward to fill")
        if params is None:
            params = {key: layer.params[name] for _, layer, name, key in self._param_slots}
        else:
            self._param_slots = _rekeyed(self._param_slots, params)
        self.params = params
        self.buffers = {key: layer.buffers[name] for _, layer, name, key in self._buffer_slots}
        self._takes_train_flg = {name for name, layer in self.layers.items() if _takes_train_flg(layer)}
        self.xp = namespace_of(first)
        self.device = device_of(first)
        self.dtype = first.dtype
        affines = [layer for layer in self.layers.values() if isinstance(layer, Affine)]
        self.sizes = [int(affines[0].W.shape[0]), *(int(a.W.shape[1]) for a in affines)] if affines else None

    def __repr__(self) -> str:
        """The layers in order with their parameters' shapes, the parameter count, backend, dtype and device."""
        from .backend import backend_name

        count = sum(math.prod(value.shape) for value in self.params.values())
        lines = [f"{type(self).__name__}: {count:,} parameters, {backend_name(self.xp)}, "
                 f"{str(getattr(self.dtype, 'name', self.dtype)).rsplit('.', 1)[-1]}, device {self.device}"]
        keys = {(layer_name, name): key for layer_name, _, name, key in (*self._param_slots, *self._buffer_slots)}
        named = [*self.layers.items(), ("last_layer", self.last_layer)]
        width = max(len(name) for name, _ in named)
        kind = max(len(type(layer).__name__) for _, layer in named)
        for layer_name, layer in named:
            arrays = [f"{keys[(layer_name, name)]} {tuple(value.shape)}"
                      for table in ("params", "buffers") for name, value in getattr(layer, table, {}).items()
                      if (layer_name, name) in keys]
            lines.append(f"  {layer_name:<{width}}  {type(layer).__name__:<{kind}}  {'  '.join(arrays)}".rstrip())
        return "\n".join(lines)

    @property
    def lastLayer(self) -> Any:  # the book's spelling, for its readers
        return self.last_layer

    def _bind(self, params: Mapping[str, Any] | None, buffers: Mapping[str, Any] | None) -> None:
        """Point every layer at the current arrays in ``params`` and ``buffers`` (default the net's own)."""
        params = self.params if params is None else params
        buffers = self.buffers if buffers is None else buffers
        try:
            for _, layer, name, key in self._param_slots:
                value = params[key]
                if not hasattr(value, "shape"):
                    raise TypeError(f"params[{key!r}] is a {type(value).__name__}, not an array: give "
                                    f"{backend_name(self.xp)} arrays (xp.asarray(...))")
                if namespace_of(value) is not self.xp:
                    raise TypeError(f"params[{key!r}] is a {backend_name(namespace_of(value))} array, this net's "
                                    f"are {backend_name(self.xp)}'s: convert it (xbackprop.to_numpy, xp.asarray)")
                layer.params[name] = value
            for _, layer, name, key in self._buffer_slots:
                layer.buffers[name] = buffers[key]
        except KeyError as missing:
            needed = [key for *_, key in (*self._param_slots, *self._buffer_slots)]
            raise ValueError(f"params or buffers lack {missing}: this net needs {', '.join(needed)}") from None

    def __getstate__(self) -> dict[str, Any]:
        """For ``copy.deepcopy`` and ``pickle``: parameters, buffers and layers, the namespace by its name."""
        return {**self.__dict__, "xp": backend_name(self.xp), "device": None}  # a JAX device does not pickle

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({**state, "xp": get_namespace(state["xp"], strict=True)})
        self.device = device_of(next(iter(self.params.values())))

    @property
    def param_slots(self) -> list[tuple[str, Any, str, str]]:
        """Where each parameter lives: ``(layer name, layer, name in the layer, key in params)``, in order."""
        return list(self._param_slots)

    @contextmanager
    def layers_kept(self) -> Iterator[None]:
        """Within the block, passes run as usual; after it, every layer holds what it held before (its attributes
        and the contents of its ``params``, ``grads`` and ``buffers``). A compiled function traces the layers once:
        what the trace leaves on them (JAX's tracers) must not outlive it."""
        kept = [(layer, dict(vars(layer)), {name: dict(value) for name, value in vars(layer).items()
                                            if isinstance(value, MutableMapping)})
                for layer in (*self.layers.values(), self.last_layer)]
        try:
            yield
        finally:
            for layer, attributes, tables in kept:
                vars(layer).clear()
                vars(layer).update(attributes)
                for name, table in tables.items():
                    attributes[name].clear()
                    attributes[name].update(table)

    def forward_until(self, layer_name: str, x: Any, params: Mapping[str, Any] | None = None, *,
                      train_flg: bool = False, buffers: Mapping[str, Any] | None = None) -> Any:
        """What the layer named ``layer_name`` receives from ``x``: the layers before it run on ``params``."""
        self._bind(params, buffers)
        for name, layer in self.layers.items():
            if name == layer_name:
                return x
            x = layer.forward(x, train_flg) if name in self._takes_train_flg else layer.forward(x)
        raise KeyError(f"no layer named {layer_name!r}: the layers are {', '.join(self.layers)}")

    def _forward(self, x: Any, train_flg: bool) -> Any:
        if self.input_dim is not None and x.ndim == 2:
            x = self.xp.reshape(x, (x.shape[0], *self.input_dim))
        traced = hooks.tracing()
        for name, layer in self.layers.items():
            since = hooks.position() if traced else 0
            out = layer.forward(x, train_flg) if name in self._takes_train_flg else layer.forward(x)
            if traced:  # a layer that does not report its pass is drawn all the same
                hooks.report_forward_for(layer, since, (x,), out)
            x = out
        return x

    def _backward(self, dout: Any) -> None:
        traced = hooks.tracing()
        for layer in reversed(self.layers.values()):
            grad = layer.backward(dout)
            if traced:
                hooks.report_backward_for(layer, dout, grad)
            dout = grad

    def _new_buffers(self, keep: bool) -> dict[str, Any]:
        """The layers' buffers after a pass; with ``keep`` (no ``buffers=`` given) they become the net's own."""
        new = {key: layer.buffers[name] for _, layer, name, key in self._buffer_slots}
        if keep:
            self.buffers.update(new)
        return new

    def predict(
        self, x: Any, params: Mapping[str, Any] | None = None, *, train_flg: bool = False,
        buffers: Mapping[str, Any] | None = None,
    ) -> Any:
        """Scores ``(N, C)`` before softmax for inputs ``x`` ``(N, D)`` (or ``(N, ...)``).

        ``train_flg=True`` runs Dropout and BatchNormalization as in training, and
        (unless ``buffers`` is given) keeps their new running statistics.
        """
        if namespace_of(x) is not self.xp:
            raise TypeError(f"x is a {backend_name(namespace_of(x))} array and the net's parameters are "
                            f"{backend_name(self.xp)} arrays: move x to the net's namespace first "
                            "(xp.asarray(x, device=net.device))")
        self._bind(params, buffers)
        scores = self._forward(x, train_flg)
        if train_flg:
            self._new_buffers(keep=buffers is None)
        return scores

    def loss(
        self, x: Any, t: Any, params: Mapping[str, Any] | None = None, *, train_flg: bool = False,
        check_labels: bool = True, buffers: Mapping[str, Any] | None = None,
    ) -> Any:
        """Mean cross-entropy (plus weight decay) as a 0-D array; ``t`` one-hot ``(N, C)`` or labels ``(N,)``.

        ``train_flg`` as in :meth:`predict`. ``check_labels=False`` skips the last
        layer's label check (a device read-back), for callers that validated their
        labels once.
        """
        y = self.predict(x, params, train_flg=train_flg, buffers=buffers)
        loss = self.last_layer.forward(y, t, check_labels=check_labels)
        if self.weight_decay_lambda:
            loss = loss + self.weight_decay(params)
        return loss

    def weight_decay(self, params: Mapping[str, Any] | None = None) -> Any:
        """``0.5 * lambda * sum(W**2)`` over the parameters named ``W`` (0.0 without weight decay)."""
        if not self.weight_decay_lambda:
            return 0.0
        params = self.params if params is None else params
        xp = self.xp
        return sum(0.5 * self.weight_decay_lambda * xp.sum(params[key] ** 2)
                   for _, _, name, key in self._param_slots if name == "W")

    def accuracy(
        self, x: Any, t: Any, params: Mapping[str, Any] | None = None, *, batch_size: int | None = None
    ) -> float:
        """Fraction of rows whose highest score is the true class, as a Python float (``train_flg=False``).

        ``t`` is one-hot ``(N, C)`` or integer labels ``(N,)`` in ``[0, C)``; anything else
        (``(N, 1)`` labels, labels out of range, float labels) is a ``ValueError``, never
        a silent 0.0. ``batch_size`` bounds the rows scored at once (the book's
        ``accuracy(x, t, batch_size=100)``).
        """
        if x.shape[0] == 0:
            raise ValueError("accuracy: no rows to score")
        return float(self.count_correct(x, t, params, batch_size=batch_size, check_labels=True)) / x.shape[0]

    def count_correct(
        self, x: Any, t: Any, params: Mapping[str, Any] | None = None, *, batch_size: int | None = None,
        check_labels: bool = True, count: Callable[..., Any] | None = None,
    ) -> Any:
        """How many rows' highest score is the true class, as a 0-D integer array left on the device.

        A row whose scores are not all finite (a diverged net's NaN) is never counted correct, whatever ``argmax``
        makes of it. Scores at most ``batch_size`` rows at a time by :meth:`count_rows` (or ``count``, which the
        trainer compiles), with ``train_flg=False``; nothing is read back but the label check (``check_labels=False``
        skips it, for labels validated once), so a caller can gather several counts and read them in one go.
        """
        xp = namespace_of(x)
        n = x.shape[0]
        step = max(n, 1) if batch_size is None else max(int(batch_size), 1)
        if self.evaluation_batch_size is not None:  # a net whose passes are large scores a few rows at a time
            step = min(step, self.evaluation_batch_size)
        if n:  # the labels are read against the number of scores, which one row tells
            t = checked_labels(t, n, self.predict(rows(x, 0, 1), params).shape[1], who="accuracy", check=check_labels)
        params = self.params if params is None else params
        count = self.count_rows if count is None else count
        # the default integer (int32 on JAX without x64, which would truncate an int64 with a warning)
        counting = xp.__array_namespace_info__().default_dtypes(device=device_of(x))["integral"]
        correct = xp.zeros((), dtype=counting, device=device_of(x))
        for start in range(0, n, step):
            chunk = rows(x, start, min(start + step, n), xp=xp), rows(t, start, min(start + step, n), xp=xp)
            correct = correct + xp.astype(count(params, self.buffers, *chunk), counting)
        return correct

    def count_rows(self, params: Mapping[str, Any], buffers: Mapping[str, Any], x: Any, t: Any) -> Any:
        """How many of the rows ``x`` (scored at once, ``train_flg=False``) have their highest score at the class
        ``t`` gives (integer labels ``(N,)``, checked before), as a 0-D integer array; a pure function of its
        arguments, so a backend that compiles whole functions can trace it."""
        xp = namespace_of(x)
        scores = self.predict(x, params, buffers=buffers)
        predicted = xp.argmax(scores, axis=1)
        hits = (predicted == xp.astype(t, predicted.dtype)) & xp.all(xp.isfinite(scores), axis=1)
        counting = xp.__array_namespace_info__().default_dtypes(device=device_of(x))["integral"]
        return xp.sum(xp.astype(hits, counting))

    def numerical_gradient(
        self, x: Any, t: Any, params: Mapping[str, Any] | None = None, *, batch: int | str | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET, buffers: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Gradients of the training loss by central differences (the book's ``h = 1e-4``): 2 losses per element.

        ``batch=None`` is the book's method: one perturbed element, one whole forward
        pass. ``batch=K`` or ``"auto"`` evaluates K perturbed copies of an Affine's
        parameters per pass (see :func:`xbackprop.stacked_gradient.stacked_numerical_gradient`).
        Every evaluation starts from the same ``buffers`` (default: the net's, which are
        left as they are), so Dropout draws the same mask in each.
        """
        params = dict(self.params if params is None else params)
        buffers = dict(self.buffers if buffers is None else buffers)
        if batch is not None:
            return stacked_numerical_gradient(self, x, t, params, batch=batch, memory_budget=memory_budget,
                                              buffers=buffers)
        self.loss(x, t, params, train_flg=True, buffers=buffers)  # the labels are checked once, here
        return {key: central_differences(
                    lambda p, key=key: self.loss(x, t, {**params, key: p}, train_flg=True, check_labels=False,
                                                 buffers=buffers), value)
                for key, value in params.items()}

    def loss_and_gradient(
        self, x: Any, t: Any, params: Mapping[str, Any] | None = None, *, check_labels: bool = True,
        buffers: Mapping[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """The training loss (0-D array), its gradients by backpropagation shaped like ``params``, and the
        buffers after the pass (``{}`` for a net without any), in one training pass (``train_flg=True``).

        Given ``params`` and ``buffers``, a pure function of its arguments as far as
        callers see (the layers cache this pass's values for their backward), so a
        backend that compiles whole functions can trace it; without ``buffers`` the
        net keeps the new ones, as the book's ``gradient`` does.
        """
        loss = self.loss(x, t, params, train_flg=True, check_labels=check_labels, buffers=buffers)
        for _, layer, _, _ in self._param_slots:
            layer.grads.clear()  # a gradient backward forgets to set must not be last pass's

        self._backward(self.last_layer.backward(1))

        params = self.params if params is None else params
        grads = {}
        for layer_name, layer, name, key in self._param_slots:
            grad = layer.grads.get(name)
            if grad is None:
                raise RuntimeError(f"{layer_name}.backward left no gradient for its parameter {name!r} ({key}): "
                                   f"set self.grads[{name!r}] there")
            if tuple(grad.shape) != tuple(params[key].shape):
                raise RuntimeError(f"{layer_name}.backward: the gradient of {name!r} ({key}) has shape "
                                   f"{tuple(grad.shape)}, the parameter {tuple(params[key].shape)}")
            if self.weight_decay_lambda and name == "W":
                grad = grad + self.weight_decay_lambda * params[key]
            grads[key] = grad
        return loss, grads, self._new_buffers(keep=buffers is None)

    def gradient(self, x: Any, t: Any, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The book's ``gradient``: gradients of the training loss by backpropagation, shaped like ``params``.

        Like the book's, it checks the labels ``t`` on every call, which reads their range back from the
        device once (a synchronisation on a GPU); a training loop calls :meth:`loss_and_gradient` with
        ``check_labels=False`` after checking its dataset once, and then no step reads anything back."""
        return self.loss_and_gradient(x, t, params)[1]


def _book_names(layers: Sequence[Any]) -> list[tuple[str, Any]]:
    """``[(name, layer)]`` numbered per class as the book names them: Affine1, Relu1, Affine2, Relu2, ..."""
    counts: dict[str, int] = {}
    named = []
    for layer in layers:
        kind = type(layer).__name__
        counts[kind] = counts.get(kind, 0) + 1
        named.append((f"{kind}{counts[kind]}", layer))
    return named


def _refuse_shared_layers(named: list[tuple[str, Any]]) -> None:
    """A layer caches one pass: the same object twice in a net would backpropagate the wrong pass."""
    seen: dict[int, str] = {}
    for name, layer in named:
        if id(layer) in seen:
            raise ValueError(f"LayerNet: {seen[id(layer)]} and {name} are the same {type(layer).__name__} object; "
                             "each place in a net needs a layer of its own (a new instance)")
        seen[id(layer)] = name


def _refuse_undeclared_parameters(layers: Mapping[str, Any]) -> None:
    """A layer holding an array beside its gradient twin (``W``/``dW``, ``w``/``dw``) that is not in its ``params``
    would never be trained, silently: refused, saying how to declare it."""
    for layer_name, layer in layers.items():
        declared = {id(value) for value in (getattr(layer, "params", None) or {}).values()}
        attributes = vars(layer) if hasattr(layer, "__dict__") else {}
        for name, value in attributes.items():
            if f"d{name}" in attributes and is_array_api_obj(value) and id(value) not in declared:
                raise ValueError(
                    f"LayerNet: {layer_name} holds {name} and its gradient d{name} but does not declare {name} as a "
                    f"parameter, so no optimizer would ever train it: give the layer self.params = {{'{name}': "
                    f"...}} and self.grads = {{}}, and set self.grads['{name}'] in backward")


def _slots(layers: Mapping[str, Any], table: str) -> list[tuple[str, Any, str, str]]:
    """``(layer name, layer, entry name, net key)`` of every entry of every layer's ``params`` or ``buffers``,
    keyed the book's way: the entry's name and how many layers so far hold one of that name (W1, gamma1, W2)."""
    counts: dict[str, int] = {}
    slots = []
    for layer_name, layer in layers.items():
        entries = getattr(layer, table, None)
        if entries is None:
            continue
        if not isinstance(entries, MutableMapping):
            raise TypeError(f"LayerNet: {layer_name}.{table} must be a dict of arrays, got {type(entries).__name__}")
        for name in entries:
            counts[name] = counts.get(name, 0) + 1
            slots.append((layer_name, layer, name, f"{name}{counts[name]}"))
    return slots


def _rekeyed(slots: list[tuple[str, Any, str, str]], params: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    """The slots keyed as in a caller's ``params``, whose arrays must be the layers' own (matched by identity)."""
    by_identity = {id(value): key for key, value in params.items()}
    rekeyed = []
    for layer_name, layer, name, _ in slots:
        key = by_identity.get(id(layer.params[name]))
        if key is None:
            raise ValueError(f"LayerNet: {layer_name}'s {name} is not one of the arrays in params ({', '.join(params)})")
        rekeyed.append((layer_name, layer, name, key))
    unused = set(params) - {key for *_, key in rekeyed}
    if unused:
        raise ValueError(f"LayerNet: params {sorted(unused)} belong to no layer")
    return rekeyed


def _takes_train_flg(layer: Any) -> bool:
    """Whether ``layer.forward`` has the book's ``train_flg`` argument (Dropout, BatchNormalization)."""
    try:
        return "train_flg" in inspect.signature(layer.forward).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False
