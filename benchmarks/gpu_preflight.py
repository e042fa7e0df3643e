"""What only a GPU can show, checked in the first minutes of a lent machine, before any timing.

1. versions, and the libcublas the process has loaded;
2. the cuBLAS GEMM that captured CuPy steps use, against CuPy's own ``a @ b`` on the three
   products of an Affine layer (``x @ W``, ``x.T @ dout``, ``dout @ W.T`` of 784-50-10 at batch
   100), float32 and float64: the largest difference in ulps of the result's largest element,
   eagerly, from a captured graph, and from the same graph replayed after its inputs changed in place;
3. 72 captured training steps (a 64-step and an 8-step graph) on CuPy and on torch CUDA: the
   fallback reason (none expected), two replays of one block from one state bit for bit equal,
   and, on torch, the default stream current again afterwards;
4. one eager torch CUDA step under ``torch.cuda.set_sync_debug_mode("error")``: no hidden
   synchronisation.

Each check returns a row; a check that cannot run here says why instead. With ``smoke``,
part 3 runs through the stand-in capturer on NumPy and on torch's CPU build, so the CPU tests
run this code too.
"""

from __future__ import annotations

import platform
import warnings
from typing import Any

import numpy as np

from xbackprop import MultiLayerNet, get_namespace, to_numpy
from xbackprop.backend import BackendUnavailableError, capturer_for, resolve_device, synchronize
from xbackprop.optimizers import SGD
from xbackprop.training import make_steps
from xbackprop.training.captured import ReplayCapturer

#: The three products of a 784-50 Affine at batch 100: forward, dW, dx.
AFFINE_PRODUCTS = {"x @ W": ((100, 784), (784, 50)), "x.T @ dout": ((784, 100), (100, 50)),
                   "dout @ W.T": ((100, 50), (50, 784))}


def versions() -> dict[str, str]:
    """Python, the array libraries that import, CUDA's runtime and driver where CuPy runs."""
    found = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("cupy", "torch", "jax", "array_api_compat", "array_api_extra"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            pass
    try:
        import cupy

        found["cuda runtime"] = str(cupy.cuda.runtime.runtimeGetVersion())
        found["cuda driver"] = str(cupy.cuda.runtime.driverGetVersion())
    except Exception:  # no CuPy, or no driver: said by the other rows
        pass
    return found


def loaded_libraries(stem: str = "libcublas") -> list[str]:
    """Paths of the shared libraries named ``stem...`` mapped into this process."""
    found = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.rsplit(" ", 1)[-1].strip()
            if f"/{stem}" in path and path not in found:
                found.append(path)
    return found


def _ulps(got: np.ndarray, want: np.ndarray) -> float:
    """The largest difference, in units of the last place of ``want``'s largest element."""
    return float(np.max(np.abs(got.astype(np.float64) - want)) / np.spacing(np.abs(want).max().astype(want.dtype)))


def gemm_rows() -> list[dict[str, Any]]:
    """Part 2: the capturing GEMM against ``a @ b`` (CuPy only)."""
    try:
        cupy = get_namespace("cupy", strict=True)
    except BackendUnavailableError as exc:
        return [{"check": "cuBLAS GEMM", "skipped": str(exc)}]
    from xbackprop.backends.cupy import CupyCapturer
    from xbackprop.hooks import dot

    rng = np.random.default_rng(0)
    capturer = CupyCapturer()
    rows = []
    try:
        for dtype in ("float32", "float64"):
            for name, (a_shape, b_shape) in AFFINE_PRODUCTS.items():
                rows.append(_one_gemm(cupy, capturer, dot, rng, name, a_shape, b_shape, dtype))
    finally:
        capturer.close()
    return rows


def _one_gemm(cupy: Any, capturer: Any, dot: Any, rng: Any, name: str, a_shape: tuple[int, int],
              b_shape: tuple[int, int], dtype: str) -> dict[str, Any]:
    # transposed operands are made as the layers make them: the .T of a C-contiguous array
    def operand(shape: tuple[int, int], transposed: bool) -> Any:
        host = rng.standard_normal(shape[::-1] if transposed else shape).astype(dtype)
        array = cupy.asarray(host)
        return array.T if transposed else array

    a = operand(a_shape, name.startswith("x.T"))
    b = operand(b_shape, name.endswith("W.T"))
    out = cupy.zeros((a_shape[0], b_shape[1]), dtype=getattr(cupy, dtype))

    def product() -> None:
        out[...] = dot(a, b)

    row: dict[str, Any] = {"check": "cuBLAS GEMM", "product": name, "dtype": dtype,
                           "eager_ulps": _ulps(to_numpy(capturer.gemm(a, b)), to_numpy(a @ b))}
    launch = capturer.capture(product)
    launch()
    synchronize(cupy)
    row["captured_ulps"] = _ulps(to_numpy(out), to_numpy(a @ b))
    a[...] = a * 0.5 + 1.0  # in place: the graph reads its inputs where they are
    launch()
    synchronize(cupy)
    row["replayed_after_change_ulps"] = _ulps(to_numpy(out), to_numpy(a @ b))
    return row


def captured_steps_rows(smoke: bool) -> list[dict[str, Any]]:
    """Part 3 on CuPy and torch CUDA (with ``smoke``: the stand-in on NumPy and torch CPU)."""
    places = (("numpy", None), ("torch", "cpu")) if smoke else (("cupy", None), ("torch", "cuda"))
    rows = []
    for backend, device in places:
        try:
            xp = get_namespace(backend, strict=True)
            dev = resolve_device(xp, device)
        except (BackendUnavailableError, ValueError) as exc:
            rows.append({"check": "72 captured steps", "backend": backend, "skipped": str(exc).splitlines()[0]})
            continue
        rows.append({"check": "72 captured steps", "backend": backend, **_captured_steps(xp, dev, smoke)})
    return rows


def _captured_steps(xp: Any, device: Any, smoke: bool) -> dict[str, Any]:
    rng = np.random.default_rng(2)
    x_all = xp.asarray(rng.random((1000, 784)).astype(np.float32), device=device)
    t_all = xp.asarray(rng.integers(0, 10, 1000).astype(np.uint8), device=device)
    indices = xp.asarray(rng.integers(0, 1000, (72, 100)), device=device)
    net = MultiLayerNet(784, [50], 10, xp=xp, device=device, dtype="float32", seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        capturer = ReplayCapturer() if smoke else capturer_for(xp, net.params["W1"])
        steps = make_steps(net, SGD(lr=0.1), xp, batch_size=100, capturer=capturer)
        row: dict[str, Any] = {"stepper": "replayed" if smoke and steps.kind == "captured" else steps.kind}
        if steps.kind != "captured":
            return {**row, "fallback": "nothing captures here", "warnings": [str(w.message) for w in caught]}
        try:
            steps(x_all, t_all, indices)  # captures and checks both graphs
            start = steps.snapshot()
            replays = []
            for _ in range(2):
                steps.restore(start)
                losses = to_numpy(steps(x_all, t_all, indices))
                replays.append((losses, to_numpy(net.params["W1"])))
            row["replays_bit_equal"] = bool(np.array_equal(replays[0][0], replays[1][0])
                                            and np.array_equal(replays[0][1], replays[1][1]))
            row["fallback"] = steps.fallback_reason
            if steps.fallback_reason:
                row["stepper"] = "eager"  # the numbers above came from eager steps
        finally:
            steps.close()
    row["warnings"] = [str(w.message) for w in caught]
    if "torch" in xp.__name__ and not smoke:
        import torch

        row["default_stream_current"] = torch.cuda.current_stream() == torch.cuda.default_stream()
    return row


def sync_debug_row() -> dict[str, Any]:
    """Part 4: one eager torch CUDA step that must not synchronise."""
    try:
        xp = get_namespace("torch", strict=True)
        device = resolve_device(xp, "cuda")
    except (BackendUnavailableError, ValueError) as exc:
        return {"check": "eager step without syncs", "skipped": str(exc).splitlines()[0]}
    import torch

    rng = np.random.default_rng(3)
    x_all = xp.asarray(rng.random((1000, 784)).astype(np.float32), device=device)
    t_all = xp.asarray(rng.integers(0, 10, 1000).astype(np.uint8), device=device)
    rows = xp.asarray(rng.integers(0, 1000, (2, 100)), device=device)
    net = MultiLayerNet(784, [50], 10, xp=xp, device=device, dtype="float32", seed=0)
    steps = make_steps(net, SGD(lr=0.1), xp, batch_size=100, compile=False)
    steps(x_all, t_all, rows[0, :])  # the first step makes what it keeps
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        steps(x_all, t_all, rows[1, :])
        error = None
    except RuntimeError as exc:
        error = str(exc).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return {"check": "eager step without syncs", "backend": "torch", "synchronised": error}


def preflight(smoke: bool = False) -> dict[str, Any]:
    """All four parts, as one record."""
    versions_found = versions()
    if not smoke:
        try:  # CuPy loads libcublas only when its cuBLAS module is imported
            from cupy_backends.cuda.libs import cublas  # noqa: F401
        except ImportError:
            pass
    return {"versions": versions_found, "libcublas": loaded_libraries(), "gemm": gemm_rows(),
            "captured_steps": captured_steps_rows(smoke), "sync_debug": sync_debug_row()}
