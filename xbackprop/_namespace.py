"""How xbackprop's array code finds the namespace of its inputs: ``array_namespace``, memoised.

``array_api_compat.array_namespace`` inspects every argument against every
library it knows, and a training step asks about ten times: on a small net that
is a measurable share of the step. The namespace is a function of the array
types, so :func:`namespace_of` looks it up once per combination of types. Every
module outside ``backend.py`` takes its namespace through it.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace

__all__ = ["namespace_of", "is_integral"]

_NAMESPACES: dict[tuple[type, ...], Any] = {}
_INTEGRAL: dict[tuple[Any, Any], bool] = {}


def namespace_of(*arrays: Any) -> Any:
    """The Array API namespace of ``arrays`` (as ``array_api_compat.array_namespace``)."""
    types = tuple(map(type, arrays))
    xp = _NAMESPACES.get(types)
    if xp is None:
        xp = array_namespace(*arrays)  # raises for mixed or unsupported libraries, every time
        _NAMESPACES[types] = xp
    return xp


def is_integral(xp: Any, dtype: Any) -> bool:
    """``xp.isdtype(dtype, "integral")``, remembered per dtype (asked on every layer call; the answer never changes)."""
    key = (xp, dtype)  # the namespace first: dtypes of different libraries must never be compared
    answer = _INTEGRAL.get(key)
    if answer is None:
        answer = _INTEGRAL[key] = bool(xp.isdtype(dtype, "integral"))
    return answer
