"""What a layer does besides its arithmetic, in one place: reporting its passes to
:func:`xbackprop.graph.trace`, refusing ``backward`` before ``forward``, the matrix product a capturing
backend may replace, and the progress of long loops.

Every hook lives in a context variable, so it is local to the ``with`` block that sets it (and to that
block's thread or task) and never a process-wide switch; outside such a block each costs one lookup.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

#: The :class:`~xbackprop.graph.ComputationalGraph` recording passes, set by ``trace()``.
RECORDER: ContextVar[Any] = ContextVar("xbackprop_graph_recorder", default=None)
#: ``fn(a, b)`` computing ``a @ b``, set by a backend's capturer for the length of a capture.
MATMUL: ContextVar[Any] = ContextVar("xbackprop_matmul", default=None)
#: Anything with ``update(n)`` (a tqdm bar), set by a command that shows progress.
BAR: ContextVar[Any] = ContextVar("xbackprop_progress", default=None)


class Layer:
    """Base of the package's layers: subclasses write the book's ``forward`` and ``backward`` and nothing else.

    ``forward`` is wrapped to report the pass (its array arguments, then the layer's ``params``) to a trace;
    ``backward`` to raise ``RuntimeError("<Layer>.backward: call forward first")`` when no forward came
    before and to report the gradients (those it returns, then the layer's ``grads``). A layer whose backward
    frees what its forward cached sets ``backward_uses_up_forward = True``: each backward then needs a new
    forward.
    """

    backward_uses_up_forward = False
    _forwarded = False  # whether a forward came since the last backward that used it up
    _inputs_recorded = 1  # how many data inputs the last traced forward had

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls.forward = _reporting_forward(cls.__dict__["forward"])
        if "backward" in cls.__dict__:
            cls.backward = _reporting_backward(cls.__dict__["backward"])


def _reporting_forward(forward: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(forward)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        recorder = RECORDER.get()
        if recorder is None:  # the common case: one lookup and one attribute
            out = forward(self, *args, **kwargs)
            self._forwarded = True
            return out
        since = recorder.position()
        out = forward(self, *args, **kwargs)
        self._forwarded = True
        inputs = tuple(a for a in args if not isinstance(a, bool))  # the book's train_flg is not an input
        self._inputs_recorded = len(inputs)
        if not recorder.recorded(self, since):  # a subclass's super().forward reported already
            recorder.forward(self, inputs + tuple(getattr(self, "params", {}).values()), out)
        return out

    return wrapper


def _reporting_backward(backward: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(backward)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._forwarded:
            used_up = " (each backward uses up its forward's input)" if self.backward_uses_up_forward else ""
            raise RuntimeError(f"{type(self).__name__}.backward: call forward first{used_up}")
        grads = backward(self, *args, **kwargs)
        if self.backward_uses_up_forward:
            self._forwarded = False
        recorder = RECORDER.get()
        if recorder is not None and not recorder.backward_recorded(self):
            returned = grads if isinstance(grads, tuple) else (grads,)
            returned += (None,) * (self._inputs_recorded - len(returned))
            params = getattr(self, "params", {})
            recorder.backward(self, args[0] if args else kwargs.get("dout", 1),
                              returned + tuple(self.grads.get(key) for key in params))
        return grads

    return wrapper


def entries(table: str, *keys: str) -> tuple[Any, ...]:
    """The book's attributes for entries of a layer's dict ``table`` (``"params"``, ``"grads"`` or
    ``"buffers"``): ``W, b = entries("params", "W", "b")`` makes ``self.W`` read and write
    ``self.params["W"]``; a missing entry reads as ``None`` (``dW`` before the first backward)."""
    return tuple(_Entry(table, key) for key in keys)


class _Entry:
    def __init__(self, table: str, key: str) -> None:
        self.table, self.key = table, key

    def __get__(self, layer: Any, owner: type | None = None) -> Any:
        return self if layer is None else getattr(layer, self.table).get(self.key)

    def __set__(self, layer: Any, value: Any) -> None:
        getattr(layer, self.table)[self.key] = value


# -- tracing layers written without the base --

def tracing() -> bool:
    """Whether a trace is recording here."""
    return RECORDER.get() is not None


def position() -> int:
    """How many passes the current trace holds (0 outside one)."""
    recorder = RECORDER.get()
    return 0 if recorder is None else recorder.position()


def report_forward_for(layer: Any, since: int, inputs: tuple[Any, ...], output: Any) -> None:
    """Inside a trace, record ``layer``'s forward pass for it unless it reported one itself after ``since``
    (a :func:`position`): a learner's layer that does not derive from :class:`Layer` is drawn as a box with
    its class name instead of leaving a gap."""
    recorder = RECORDER.get()
    if recorder is not None and not recorder.recorded(layer, since):
        recorder.forward(layer, inputs, output)


def report_backward_for(layer: Any, dout: Any, grad: Any) -> None:
    """Inside a trace, record ``layer``'s backward pass for it unless it reported its last one itself."""
    recorder = RECORDER.get()
    if recorder is not None and not recorder.backward_recorded(layer):
        recorder.backward(layer, dout, (grad,))


# -- the matrix product --

def dot(a: Any, b: Any) -> Any:
    """``a @ b`` for ``(m, k)`` and ``(k, n)`` arrays, the book's ``np.dot`` (through the capturing backend's
    product while one is set: CuPy's own cuBLAS calls cannot be captured)."""
    product = MATMUL.get()
    return a @ b if product is None else product(a, b)


# -- progress --

def advance(steps: int = 1) -> None:
    """``steps`` more units of work done (nothing happens outside a :func:`reporting` block)."""
    bar = BAR.get()
    if bar is not None:
        bar.update(steps)


@contextmanager
def reporting(bar: Any) -> Iterator[Any]:
    """Within the block, :func:`advance` updates ``bar`` (anything with ``update(n)``, e.g. a tqdm bar), so
    library loops report without a parameter threaded through every call."""
    token = BAR.set(bar)
    try:
        yield bar
    finally:
        BAR.reset(token)
