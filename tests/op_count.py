"""Count the arrays a piece of code creates, on array-api-strict: every array an operation returns, and every
Python scalar promoted to one (``0.1 * g`` makes two), at the line of xbackprop or test code that asked for it.

In-place operators (``W -= step``) create nothing and are not counted. On a GPU most counted arrays are a
kernel launch and all of them a Python call, so this count is the step's fixed cost.
"""

from __future__ import annotations

import collections
import functools
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import array_api_strict
from array_api_strict._array_object import Array

#: Array methods that return new arrays (the in-place ``__i*__`` forms are left out on purpose).
_METHODS = [f"__{name}__" for name in (
    "add radd sub rsub mul rmul truediv rtruediv floordiv rfloordiv pow rpow matmul rmatmul neg pos abs invert "
    "and rand or ror xor rxor lt le gt ge eq ne getitem mod rmod lshift rlshift rshift rrshift").split()]
_PROPERTIES = ("T", "mT")


def _caller() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if "array_api_strict" not in name and name.rsplit("/", 1)[-1] != "op_count.py":
            return f"{name.rsplit('/', 1)[-1]}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def _results(value: Any) -> int:
    if isinstance(value, Array):
        return 1
    if isinstance(value, (tuple, list)):
        return sum(_results(v) for v in value)
    return 0


@contextmanager
def counting_arrays() -> Iterator[collections.Counter]:
    """Within the block, ``counter[line]`` counts the arrays created at each calling line."""
    counter: collections.Counter = collections.Counter()
    depth = [0]  # only the outermost operation counts (array-api-strict builds on itself)

    def wrap(fn: Any, scalars: bool) -> Any:
        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            try:
                result = fn(*args, **kwargs)
            finally:
                depth[0] -= 1
            if depth[0] == 0:
                promoted = sum(isinstance(a, (bool, int, float, complex)) for a in args[1:]) if scalars else 0
                made = _results(result) + promoted
                if made:
                    counter[_caller()] += made
            return result
        return counted

    saved_functions = {}
    for name in dir(array_api_strict):
        value = getattr(array_api_strict, name)
        if callable(value) and not isinstance(value, type) and not name.startswith("_"):
            saved_functions[name] = value
            setattr(array_api_strict, name, wrap(value, scalars=True))
    saved_methods = {name: getattr(Array, name) for name in _METHODS if hasattr(Array, name)}
    saved_properties = {name: getattr(Array, name) for name in _PROPERTIES}
    try:
        for name, method in saved_methods.items():
            setattr(Array, name, wrap(method, scalars=True))
        for name, prop in saved_properties.items():
            setattr(Array, name, property(wrap(prop.fget, scalars=False)))
        yield counter
    finally:
        for name, value in saved_functions.items():
            setattr(array_api_strict, name, value)
        for name, value in {**saved_methods, **saved_properties}.items():
            setattr(Array, name, value)


def table(counter: collections.Counter) -> str:
    """The counts, one line each, with the total: for a failing test's message."""
    rows = [f"{count:3d}  {line}" for line, count in counter.items()]
    return "\n".join([*rows, f"{sum(counter.values()):3d}  in all"])
