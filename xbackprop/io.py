"""Saving and loading network parameters as ``.npz`` (never pickled)."""

from __future__ import annotations

import os
import zipfile
from typing import Any

import numpy as np

from .backend import to_numpy

__all__ = ["save_params", "load_params"]


def save_params(path: str | os.PathLike[str], net: Any) -> None:
    """Write ``net.params`` (as host arrays) and the layer sizes and activation to ``path`` (``.npz``)."""
    arrays = {key: to_numpy(value) for key, value in net.params.items()}
    np.savez(path, sizes=np.asarray(net.sizes, dtype=np.int64), activation=np.asarray(net.activation), **arrays)


def load_params(path: str | os.PathLike[str], net: Any) -> None:
    """Replace ``net.params`` with the arrays saved at ``path``, on the net's device and in its dtype.

    Raises ``ValueError`` (naming the file) when the file is unreadable or was saved
    from a network of another shape.
    """
    try:
        with np.load(path, allow_pickle=False) as saved:
            stored = {key: saved[key] for key in saved.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path}: not a saved xbackprop network ({exc})") from None
    sizes = stored.pop("sizes", None)
    stored.pop("activation", None)
    if sizes is not None and sizes.tolist() != list(net.sizes):
        raise ValueError(f"{path}: saved layer sizes {sizes.tolist()} differ from this network's {net.sizes}")
    if set(stored) != set(net.params):
        raise ValueError(f"{path}: holds {sorted(stored)}, the network needs {sorted(net.params)}")
    for key, value in net.params.items():
        if tuple(stored[key].shape) != tuple(value.shape):
            raise ValueError(f"{path}: {key} has shape {stored[key].shape}, the network needs {tuple(value.shape)}")
    for key in list(net.params):
        net.params[key] = net.xp.asarray(stored[key], dtype=net.dtype, device=net.device)
