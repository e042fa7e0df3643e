"""IDX files (MNIST's format), read with their headers checked against what the file holds."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import DataError

# IDX type codes (third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


#: The most bytes an IDX file's payload may hold (MNIST's training images hold 47 MB): a header
#: that promises more is refused before anything is decompressed.
MAX_IDX_BYTES = 1 << 30


def read_idx(
    path: str | os.PathLike[str], *, ndim: int | None = None, max_bytes: int | None = None, first: int | None = None
) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed) into a NumPy array of its native type.

    Checks the magic number, the rank (``ndim`` when given) and that the payload
    holds exactly the product of the dimensions, reading (and decompressing) no more
    than the header justifies, and nothing at all when that exceeds ``max_bytes``
    (default :data:`MAX_IDX_BYTES`). With ``first``, only the first ``first`` items
    along the first axis are read (the rest of the file is not looked at). Raises
    :class:`DataError` naming the file otherwise.
    """
    path = Path(path)
    limit = MAX_IDX_BYTES if max_bytes is None else max_bytes
    try:
        with _open_idx(path) as f:
            shape, dtype = _read_header(f, path, ndim)
            if first is not None and shape:
                shape = (min(shape[0], first), *shape[1:])
            expected = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
            if expected > limit:
                raise DataError(f"{path}: header says shape {shape} ({expected:,} bytes), more than the "
                                f"{limit:,} bytes an IDX file may hold here")
            payload = f.read(expected + (first is None))  # one byte more than promised tells a longer file
            if len(payload) > expected:
                held = f"more than {expected + _count_rest(f, _EXCESS_READ):,} bytes"
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(payload) < expected:
        held = f"{len(payload)} bytes"
    if len(payload) != expected:
        raise DataError(f"{path}: header says shape {shape} ({expected} bytes) but the file holds {held}")
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def idx_shape(path: str | os.PathLike[str], *, ndim: int | None = None) -> tuple[int, ...]:
    """The shape an IDX file's header declares, read from the header alone."""
    path = Path(path)
    try:
        with _open_idx(path) as f:
            return _read_header(f, path, ndim)[0]
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def check_idx_size(path: str | os.PathLike[str], *, ndim: int | None = None) -> tuple[int, ...]:
    """The shape an IDX file's header declares, once the file is seen to hold exactly that many bytes (streamed
    through, never held: a file that promises more than it has, or has more, is a :class:`DataError`)."""
    path = Path(path)
    try:
        with _open_idx(path) as f:
            shape, dtype = _read_header(f, path, ndim)
            expected = math.prod(shape) * dtype.itemsize
            held = _count_rest(f, expected + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if held != expected:
        said = f"more than {expected:,}" if held > expected else f"{held:,}"
        raise DataError(f"{path}: header says shape {shape} ({expected:,} bytes) but the file holds {said} bytes")
    return shape


def _open_idx(path: Path) -> Any:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_header(f: Any, path: Path, ndim: int | None) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and item type an IDX header declares; ``f`` is left at the first item."""
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {magic.hex() or 'empty'})")
    rank = magic[3]
    if ndim is not None and rank != ndim:
        raise DataError(f"{path}: expected {ndim} dimensions, the header says {rank}")
    dims = f.read(4 * rank)
    if len(dims) < 4 * rank:
        raise DataError(f"{path}: truncated header")
    return struct.unpack(f">{rank}I", dims), np.dtype(_IDX_DTYPES[magic[2]])


_EXCESS_READ = 64 << 20  # how far past its promise a file is read, to tell corrupt data from extra data


def _count_rest(f: Any, limit: int) -> int:
    """Bytes left in ``f`` (read and dropped in blocks), up to ``limit``: the rest of a gzip stream is
    decompressed and its checksum checked, so a corrupt stream raises here rather than passing as longer."""
    count = 0
    while count < limit:
        block = f.read(min(1 << 20, limit - count))
        if not block:
            break
        count += len(block)
    return count
