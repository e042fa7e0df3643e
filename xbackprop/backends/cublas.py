"""Matrix products through cuBLAS's C API on a stream of our own, for CuPy's captured graphs (CuPy refuses
its own cuBLAS calls while a stream captures)."""

from __future__ import annotations

import weakref
from typing import Any


class CublasGemm:
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
