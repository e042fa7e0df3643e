"""NumPy on the host, the default backend and the fallback where CuPy cannot run."""

from __future__ import annotations

import importlib

import array_api_compat

from .base import Backend, cpu_only

NUMPY = Backend(
    name="numpy",
    load=lambda: importlib.import_module("array_api_compat.numpy"),
    owns=array_api_compat.is_numpy_namespace,
    parse_device=cpu_only,
    host=True,
)
