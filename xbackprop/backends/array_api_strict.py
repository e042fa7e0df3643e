"""array-api-strict: the standard and nothing more, for proving that the layers use nothing else."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from .base import Backend, import_namespace


def _parse_device(xp: ModuleType, device: str) -> Any:
    return xp.Device(device)


ARRAY_API_STRICT = Backend(
    name="array_api_strict",
    load=lambda: import_namespace("array_api_strict", "array_api_strict", "pip install array-api-strict"),
    owns=array_api_compat.is_array_api_strict_namespace,
    parse_device=_parse_device,
    to_numpy=np.from_dlpack,
    indexing_hashes_devices=True,
)
