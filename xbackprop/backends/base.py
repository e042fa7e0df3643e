"""What every backend record holds: :class:`Backend`, and the error for a library that cannot run here."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["Backend", "BackendUnavailableError", "import_namespace", "end_capture_after"]


class BackendUnavailableError(RuntimeError):
    """The requested array library is not installed or cannot run here."""


def _none(*_: Any) -> None:
    return None


@dataclass(frozen=True)
class Backend:
    """One array library, as xbackprop needs to know it; everything else takes namespaces from arrays.

    ``load()`` returns the Array API namespace (or raises :class:`BackendUnavailableError`); ``owns(xp)`` tells
    its namespace; ``parse_device(xp, text)`` turns ``"cuda:1"`` into a device; ``describe(device)`` names one
    for log lines; ``to_numpy(x)`` copies an array to the host; ``synchronize()`` waits for queued device
    work; ``check_dtype(xp, dtype)`` refuses a dtype the library would silently change; ``compile(fn)`` and
    ``compile_steps(step)`` compile where the library traces functions (else ``None``); ``capturer(like)``
    gives a CUDA-graph capturer for arrays like ``like`` (else ``None``). ``host``: its arrays are NumPy's;
    ``cuda_buffers``: its arrays are CUDA buffers MPI can take; ``falls_back``: when it cannot run, commands
    warn and use NumPy instead; ``indexing_hashes_devices``: its own indexing, ``concat`` and ``stack`` put the
    arrays' devices in a set, which fails where devices cannot be hashed (as CuPy's cannot), so the trainer reads
    and joins rows another way there (:func:`xbackprop.backend.rows`, :func:`xbackprop.backend.joined`).
    """

    name: str
    load: Callable[[], ModuleType]
    owns: Callable[[ModuleType], bool]
    parse_device: Callable[[ModuleType, str], Any]
    to_numpy: Callable[[Any], np.ndarray] = np.asarray
    describe: Callable[[Any], str] = str
    synchronize: Callable[[], None] = _none
    check_dtype: Callable[[ModuleType, Any], None] = _none
    compile: Callable[[Any], Any] | None = None
    compile_steps: Callable[[Any], Any] | None = None
    capturer: Callable[[Any], Any] = _none
    host: bool = False
    cuda_buffers: bool = False
    falls_back: bool = False
    indexing_hashes_devices: bool = False


def import_namespace(library: str, namespace: str, install_hint: str) -> ModuleType:
    """``namespace`` once ``library`` imports, or :class:`BackendUnavailableError` with ``install_hint``."""
    try:
        importlib.import_module(library)
        return importlib.import_module(namespace)
    except ImportError as exc:
        raise BackendUnavailableError(f"backend {library!r} is not installed ({exc}); {install_hint}") from None


def cpu_only(xp: ModuleType, device: str) -> Any:
    """``parse_device`` of a library whose only device is ``"cpu"``."""
    if device == "cpu":
        return "cpu"
    raise ValueError(f"device {device!r} is not available for this backend, only 'cpu'")


def end_capture_after(fn: Any, end_capture: Any) -> Any:
    """``fn()`` while a stream captures, then ``end_capture()``'s result. When ``fn`` fails, the capture is ended
    too and ``fn``'s error raised, not the error ending a broken capture raises."""
    try:
        fn()
    except BaseException:
        try:
            end_capture()
        except Exception:  # the capture is invalid because fn failed: fn's error is the cause to report
            pass
        raise
    return end_capture()
