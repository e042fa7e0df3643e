"""MNIST-format datasets on the host: IDX parsing with validation and local look-up.

Arrays here are host NumPy arrays; the trainer moves them to the device once.
Nothing is ever unpickled.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["DataError", "IDX_FILES", "read_idx", "find_dataset_dir", "load_split"]

#: Environment variable naming a folder with one sub-folder per dataset.
DATA_ENV = "XBACKPROP_DATA"

#: The four files of an IDX dataset, by split: (images, labels), without ``.gz``.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Where distributions install datasets (Debian's ``dataset-fashion-mnist``).
SYSTEM_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}

# IDX type codes (third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(ValueError):
    """A data file is missing, truncated, corrupt or inconsistent; the message names the file."""


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed) into a NumPy array of its native type.

    Checks the magic number, the rank (``ndim`` when given) and that the payload
    holds exactly the product of the dimensions. Raises :class:`DataError` naming
    the file otherwise.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    rank = data[3]
    if ndim is not None and rank != ndim:
        raise DataError(f"{path}: expected {ndim} dimensions, the header says {rank}")
    header = 4 + 4 * rank
    if len(data) < header:
        raise DataError(f"{path}: truncated header")
    shape = tuple(int(n) for n in np.frombuffer(data, dtype=">u4", count=rank, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: header says shape {shape} ({expected} bytes) but the file holds {len(data) - header} bytes"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_dataset_dir(name: str, data_dir: str | os.PathLike[str] | None = None, split: str = "test") -> Path | None:
    """The first folder holding ``split``'s two IDX files of dataset ``name``, or ``None``.

    Order: ``data_dir`` itself; ``$XBACKPROP_DATA/<name>/``; the system folder
    (Debian's ``/usr/share/datasets/fashion-mnist``).
    """
    candidates = []
    if data_dir is not None:
        candidates.append(Path(data_dir))
    if os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]) / name)
    if name in SYSTEM_DIRS:
        candidates.append(SYSTEM_DIRS[name])
    for folder in candidates:
        if all(_find_file(folder, stem) for stem in IDX_FILES[split]):
            return folder
    return None


def load_split(folder: str | os.PathLike[str], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, H, W)`` uint8 and labels ``(N,)`` uint8 of one split from an IDX folder."""
    folder = Path(folder)
    images_stem, labels_stem = IDX_FILES[split]
    paths = []
    for stem in (images_stem, labels_stem):
        path = _find_file(folder, stem)
        if path is None:
            raise DataError(f"{folder / stem}(.gz): file not found")
        paths.append(path)
    images = read_idx(paths[0], ndim=3)
    labels = read_idx(paths[1], ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{paths[1]}: {labels.shape[0]} labels for {images.shape[0]} images in {paths[0].name}")
    return images, labels
