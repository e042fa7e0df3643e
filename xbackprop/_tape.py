"""How layers report their passes to :func:`xbackprop.graph.trace`; outside a trace, nothing happens.

The recorder lives in a context variable, so tracing is local to the ``with`` block
(and to its thread or task) and never a process-wide switch.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

RECORDER: ContextVar[Any] = ContextVar("xbackprop_graph_recorder", default=None)


def record_forward(layer: Any, inputs: tuple[Any, ...], output: Any) -> None:
    """``layer`` computed ``output`` from ``inputs`` (its data inputs first, then its parameters)."""
    recorder = RECORDER.get()
    if recorder is not None:
        recorder.forward(layer, inputs, output)


def record_backward(layer: Any, dout: Any, grads: tuple[Any, ...]) -> None:
    """``layer`` turned ``dout`` into ``grads``, one per input of its forward pass (``None`` where not computed)."""
    recorder = RECORDER.get()
    if recorder is not None:
        recorder.backward(layer, dout, grads)


def tracing() -> bool:
    """Whether a trace is recording here."""
    return RECORDER.get() is not None


def report_forward_for(layer: Any, since: int, inputs: tuple[Any, ...], output: Any) -> None:
    """Inside a trace, record ``layer``'s forward pass for it unless it reported one itself after ``since``
    (a position from :func:`position`): a learner's layer that never calls :func:`record_forward` is drawn as a
    box with its class name instead of leaving a gap."""
    recorder = RECORDER.get()
    if recorder is not None and not recorder.recorded(layer, since):
        recorder.forward(layer, inputs, output)


def report_backward_for(layer: Any, dout: Any, grad: Any) -> None:
    """Inside a trace, record ``layer``'s backward pass for it unless it reported its last one itself."""
    recorder = RECORDER.get()
    if recorder is not None and not recorder.backward_recorded(layer):
        recorder.backward(layer, dout, (grad,))


def position() -> int:
    """How many passes the current trace holds (0 outside one)."""
    recorder = RECORDER.get()
    return 0 if recorder is None else recorder.position()
