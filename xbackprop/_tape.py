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
