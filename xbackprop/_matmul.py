"""The matrix product of the layers, the book's ``np.dot``: ``a @ b``, or the product a backend sets while it
captures a graph (CuPy's own cuBLAS calls cannot be captured). The hook lives in a context variable, so it is
local to the capturing block and never a process-wide switch."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

#: ``fn(a, b)`` computing ``a @ b``, set by ``backend``'s capturers for the length of a capture.
MATMUL: ContextVar[Any] = ContextVar("xbackprop_matmul", default=None)


def dot(a: Any, b: Any) -> Any:
    """``a @ b`` for ``(m, k)`` and ``(k, n)`` arrays (through the capturing backend's product while one is set)."""
    product = MATMUL.get()
    return a @ b if product is None else product(a, b)
