"""The array libraries xbackprop knows, one :class:`~xbackprop.backends.base.Backend` record each.

A new library is a module here holding its record, and one line in :data:`RECORDS`.
"""

from __future__ import annotations

from .array_api_strict import ARRAY_API_STRICT
from .base import Backend, BackendUnavailableError
from .cupy import CUPY
from .jax import JAX
from .numpy import NUMPY
from .torch import TORCH

__all__ = ["RECORDS", "Backend", "BackendUnavailableError"]

#: Every backend by its name, in the order ``--backend`` lists them. Dask is not among them: its arrays are
#: lazy, so a training loop would grow one graph for the whole run.
RECORDS: dict[str, Backend] = {record.name: record for record in (NUMPY, CUPY, TORCH, JAX, ARRAY_API_STRICT)}
