"""The one module that knows array libraries by name, through their records in :mod:`xbackprop.backends`.

Everything else in xbackprop takes its namespace from its inputs with
``array_api_compat.array_namespace``. This module picks a namespace by name
(``numpy``, ``cupy``, ``torch``, ``jax``, ``array_api_strict``),
falls back from CuPy to NumPy where no GPU is usable, resolves dtypes and
devices, and moves arrays back to host NumPy for printing, plotting and saving.
Host arrays go to a namespace with the standard's ``xp.asarray(a, device=...)``;
seeded host random numbers come from :func:`host_rng` (the standard has none).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from .backends.array_api_strict import ARRAY_API_STRICT
from .backends.base import Backend, BackendUnavailableError
from .backends.cupy import CUPY
from .backends.jax import JAX
from .backends.numpy import NUMPY
from .backends.torch import TORCH

__all__ = [
    "BACKENDS",
    "FLOAT_DTYPES",
    "BackendUnavailableError",
    "get_namespace",
    "backend_name",
    "resolve_dtype",
    "require_dtype",
    "enable_float64",
    "resolve_device",
    "describe_device",
    "to_numpy",
    "host_rng",
    "synchronize",
    "is_host_namespace",
    "is_cuda_namespace",
    "compile_function",
    "compile_steps",
    "capturer_for",
    "thread_limit",
    "usable_cores",
]

#: Every backend by its name, in the order ``--backend`` lists them. Dask is not among them: its arrays are
#: lazy, so a training loop would grow one graph for the whole run.
RECORDS: dict[str, Backend] = {record.name: record for record in (NUMPY, CUPY, TORCH, JAX, ARRAY_API_STRICT)}

#: Backend names accepted by :func:`get_namespace` and the ``XP`` variable.
BACKENDS = tuple(RECORDS)

#: Floating dtypes parameters and data may take, by name.
FLOAT_DTYPES = ("float32", "float64")

#: Environment variable that names the backend when none is passed.
BACKEND_ENV = "XP"
#: Set to ``1`` to make an unusable CuPy an error instead of a NumPy fallback.
STRICT_ENV = "XBACKPROP_STRICT_BACKEND"



def get_namespace(name: str | ModuleType | None = None, *, strict: bool | None = None) -> ModuleType:
    """Return the Array API namespace for a backend name.

    Parameters
    ----------
    name : str, namespace or None
        One of :data:`BACKENDS`. ``None`` reads the ``XP`` environment variable
        (default ``"numpy"``). A namespace module is returned unchanged.
    strict : bool, optional
        When CuPy is asked for but cannot run (not installed, no GPU, no driver),
        ``strict=False`` warns once and returns NumPy; ``strict=True`` raises
        :class:`BackendUnavailableError`. ``None`` reads ``XBACKPROP_STRICT_BACKEND``
        (``1``/``true``/``yes`` mean strict; default not strict).

    Raises
    ------
    ValueError
        For a name that is not one of :data:`BACKENDS`.
    BackendUnavailableError
        For an installed-but-unusable or missing backend other than the CuPy fallback.
    """
    if isinstance(name, ModuleType):
        return name
    if name is None:
        name = os.environ.get(BACKEND_ENV, "").strip() or "numpy"
    if not isinstance(name, str):
        raise TypeError(f"a backend is a name such as 'numpy' or a namespace module, not {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
    if strict is None:
        strict = os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
    try:
        return RECORDS[key].load()
    except BackendUnavailableError as exc:
        if not RECORDS[key].falls_back or strict:
            raise
        warnings.warn(f"{exc}; falling back to NumPy on the CPU", RuntimeWarning, stacklevel=2)
        return RECORDS["numpy"].load()


@functools.cache
def record_of(xp: ModuleType) -> Backend | None:
    """The record of the library ``xp`` belongs to (``None`` for a namespace xbackprop does not know)."""
    return next((record for record in RECORDS.values() if record.owns(xp)), None)


def backend_name(xp: ModuleType) -> str:
    """The :data:`BACKENDS` name of a namespace (``"numpy"``, ``"torch"``, ...)."""
    record = record_of(xp)
    return record.name if record is not None else getattr(xp, "__name__", repr(xp))


def require_dtype(xp: ModuleType, dtype: Any) -> Any:
    """``dtype``, or ``ValueError`` where ``xp`` would silently compute in another (JAX without x64).

    JAX turns float64 into float32 unless its process-wide x64 switch is on; xbackprop
    never flips it, so a float64 computation on JAX asks the user to.
    """
    record = record_of(xp)
    if record is not None:
        record.check_dtype(xp, dtype)
    return dtype


def enable_float64(xp: ModuleType) -> None:
    """Turn on JAX's process-wide float64 support (nothing to do for other namespaces).

    For applications that were asked for float64 on JAX (``python -m xbackprop.train
    --backend jax --dtype float64``, ``python -m xbackprop.gradcheck --backend jax``);
    the library itself never calls it.
    """
    if array_api_compat.is_jax_namespace(xp):
        import jax

        jax.config.update("jax_enable_x64", True)


def resolve_dtype(xp: ModuleType, dtype: Any = None, device: Any = None) -> Any:
    """A real floating dtype of ``xp``: a name such as ``"float64"`` is looked up; ``None`` gives the
    namespace's default real floating dtype on ``device`` (float64 for NumPy, as the book's
    ``np.random.randn``; float32 for PyTorch). Anything else raises ``ValueError``."""
    if dtype is None:
        return xp.__array_namespace_info__().default_dtypes(device=device)["real floating"]
    if isinstance(dtype, str):
        if dtype not in FLOAT_DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}; use 'float32' or 'float64'")
        return require_dtype(xp, getattr(xp, dtype))
    if dtype not in (xp.float32, xp.float64):
        raise ValueError(f"unsupported dtype {dtype!r}; parameters need a real floating dtype, float32 or float64")
    return require_dtype(xp, dtype)


def resolve_device(xp: ModuleType, device: Any = None) -> Any:
    """A device of ``xp``: ``None`` gives its default; a string such as ``"cuda:1"`` is parsed and tried.

    Raises ``ValueError`` for a device the backend does not have or cannot use
    (``cuda`` on a CPU-only PyTorch build, say), before any work is done on it.
    """
    if device is None or not isinstance(device, str):
        return device
    try:
        resolved = _parse_device(xp, device)
        to_numpy(xp.zeros((1,), device=resolved))  # a device on paper may hold no data (torch's "meta")
    except Exception as exc:  # each backend raises its own types here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"device {device!r} cannot be used with {backend_name(xp)}: {reason}") from None
    return resolved


def resolve_placement(xp: Any = None, device: Any = None, dtype: Any = None) -> tuple[ModuleType, Any, Any]:
    """Where and in what a net's parameters are made: the namespace (:func:`get_namespace`), the device
    (:func:`resolve_device`) and the dtype on it (:func:`resolve_dtype`), as every net's constructor takes them."""
    xp = get_namespace(xp)
    device = resolve_device(xp, device)
    return xp, device, resolve_dtype(xp, dtype, device)


def _parse_device(xp: ModuleType, device: str) -> Any:
    record = record_of(xp)
    if record is None:
        raise ValueError(f"device {device!r} is not available for backend {backend_name(xp)!r}")
    return record.parse_device(xp, device)


def describe_device(xp: ModuleType, device: Any = None) -> str:
    """A short human-readable device name for log lines, e.g. ``"cpu"`` or ``"cuda:0 (NVIDIA H100)"``."""
    if device is None:
        device = array_api_compat.device(xp.empty((0,)))
    record = record_of(xp)
    return record.describe(device) if record is not None else str(device)


def to_numpy(x: Any) -> np.ndarray:
    """A host NumPy copy (or view) of any supported array, for printing, plotting and saving."""
    if isinstance(x, np.ndarray):
        return x
    record = record_of(array_api_compat.array_namespace(x)) if array_api_compat.is_array_api_obj(x) else None
    return np.asarray(x) if record is None else record.to_numpy(x)


def rows(x: Any, start: int, stop: int, *, xp: ModuleType | None = None) -> Any:
    """``x[start:stop]`` along the first axis (``x`` itself where that is all of it). Where the library's own
    indexing hashes the array's device (array-api-strict's does, which the CPU check of the GPU's rules runs on
    devices that cannot be hashed), a copy gathered by ``take`` at positions made on the device."""
    if start == 0 and stop == x.shape[0]:
        return x
    xp = array_api_compat.array_namespace(x) if xp is None else xp
    record = record_of(xp)
    if record is None or not record.indexing_hashes_devices:
        return x[start:stop, ...]
    return xp.take(x, xp.arange(start, stop, device=array_api_compat.device(x)), axis=0)


def joined(pieces: list[Any], *, xp: ModuleType | None = None) -> Any:
    """The 0-D or 1-D ``pieces`` one after another in one 1-D array (their ``concat``); where the library's own
    ``concat`` hashes the device (see :func:`rows`), written into place piece by piece."""
    xp = array_api_compat.array_namespace(*pieces) if xp is None else xp
    flat = [xp.reshape(piece, (-1,)) for piece in pieces]
    record = record_of(xp)
    if record is None or not record.indexing_hashes_devices:
        return xp.concat(flat)
    out = xp.empty((sum(piece.shape[0] for piece in flat),), dtype=flat[0].dtype,
                   device=array_api_compat.device(flat[0]))
    start = 0
    for piece in flat:
        out[start : start + piece.shape[0]] = piece  # array-api-strict's arrays are writable
        start += piece.shape[0]
    return out


def host_rng(seed: int | None = None) -> np.random.Generator:
    """NumPy's ``Generator`` on the host: the standard has no random numbers."""
    return np.random.default_rng(seed)


def synchronize(xp: ModuleType) -> None:
    """Wait for queued device work (CuPy, torch CUDA); a no-op on the CPU backends."""
    record = record_of(xp)
    if record is not None:
        record.synchronize()


def is_host_namespace(xp: ModuleType) -> bool:
    """Whether arrays of ``xp`` are host NumPy arrays (buffers MPI and NumPy can use directly)."""
    record = record_of(xp)
    return record is not None and record.host


def is_cuda_namespace(xp: ModuleType) -> bool:
    """Whether arrays of ``xp`` are CUDA device buffers (``__cuda_array_interface__``) MPI can take."""
    record = record_of(xp)
    return record is not None and record.cuda_buffers


def compile_function(fn: Any, xp: ModuleType) -> Any:
    """``fn`` compiled for ``xp`` where the backend traces whole functions (``jax.jit``), else ``fn`` itself.

    ``fn`` must be a pure function of its array (and dict-of-array) arguments with
    no Python branches on array values. Eager JAX pays a dispatch for every
    operation; compiled, a training step's few dozen operations run as one program.
    """
    record = record_of(xp)
    return fn if record is None or record.compile is None else record.compile(fn)


def compile_steps(step: Any, xp: ModuleType) -> Any:
    """Many training steps per call where the backend compiles loops, else ``None``.

    ``step(params, state, x_all, t_all, index) -> (params, state, loss)`` must be pure.
    The result, ``run(params, state, x_all, t_all, indices) -> (params, state, losses)``,
    applies it once per row of ``indices`` ``(K, batch)`` (on JAX, one ``lax.scan`` in one ``jit``).
    Elsewhere ``None``: the caller steps eagerly.
    """
    record = record_of(xp)
    return None if record is None or record.compile_steps is None else record.compile_steps(step)


#: Environment variables by which a user sets the CPU libraries' thread counts; set, they win.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which a container or ``taskset`` narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[None]:
    """For the block: BLAS and OpenMP pools (threadpoolctl) and PyTorch's intra-op pool at ``threads``
    threads; ``None`` leaves every library as it is. For commands, which own their process; a library
    caller chooses its own. JAX's CPU pool is fixed when it starts (``XLA_FLAGS``) and is left alone."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=threads):
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(before)


#: ``0`` (or ``off``) turns captured steps off; ``replay`` replays blocks through the stand-in capturer on any
#: backend (the machinery without a GPU).
CAPTURE_ENV = "XBACKPROP_CAPTURE"


def capturer_for(xp: ModuleType, like: Any) -> Any:
    """The capturer of training steps for arrays like ``like`` (a parameter): CUDA graphs for CuPy and for torch
    on a CUDA device, ``None`` elsewhere or when ``XBACKPROP_CAPTURE=0``. See :mod:`xbackprop.training.captured`."""
    mode = os.environ.get(CAPTURE_ENV, "").strip().lower()
    if mode not in {"", "1", "on", "yes", "true", "0", "off", "no", "false", "replay"}:
        raise ValueError(f"{CAPTURE_ENV}={os.environ[CAPTURE_ENV]!r}: use 0 (no captured steps) or replay (the "
                         "stand-in capturer), or leave it unset")
    if mode in {"0", "off", "no", "false"}:
        return None
    if mode == "replay":
        from .training.captured import ReplayCapturer

        return ReplayCapturer()
    record = record_of(xp)
    return None if record is None else record.capturer(like)
