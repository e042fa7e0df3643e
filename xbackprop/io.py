"""Saving and loading network parameters as ``.npz`` (never pickled), and writing any output file safely."""

from __future__ import annotations

import math
import os
import shutil
import signal
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backend import to_numpy
from .memory import check_fits

__all__ = [
    "SavedNet",
    "save_params",
    "read_saved",
    "load_params",
    "load_net",
    "replace_atomically",
    "replace_folder_atomically",
    "plan_outputs",
]


@contextmanager
def replace_folder_atomically(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new empty folder beside ``folder``; when the block succeeds it takes ``folder``'s place whole.

    An error or interruption inside the block removes the new folder and leaves
    ``folder`` as it was (its old files all there, none of the new). The swap itself is
    two renames with SIGINT, SIGTERM and SIGHUP held back between them, so ``folder``
    is never found missing or half written.
    """
    folder = Path(os.path.realpath(folder))
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".partial"))
    try:
        yield staging
        os.chmod(staging, 0o755)
        old = folder.with_name(f"{staging.name}.old")
        held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            if folder.exists():
                os.rename(folder, old)
            os.rename(staging, folder)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def replace_atomically(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    An error or interruption inside the block deletes the temporary file and leaves
    whatever was at ``path`` as it was. A new file gets mode 0644, a replaced one keeps
    its mode. A symbolic link is followed, so the file it points to is replaced; a path
    that holds anything but a regular file (a folder, a device such as ``/dev/full``)
    raises ``ValueError`` and is left alone.
    """
    path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file():
        raise ValueError(f"{path}: exists and is not a regular file; refusing to replace it")
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
        with open(temporary, "rb") as written:  # on disk before the name points at it
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            temporary.unlink()
        raise


def plan_outputs(outputs: dict[str, str | os.PathLike[str]],
                 inputs: Iterable[tuple[str, str | os.PathLike[str]]] = (),
                 updates: Iterable[tuple[str, str]] = ()) -> dict[str, Path]:
    """Check a command's output files before any work: ``{flag: resolved path}`` or ``ValueError`` naming the flag.

    Each path is resolved (symbolic links followed); its folder must exist and take a
    new file, which is tried by creating and removing an empty one beside the target (a
    read-only or pseudo file system such as ``/proc`` fails here, not after the work);
    the target must not be a folder or anything but a regular file; no two outputs may
    be the same file, and no output may be one of the ``inputs``, ``(flag, path)`` pairs
    (``--load``, data files), except the ``updates``, ``(output flag, input flag)`` pairs that
    may name one file (``("--save", "--load")``: train on, then save over the loaded net).
    """
    resolved: dict[str, Path] = {}
    for flag, path in outputs.items():
        target = Path(os.path.realpath(path))
        if target.is_dir():
            raise ValueError(f"{flag} {path}: is a folder; give a file name")
        if target.exists() and not target.is_file():
            raise ValueError(f"{flag} {path}: exists and is not a regular file")
        if not target.parent.is_dir():
            raise ValueError(f"{flag} {path}: folder {target.parent} does not exist")
        try:
            fd, trial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
            os.close(fd)
            os.unlink(trial)
        except OSError as exc:
            raise ValueError(f"{flag} {path}: folder {target.parent} does not take new files "
                             f"({exc.strerror or exc})") from None
        for other, seen in resolved.items():
            if seen == target:
                raise ValueError(f"{other} and {flag} name the same file, {path}")
        resolved[flag] = target
    allowed = set(updates)
    for flag, path in inputs:
        source = Path(os.path.realpath(path))
        for other, target in resolved.items():
            if source == target and (other, flag) not in allowed:
                raise ValueError(f"{other} {outputs[other]} would overwrite {flag}'s file {path}")
    return resolved


@dataclass(frozen=True)
class SavedNet:
    """What a saved network file holds: host ``params`` and ``buffers`` (running statistics), layer ``sizes``,
    ``activation``, whether it has batch normalization, its dropout ratio (``None``: no dropout) and ``dataset``."""

    params: dict[str, np.ndarray]
    sizes: list[int] | None
    activation: str | None
    dataset: str | None
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    batchnorm: bool = False
    dropout_ratio: float | None = None


#: Saved buffers are stored under this prefix, beside the parameters.
BUFFER_PREFIX = "buffer."
#: Members that describe the network rather than hold its numbers.
_DESCRIPTIONS = ("sizes", "activation", "dataset", "batchnorm", "dropout_ratio")


def save_params(path: str | os.PathLike[str], net: Any, *, dataset: str | None = None) -> None:
    """Write ``net.params`` and ``net.buffers`` (as host arrays), the layer sizes, activation, batch
    normalization and dropout, and ``dataset``'s name to ``path``.

    ``.npz`` format, written exactly at ``path`` (no suffix is added) through a
    temporary file beside it, so an interrupted save leaves an earlier file intact.
    """
    arrays = {key: to_numpy(value) for key, value in net.params.items()}
    arrays.update({BUFFER_PREFIX + key: to_numpy(value) for key, value in getattr(net, "buffers", {}).items()})
    described = {"sizes": np.asarray(net.sizes, dtype=np.int64)}
    if getattr(net, "use_batchnorm", False):
        described["batchnorm"] = np.asarray(1, dtype=np.int64)
    if getattr(net, "use_dropout", False):
        described["dropout_ratio"] = np.asarray(net.dropout_ratio, dtype=np.float64)
    for key, value in (("activation", net.activation), ("dataset", dataset)):
        if value is not None:
            described[key] = np.asarray(value)
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
_DESCRIBED_AS = {"sizes": ("iu", 64), "activation": ("U", 1), "dataset": ("U", 1), "batchnorm": ("iub", 1),
                 "dropout_ratio": ("f", 1)}


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
    text = {key: str(value) if value is not None and value.ndim == 0 and str(value) else None
            for key, value in described.items() if key in ("activation", "dataset")}
    if text["activation"] is not None:
        from .nets import ACTIVATIONS

        if text["activation"] not in ACTIVATIONS:
            raise ValueError(f"{path}: activation {text['activation']!r} is none of xbackprop's "
                             f"({', '.join(ACTIVATIONS)})")
    sizes = described["sizes"]
    if sizes is not None:
        sizes = [int(n) for n in sizes.ravel()]
        if len(sizes) < 2 or not all(0 < n <= MAX_WIDTH for n in sizes):
            raise ValueError(f"{path}: layer sizes {sizes} are not those of a network")
    batchnorm = described["batchnorm"] is not None and bool(described["batchnorm"].ravel()[:1].any())
    ratio = described["dropout_ratio"]
    dropout_ratio = float(ratio.ravel()[0]) if ratio is not None and ratio.size == 1 else None
    if dropout_ratio is not None and not 0.0 <= dropout_ratio < 1.0:
        raise ValueError(f"{path}: dropout ratio {dropout_ratio} is not in [0, 1)")
    for key, value in buffers.items():
        if key.startswith("running_var") and value.dtype.kind == "f" and (value < 0).any():
            raise ValueError(f"{path}: {key} holds negative variances; a net cannot be loaded from them")
    return SavedNet(stored, sizes, text["activation"], text["dataset"], buffers, batchnorm, dropout_ratio)


def load_net(path: str | os.PathLike[str], *, xp: Any = None, device: Any = None, dtype: Any = None) -> tuple[Any, SavedNet]:
    """A :class:`~xbackprop.MultiLayerNet` rebuilt from a saved file (its sizes and activation), and the file's contents."""
    from .nets import ACTIVATIONS, MultiLayerNet

    saved = read_saved(path)
    if saved.sizes is None or saved.activation not in ACTIVATIONS:
        raise ValueError(f"{path}: does not say the network's layer sizes and activation")
    expected = _shapes_of(saved.sizes, saved.batchnorm)
    shapes = {key: tuple(value.shape) for key, value in saved.params.items()}
    if shapes != expected:
        net_name = f"a {'-'.join(map(str, saved.sizes))} network"
        unknown, missing = sorted(set(shapes) - set(expected)), sorted(set(expected) - set(shapes))
        wrong = [key for key in expected if key in shapes and shapes[key] != expected[key]]
        if missing:
            raise ValueError(f"{path}: lacks {', '.join(missing)}, which {net_name} needs")
        if unknown:
            raise ValueError(f"{path}: holds {', '.join(unknown)}, which {net_name} does not have")
        raise ValueError(f"{path}: {wrong[0]} has shape {shapes[wrong[0]]}, {net_name} needs {expected[wrong[0]]}")
    itemsize = 4 if dtype in ("float32", getattr(xp, "float32", None)) else 8  # unknown: count float64
    check_fits(3 * itemsize * sum(math.prod(shape) for shape in expected.values()), f"{path}'s network")
    net = MultiLayerNet(saved.sizes[0], saved.sizes[1:-1], saved.sizes[-1], activation=saved.activation,
                        use_dropout=saved.dropout_ratio is not None, dropout_ratio=saved.dropout_ratio or 0.5,
                        use_batchnorm=saved.batchnorm, xp=xp, device=device, dtype=dtype)
    load_params(path, net, saved=saved)
    return net, saved


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


def _shapes_of(sizes: list[int], batchnorm: bool) -> dict[str, tuple[int, ...]]:
    """The parameter shapes of a MultiLayerNet with layer ``sizes``: W1 (D, H1), b1 (H1,), (gamma1, beta1,) ..."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        shapes[f"W{i}"], shapes[f"b{i}"] = (fan_in, fan_out), (fan_out,)
        if batchnorm and i < len(sizes) - 1:
            shapes[f"gamma{i}"] = shapes[f"beta{i}"] = (fan_out,)
    return shapes


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
