"""Saving and loading network parameters as ``.npz`` (never pickled), and writing any output file safely."""

from __future__ import annotations

import os
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from .backend import to_numpy

__all__ = ["save_params", "load_params", "replace_atomically"]


@contextmanager
def replace_atomically(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    An error or interruption inside the block deletes the temporary file and leaves
    whatever was at ``path`` as it was. A new file gets mode 0644, a replaced one keeps
    its mode.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            mode = 0o644
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            temporary.unlink()
        raise


def save_params(path: str | os.PathLike[str], net: Any) -> None:
    """Write ``net.params`` (as host arrays) and the layer sizes and activation to ``path`` (``.npz`` format).

    The file is written exactly at ``path`` (no suffix is added) through a temporary
    file beside it, so an interrupted save leaves an earlier file intact.
    """
    arrays = {key: to_numpy(value) for key, value in net.params.items()}
    activation = np.asarray(net.activation if net.activation is not None else "")
    with replace_atomically(path) as temporary, open(temporary, "wb") as f:
        np.savez(f, sizes=np.asarray(net.sizes, dtype=np.int64), activation=activation, **arrays)


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
