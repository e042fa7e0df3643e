"""The one module that knows array libraries by name.

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
import importlib
import os
import sys
import warnings
import weakref
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

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

#: Backend names accepted by :func:`get_namespace` and the ``XP`` variable.
#: Dask is not among them: its arrays are lazy, so a training loop would grow one graph for the whole run.
BACKENDS = ("numpy", "cupy", "torch", "jax", "array_api_strict")

#: Floating dtypes parameters and data may take, by name.
FLOAT_DTYPES = ("float32", "float64")

#: Environment variable that names the backend when none is passed.
BACKEND_ENV = "XP"
#: Set to ``1`` to make an unusable CuPy an error instead of a NumPy fallback.
STRICT_ENV = "XBACKPROP_STRICT_BACKEND"


class BackendUnavailableError(RuntimeError):
    """The requested array library is not installed or cannot run here."""


def _cupy_namespace() -> ModuleType:
    """CuPy's namespace, or BackendUnavailableError saying why it cannot run."""
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(f"CuPy is not installed ({exc})") from None
    # ``import cupy`` succeeds on machines without a GPU or driver: only asking
    # the runtime for devices tells whether CuPy can actually run.
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError, missing libcuda, ...
        raise BackendUnavailableError(f"CuPy found no usable CUDA device ({exc})") from None
    if count < 1:
        raise BackendUnavailableError("CuPy found no CUDA device")
    return importlib.import_module("array_api_compat.cupy")


#: How to install each optional backend (a plain ``pip install torch`` brings a CUDA build of several GB).
INSTALL_HINTS = {
    "torch": "for the CPU build: pip install torch --index-url https://download.pytorch.org/whl/cpu",
    "jax": "pip install 'jax[cpu]' (or 'xbackprop[jax-gpu]' on an NVIDIA GPU)",
    "array_api_strict": "pip install array-api-strict",
}


def _import_namespace(name: str) -> ModuleType:
    if name == "numpy":
        return importlib.import_module("array_api_compat.numpy")
    if name == "cupy":
        return _cupy_namespace()
    try:
        if name == "torch":
            importlib.import_module("torch")
            return importlib.import_module("array_api_compat.torch")
        if name == "jax":
            # JAX's float64 stays the user's switch (JAX_ENABLE_X64=1, jax.config, `with jax.enable_x64():`):
            # it is process-wide, and a library must not flip it. See require_dtype.
            importlib.import_module("jax")
            return importlib.import_module("jax.numpy")
        if name == "array_api_strict":
            return importlib.import_module("array_api_strict")
    except ImportError as exc:
        raise BackendUnavailableError(f"backend {name!r} is not installed ({exc}); {INSTALL_HINTS[name]}") from None
    raise AssertionError(name)


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
        return _import_namespace(key)
    except BackendUnavailableError as exc:
        if key != "cupy" or strict:
            raise
        warnings.warn(f"{exc}; falling back to NumPy on the CPU", RuntimeWarning, stacklevel=2)
        return _import_namespace("numpy")


@functools.cache
def backend_name(xp: ModuleType) -> str:
    """The :data:`BACKENDS` name of a namespace (``"numpy"``, ``"torch"``, ...)."""
    checks = (
        ("numpy", array_api_compat.is_numpy_namespace),
        ("cupy", array_api_compat.is_cupy_namespace),
        ("torch", array_api_compat.is_torch_namespace),
        ("jax", array_api_compat.is_jax_namespace),
        ("array_api_strict", array_api_compat.is_array_api_strict_namespace),
    )
    for label, check in checks:
        if check(xp):
            return label
    return getattr(xp, "__name__", repr(xp))


def require_dtype(xp: ModuleType, dtype: Any) -> Any:
    """``dtype``, or ``ValueError`` where ``xp`` would silently compute in another (JAX without x64).

    JAX turns float64 into float32 unless its process-wide x64 switch is on; xbackprop
    never flips it, so a float64 computation on JAX asks the user to.
    """
    if dtype == getattr(xp, "float64", None) and array_api_compat.is_jax_namespace(xp):
        import jax

        if not jax.config.jax_enable_x64:
            raise ValueError(
                "JAX computes in float64 only with its x64 switch on: run with JAX_ENABLE_X64=1, call "
                "jax.config.update('jax_enable_x64', True) first, or work inside `with jax.enable_x64():`"
            )
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


def _parse_device(xp: ModuleType, device: str) -> Any:
    name = backend_name(xp)
    if name == "torch":
        import torch

        return torch.device(device)
    if name == "cupy":
        import cupy

        return cupy.cuda.Device(int(device.rsplit(":", 1)[-1]) if ":" in device else 0)
    if name == "jax":
        import jax

        platform, _, index = device.partition(":")
        return jax.devices(platform)[int(index or 0)]
    if name == "array_api_strict":
        return xp.Device(device)
    if device == "cpu":
        return "cpu"
    raise ValueError(f"device {device!r} is not available for backend {name!r}")


def describe_device(xp: ModuleType, device: Any = None) -> str:
    """A short human-readable device name for log lines, e.g. ``"cpu"`` or ``"cuda:0 (NVIDIA H100)"``."""
    if device is None:
        device = array_api_compat.device(xp.empty((0,)))
    name = backend_name(xp)
    if name == "cupy":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(device.id)
        return f"cuda:{device.id} ({props['name'].decode()})"
    return str(device)


def to_numpy(x: Any) -> np.ndarray:
    """A host NumPy copy (or view) of any supported array, for printing, plotting and saving."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_array_api_strict_namespace(array_api_compat.array_namespace(x)):
        return np.from_dlpack(x)
    return np.asarray(x)


def host_rng(seed: int | None = None) -> np.random.Generator:
    """NumPy's ``Generator`` on the host: the standard has no random numbers."""
    return np.random.default_rng(seed)


def synchronize(xp: ModuleType) -> None:
    """Wait for queued device work (CuPy, torch CUDA); a no-op on the CPU backends."""
    name = backend_name(xp)
    if name == "cupy":
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    elif name == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def is_host_namespace(xp: ModuleType) -> bool:
    """Whether arrays of ``xp`` are host NumPy arrays (buffers MPI and NumPy can use directly)."""
    return array_api_compat.is_numpy_namespace(xp)


def is_cuda_namespace(xp: ModuleType) -> bool:
    """Whether arrays of ``xp`` are CuPy device arrays (``__cuda_array_interface__`` buffers)."""
    return array_api_compat.is_cupy_namespace(xp)


def compile_function(fn: Any, xp: ModuleType) -> Any:
    """``fn`` compiled for ``xp`` where the backend traces whole functions (``jax.jit``), else ``fn`` itself.

    ``fn`` must be a pure function of its array (and dict-of-array) arguments with
    no Python branches on array values. Eager JAX pays a dispatch for every
    operation; compiled, a training step's few dozen operations run as one program.
    """
    if array_api_compat.is_jax_namespace(xp):
        import jax

        return jax.jit(fn)
    return fn


def compile_steps(step: Any, xp: ModuleType) -> Any:
    """Many training steps per call where the backend compiles loops, else ``None``.

    ``step(params, state, x_all, t_all, index) -> (params, state, loss)`` must be pure.
    The result, ``run(params, state, x_all, t_all, indices) -> (params, state, losses)``,
    applies it once per row of ``indices`` ``(K, batch)``. On JAX that is one
    ``jax.lax.scan`` inside one ``jax.jit`` (one dispatch for K steps; on an
    accelerator the parameter and state buffers are donated and updated in place).
    Elsewhere ``None``: the caller steps eagerly.
    """
    if not array_api_compat.is_jax_namespace(xp):
        return None
    import jax

    def run_block(params: Any, state: Any, x_all: Any, t_all: Any, indices: Any) -> Any:
        def body(carry: Any, index: Any) -> Any:
            params, state, loss = step(*carry, x_all, t_all, index)
            return (params, state), loss

        (params, state), losses = jax.lax.scan(body, (params, state), indices)
        return params, state, losses

    on_cpu = all(d.platform == "cpu" for d in jax.devices())
    return jax.jit(run_block, donate_argnums=() if on_cpu else (0, 1))  # the CPU backend cannot donate


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
    on a CUDA device, ``None`` elsewhere or when ``XBACKPROP_CAPTURE=0``. See :mod:`xbackprop.capture`."""
    mode = os.environ.get(CAPTURE_ENV, "").strip().lower()
    if mode not in {"", "1", "on", "yes", "true", "0", "off", "no", "false", "replay"}:
        raise ValueError(f"{CAPTURE_ENV}={os.environ[CAPTURE_ENV]!r}: use 0 (no captured steps) or replay (the "
                         "stand-in capturer), or leave it unset")
    if mode in {"0", "off", "no", "false"}:
        return None
    if mode == "replay":
        from .capture import ReplayCapturer

        return ReplayCapturer()
    name = backend_name(xp)
    if name == "cupy":
        return _CupyCapturer()
    if name == "torch" and getattr(like, "is_cuda", False):
        return _TorchCapturer(like.device)
    return None


class _TorchCapturer:
    """A CUDA graph of torch's as PyTorch's CUDA-graph notes ask: warm-up runs on the side stream the graph is
    captured on (cuBLAS keeps a handle and workspace per stream), a private memory pool per graph, replays on
    the current stream. ``torch.cuda.graph`` is not used: when a capture fails its ``__exit__`` raises before
    restoring the stream, leaving the side stream current and naming the wrong error."""

    def __init__(self, device: Any) -> None:
        self.device = device

    def capture(self, fn: Any) -> Any:
        import torch

        current = torch.cuda.current_stream(self.device)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(current)  # the warm-up writes arrays the current stream may still be filling
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(stream):  # the current stream is restored however the block ends
            for _ in range(2):
                fn()
            graph.capture_begin()
            _end_capture_after(fn, graph.capture_end)
        current.wait_stream(stream)

        def launch() -> None:
            graph.replay()

        launch.graph = graph  # type: ignore[attr-defined]  # alive as long as its launcher
        return launch


def _end_capture_after(fn: Any, end_capture: Any) -> Any:
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


class _CupyCapturer:
    """CuPy's stream capture (``Stream.begin_capture``/``end_capture`` -> ``Graph``), with the two things CuPy
    does not do for a training step: matrix products through a cuBLAS handle of our own bound to the capture
    stream (CuPy refuses its cuBLAS while capturing, cupy/cupy#6290), and a private memory pool per graph,
    kept with it, so no other array is ever given the graph's scratch memory. :meth:`close` gives back the
    handle, its workspace and the stream."""

    def __init__(self) -> None:
        import cupy

        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.gemm = _CublasGemm(self.stream)

    def capture(self, fn: Any) -> Any:
        import cupy

        from .hooks import MATMUL

        pool = cupy.cuda.MemoryPool()
        # The warm-up writes the static arrays: whatever the current stream still has queued for them (the
        # snapshot copies, the index buffer) must be done first, and a non-blocking stream does not wait by itself.
        self.stream.wait_event(cupy.cuda.get_current_stream().record())
        token = MATMUL.set(self.gemm)
        try:
            with cupy.cuda.using_allocator(pool.malloc), self.stream:
                fn()  # warm-up: kernels compiled, the pool holds every block the step asks for
                self.stream.synchronize()
                self.stream.begin_capture()
                graph = _end_capture_after(fn, self.stream.end_capture)
                graph.upload(self.stream)
                self.stream.synchronize()
        finally:
            MATMUL.reset(token)

        def launch() -> None:
            graph.launch(cupy.cuda.get_current_stream())

        launch.kept = (graph, pool)  # type: ignore[attr-defined]  # the graph's memory lives as long as it
        return launch

    def close(self) -> None:
        self.gemm.close()
        self.stream = None


class _CublasGemm:
    """``a @ b`` in float32 or float64 through cuBLAS's C API on a handle bound to ``stream``, with a workspace
    of our own (so the graph records no allocation of cuBLAS's). Operands may be C-contiguous or the ``.T`` of a
    C-contiguous array, as Affine's ``x @ W``, ``x.T @ dout`` and ``dout @ W.T`` are: a transpose flips cuBLAS's
    operation flag instead of being copied. Row-major ``C = A @ B`` is column-major ``C^T = B^T A^T``."""

    WORKSPACE_BYTES = 32 << 20

    def __init__(self, stream: Any) -> None:
        import ctypes

        import cupy
        from cupy_backends.cuda.libs import cublas  # noqa: F401  # loads libcublas into the process

        self.lib = ctypes.CDLL(_loaded_library("libcublas.so"))
        self.handle = ctypes.c_void_p()
        self._check(self.lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate_v2")
        self._check(self.lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(stream.ptr)), "cublasSetStream_v2")
        self._destroy = weakref.finalize(self, self.lib.cublasDestroy_v2, self.handle)  # once, however it ends
        self.workspace = cupy.empty(self.WORKSPACE_BYTES, dtype=cupy.uint8)
        self._check(self.lib.cublasSetWorkspace_v2(self.handle, ctypes.c_void_p(self.workspace.data.ptr),
                                                   ctypes.c_size_t(self.WORKSPACE_BYTES)), "cublasSetWorkspace_v2")

    def close(self) -> None:
        """Destroy the handle, then free its workspace."""
        self._destroy()
        self.workspace = None

    @staticmethod
    def _check(status: int, call: str) -> None:
        if status != 0:
            raise RuntimeError(f"{call} returned cuBLAS status {status}")

    def __call__(self, a: Any, b: Any) -> Any:
        import ctypes

        import cupy

        if a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype or a.dtype.char not in "fd":
            raise TypeError(f"captured matmul takes 2-D float32 or float64 operands, got {a.dtype} {a.shape} "
                            f"and {b.dtype} {b.shape}")
        m, k = a.shape
        n = b.shape[1]
        a_op, lda = self._operand(a)
        b_op, ldb = self._operand(b)
        c = cupy.empty((m, n), dtype=a.dtype)
        scalar = ctypes.c_float if a.dtype.char == "f" else ctypes.c_double
        gemm = self.lib.cublasSgemm_v2 if a.dtype.char == "f" else self.lib.cublasDgemm_v2
        alpha, beta = scalar(1.0), scalar(0.0)
        self._check(gemm(self.handle, b_op[0], a_op[0], n, m, k, ctypes.byref(alpha),
                         ctypes.c_void_p(b_op[1].data.ptr), ldb, ctypes.c_void_p(a_op[1].data.ptr), lda,
                         ctypes.byref(beta), ctypes.c_void_p(c.data.ptr), n), "cublas gemm")
        return c

    @staticmethod
    def _operand(x: Any) -> tuple[tuple[int, Any], int]:
        """``((op, array), leading dimension)`` of a row-major operand seen column-major (transposed)."""
        import cupy

        if x.flags.c_contiguous:
            return (0, x), x.shape[1]  # CUBLAS_OP_N on the column-major transpose
        if x.flags.f_contiguous:
            return (1, x), x.shape[0]  # the .T of a C-contiguous array: CUBLAS_OP_T
        x = cupy.ascontiguousarray(x)
        return (0, x), x.shape[1]


def _loaded_library(stem: str) -> str:
    """The path of the shared library ``stem`` (e.g. ``libcublas.so``) this process has loaded."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.rsplit(" ", 1)[-1].strip()
            if f"/{stem}" in path:
                return path
    raise RuntimeError(f"{stem} is not loaded in this process")
