"""Progress of long loops (a numerical gradient's 2P passes) reported to a bar the caller shows, if any.

The bar lives in a context variable, set for the length of a ``with reporting(bar):`` block by a command that
shows one (only on a terminal), so library loops report without a parameter threaded through every call and
without any process-wide switch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

BAR: ContextVar[Any] = ContextVar("xbackprop_progress", default=None)


def advance(steps: int = 1) -> None:
    """``steps`` more units of work done (nothing happens outside a :func:`reporting` block)."""
    bar = BAR.get()
    if bar is not None:
        bar.update(steps)


@contextmanager
def reporting(bar: Any) -> Iterator[Any]:
    """Within the block, :func:`advance` updates ``bar`` (anything with ``update(n)``, e.g. a tqdm bar)."""
    token = BAR.set(bar)
    try:
        yield bar
    finally:
        BAR.reset(token)
