"""The saved-network format: ``.npz`` files (never pickled), measured before they are trusted."""

from __future__ import annotations

import math
import os
import stat
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .architecture import OPTIONS, Architecture, option_default
from .backend import to_numpy
from .files import replace_atomically

__all__ = ["SavedNet", "SavesParams", "save_params", "read_saved", "load_params"]


@dataclass(frozen=True)
class SavedNet:
    """What a saved network file holds: host ``params`` and ``buffers`` (running statistics), layer ``sizes``,
    the ``dataset`` it was trained on, and the :class:`~xbackprop.architecture.Architecture` options the file
    states (``options``, by field name: activation, batch normalization, dropout ratio)."""

    params: dict[str, np.ndarray]
    sizes: list[int] | None
    dataset: str | None
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def architecture(self) -> Architecture | None:
        """The net the file describes, or ``None`` where it does not say its sizes and activation."""
        if self.sizes is None or self.activation is None:
            return None
        return Architecture(tuple(self.sizes), **self.options)

    @property
    def activation(self) -> str | None:
        return self.options.get("activation")

    @property
    def batchnorm(self) -> bool:
        return bool(self.options.get("batchnorm", False))

    @property
    def dropout_ratio(self) -> float | None:
        return self.options.get("dropout")


#: Saved buffers are stored under this prefix, beside the parameters.
BUFFER_PREFIX = "buffer."


#: The architecture's options a file states, by the member that holds each.
_SAVED_OPTIONS = {option.saved_as: name for name, option in OPTIONS.items() if option.saved_as is not None}
#: Members that describe the network rather than hold its numbers.
_DESCRIPTIONS = ("sizes", "dataset", *_SAVED_OPTIONS)


def save_params(path: str | os.PathLike[str], net: Any, *, dataset: str | None = None) -> None:
    """Write ``net.params`` and ``net.buffers`` (as host arrays), the layer sizes, the options of the net's
    ``architecture`` (activation, batch normalization, dropout) and ``dataset``'s name to ``path``.

    ``.npz`` format, written exactly at ``path`` (no suffix is added) through a
    temporary file beside it, so an interrupted save leaves an earlier file intact.
    """
    arrays = {key: to_numpy(value) for key, value in net.params.items()}
    arrays.update({BUFFER_PREFIX + key: to_numpy(value) for key, value in getattr(net, "buffers", {}).items()})
    described = {"sizes": np.asarray(net.sizes, dtype=np.int64)}
    if dataset is not None:
        described["dataset"] = np.asarray(dataset)
    architecture = getattr(net, "architecture", None)
    for member, name in _SAVED_OPTIONS.items() if architecture is not None else ():
        value = getattr(architecture, name)
        if value is None or value is False:  # an option left off is not written
            continue
        if value != option_default(name) or OPTIONS[name].saved_when_default:
            described[member] = np.asarray(int(value) if isinstance(value, bool) else value)
    with replace_atomically(path) as temporary, open(temporary, "wb") as f:
        np.savez(f, **described, **arrays)


#: The most bytes a saved network's arrays may hold together (784-1000-1000-10 in float64 is 15 MB).
MAX_SAVED_BYTES = 1 << 30


#: What a zip archive may add to its arrays: names, headers, the directory.
MAX_ARCHIVE_OVERHEAD = 1 << 20


#: Widths a saved network may declare, at most (784-1000-1000-10 is far below).
MAX_WIDTH = 1 << 20


def _inspect_npz(path: str | os.PathLike[str]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{name: (shape, dtype)}`` of every array in an ``.npz``, read from the headers alone.

    Refuses, before any array is read: a file that is not a zip archive (an ``.npy``,
    say), members that are not ``.npy`` arrays, object arrays, a member whose declared
    size differs from what its header implies (a zip bomb), and totals above
    :data:`MAX_SAVED_BYTES`.
    """
    status = os.stat(path)  # follows a symbolic link: what would be read
    if not stat.S_ISREG(status.st_mode):
        raise ValueError("not a regular file (a device, pipe or folder is never read)")
    if status.st_size > MAX_SAVED_BYTES + MAX_ARCHIVE_OVERHEAD:
        raise ValueError(f"{status.st_size:,} bytes, more than a saved network may hold")
    arrays = {}
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"holds {info.filename!r}, which is not an array")
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                header_size = f.tell()
            if dtype.hasobject:
                raise ValueError(f"{info.filename[:-4]} holds Python objects")
            size = math.prod(shape) * dtype.itemsize
            if info.file_size != header_size + size:
                raise ValueError(f"{info.filename[:-4]} claims {info.file_size:,} bytes, its header {size:,}")
            total += size
            if total > MAX_SAVED_BYTES:
                raise ValueError(f"its arrays hold more than {MAX_SAVED_BYTES:,} bytes")
            arrays[info.filename[:-4]] = (tuple(shape), dtype)
    return arrays


#: What each describing member must be: its dtype kinds and largest number of elements.
#: The dtype kinds a saved option may have, by the type of its default.
_KINDS = {str: "U", bool: "iub", float: "f", int: "iu"}
_DESCRIBED_AS = {"sizes": ("iu", 64), "dataset": ("U", 1),
                 **{member: (_KINDS[type(option_default(name)) if option_default(name) is not None else float], 1)
                    for member, name in _SAVED_OPTIONS.items()}}


def _check_descriptions(path: str | os.PathLike[str], members: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """The describing members hold what :func:`save_params` writes (a structured ``sizes`` is refused)."""
    for name, (kinds, most) in _DESCRIBED_AS.items():
        if name in members:
            shape, dtype = members[name]
            rank_ok = len(shape) == 1 if name == "sizes" else len(shape) == 0
            if (dtype.kind not in kinds or not rank_ok or math.prod(shape) > most
                    or (dtype.kind == "U" and dtype.itemsize > 4096)):
                raise ValueError(f"{path}: {name} holds {dtype} of shape {shape}, not what xbackprop saves")


def read_saved(path: str | os.PathLike[str], expected: dict[str, tuple[int, ...]] | None = None) -> SavedNet:
    """The contents of a file written by :func:`save_params` (never unpickled).

    Every member's header is checked before any array is read; with ``expected``
    (``{name: shape}``) the parameters must have exactly those shapes, so a file
    made for another network is refused without reading it. Raises ``ValueError``
    naming the file when it is missing, unreadable, oversized or not a saved network.
    """
    try:
        members = _inspect_npz(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        reason = "not an .npz archive" if isinstance(exc, zipfile.BadZipFile) else exc
        raise ValueError(f"{path}: not a saved xbackprop network ({reason})") from None
    params = {name: spec for name, spec in members.items()
              if name not in _DESCRIPTIONS and not name.startswith(BUFFER_PREFIX)}
    for name, (shape, dtype) in params.items():
        if dtype.kind != "f":
            raise ValueError(f"{path}: {name} holds {dtype} numbers; parameters must be real floating point")
        if expected is not None and name in expected and shape != tuple(expected[name]):
            raise ValueError(f"{path}: {name} has shape {shape}, the network needs {tuple(expected[name])}")
    for name, (_, dtype) in members.items():
        if name.startswith(BUFFER_PREFIX) and dtype.kind not in "fi":
            raise ValueError(f"{path}: {name} holds {dtype} numbers; buffers are real or integer numbers")
    _check_descriptions(path, members)
    if expected is not None and set(params) != set(expected):
        raise ValueError(f"{path}: holds {sorted(params)}, the network needs {sorted(expected)}")
    try:
        with np.load(path, allow_pickle=False) as saved:
            stored = {key: saved[key] for key in saved.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path}: not a saved xbackprop network ({exc})") from None
    for key, value in stored.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"{path}: {key} holds NaN or infinite numbers; a net cannot be loaded from them")
    described = {key: stored.pop(key, None) for key in _DESCRIPTIONS}
    buffers = {key[len(BUFFER_PREFIX):]: stored.pop(key) for key in list(stored) if key.startswith(BUFFER_PREFIX)}
    dataset = described["dataset"]
    dataset = str(dataset) if dataset is not None and dataset.ndim == 0 and str(dataset) else None
    sizes = described["sizes"]
    if sizes is not None:
        sizes = [int(n) for n in sizes.ravel()]
        if len(sizes) < 2 or not all(0 < n <= MAX_WIDTH for n in sizes):
            raise ValueError(f"{path}: layer sizes {sizes} are not those of a network")
    options = {name: _option_value(name, described[member]) for member, name in _SAVED_OPTIONS.items()
               if described[member] is not None and described[member].size == 1}
    try:
        # each option's own check (an activation xbackprop has, a ratio in [0, 1), a conv net's sizes)
        if sizes is not None:
            Architecture(tuple(sizes), **options)
        else:
            Architecture((1, 1), **{name: value for name, value in options.items() if name != "net"})
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    for key, value in buffers.items():
        if key.startswith("running_var") and value.dtype.kind == "f" and (value < 0).any():
            raise ValueError(f"{path}: {key} holds negative variances; a net cannot be loaded from them")
    return SavedNet(stored, sizes, dataset, buffers, options)


def _option_value(name: str, stored: np.ndarray) -> Any:
    """A saved option as its field's type: a string, a switch, a number."""
    value = stored.ravel()[0]
    default = option_default(name)
    if isinstance(default, str):
        return str(value)
    return bool(value) if isinstance(default, bool) else float(value)


def _check_representable(path: str | os.PathLike[str], key: str, stored: np.ndarray, dtype: Any) -> None:
    """``ValueError`` where a stored float would overflow to infinity in the net's ``dtype`` (a float64 weight of
    1e39 is inf in float32)."""
    name = str(dtype).rsplit(".", 1)[-1]
    if stored.dtype.kind != "f" or name not in ("float16", "float32", "float64"):
        return
    largest = float(np.finfo(np.dtype(name)).max)
    if stored.size and float(np.abs(stored).max()) > largest:
        raise ValueError(f"{path}: {key} holds values up to {float(np.abs(stored).max()):.3g}, beyond {name}'s "
                         f"largest ({largest:.3g}): loaded in {name} they would be infinite")


def load_params(path: str | os.PathLike[str], net: Any, *, saved: SavedNet | None = None) -> None:
    """Replace ``net.params`` with the arrays saved at ``path``, on the net's device and in its dtype.

    Raises ``ValueError`` (naming the file) when the file is unreadable or was saved
    from a network of another shape or activation; the net is then left as it was.
    """
    if saved is None:
        saved = read_saved(path, expected={key: tuple(value.shape) for key, value in net.params.items()})
    stored = saved.params
    if saved.sizes is not None and saved.sizes != list(net.sizes):
        raise ValueError(f"{path}: saved layer sizes {saved.sizes} differ from this network's {net.sizes}")
    if saved.activation is not None and net.activation is not None and saved.activation != net.activation:
        raise ValueError(f"{path}: saved from a {saved.activation} network, this one is {net.activation}")
    if set(stored) != set(net.params):
        raise ValueError(f"{path}: holds {sorted(stored)}, the network needs {sorted(net.params)}")
    buffers = getattr(net, "buffers", {})
    if set(saved.buffers) != set(buffers):
        raise ValueError(f"{path}: holds the buffers {sorted(saved.buffers)}, the network needs {sorted(buffers)} "
                         "(batch normalization and dropout must match)")
    for table, mine in ((stored, net.params), (saved.buffers, buffers)):
        for key, value in mine.items():
            if tuple(table[key].shape) != tuple(value.shape):
                raise ValueError(f"{path}: {key} has shape {table[key].shape}, the network needs {tuple(value.shape)}")
    for table, mine in ((stored, net.params), (saved.buffers, buffers)):
        for key, value in mine.items():
            _check_representable(path, key, table[key], value.dtype)
    converted = {key: net.xp.asarray(stored[key], dtype=net.dtype, device=net.device) for key in net.params}
    converted_buffers = {key: net.xp.asarray(saved.buffers[key], dtype=value.dtype, device=net.device)
                         for key, value in buffers.items()}
    net.params.update(converted)  # all at once, after every check and conversion
    buffers.update(converted_buffers)


class SavesParams:
    """The book's ``save_params``/``load_params`` methods of its conv nets, writing the ``.npz`` format of
    :func:`save_params` (whatever the file's name: the book's ``params.pkl`` is never pickled)."""

    def save_params(self, file_name: str | os.PathLike[str] = "params.pkl") -> None:
        save_params(file_name, self)

    def load_params(self, file_name: str | os.PathLike[str] = "params.pkl") -> None:
        load_params(file_name, self)
