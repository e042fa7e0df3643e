"""CuPy on an NVIDIA GPU: the device xbackprop was written for, with CUDA-graph capture of training steps.
Where it cannot run (not installed, no GPU, no driver) commands fall back to NumPy with one warning."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import array_api_compat

from .base import Backend, BackendUnavailableError, end_capture_after


def _load() -> ModuleType:
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(f"CuPy is not installed ({exc})") from None
    # ``import cupy`` succeeds on machines without a GPU or driver: only asking the runtime for devices tells
    # whether CuPy can actually run.
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError, missing libcuda, ...
        raise BackendUnavailableError(f"CuPy found no usable CUDA device ({exc})") from None
    if count < 1:
        raise BackendUnavailableError("CuPy found no CUDA device")
    return importlib.import_module("array_api_compat.cupy")


def _parse_device(xp: ModuleType, device: str) -> Any:
    import cupy

    return cupy.cuda.Device(int(device.rsplit(":", 1)[-1]) if ":" in device else 0)


def _describe(device: Any) -> str:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(device.id)
    return f"cuda:{device.id} ({props['name'].decode()})"


def _synchronize() -> None:
    import cupy

    cupy.cuda.get_current_stream().synchronize()


class CupyCapturer:
    """CuPy's stream capture (``Stream.begin_capture``/``end_capture`` -> ``Graph``), with the two things CuPy
    does not do for a training step: matrix products through a cuBLAS handle of our own bound to the capture
    stream (CuPy refuses its cuBLAS while capturing, cupy/cupy#6290), and a private memory pool per graph,
    kept with it, so no other array is ever given the graph's scratch memory. :meth:`close` gives back the
    handle, its workspace and the stream."""

    def __init__(self) -> None:
        import cupy

        from .cublas import CublasGemm

        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.gemm = CublasGemm(self.stream)

    def capture(self, fn: Any) -> Any:
        import cupy

        from ..hooks import MATMUL

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
                graph = end_capture_after(fn, self.stream.end_capture)
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


CUPY = Backend(
    name="cupy",
    load=_load,
    owns=array_api_compat.is_cupy_namespace,
    parse_device=_parse_device,
    to_numpy=lambda x: x.get(),
    describe=_describe,
    synchronize=_synchronize,
    capturer=lambda like: CupyCapturer(),
    cuda_buffers=True,
    falls_back=True,
)
