"""The one prepared GPU proof: captured and eager training steps on CuPy, torch and JAX against host NumPy.

    python -m benchmarks.gpu_check --out DIR [--data-dir FASHION_DIR]    # on a GPU machine, under 8 minutes
    python -m benchmarks.gpu_check --out DIR --smoke                     # anywhere, seconds (CI runs it)

For every backend that runs here (host NumPy always; CuPy and torch on CUDA, JAX on a GPU
when present) and each way it steps (``eager``; ``captured`` CUDA graphs for CuPy and torch;
``compiled`` lax.scan for JAX; with ``--smoke``, NumPy ``replayed`` through the stand-in
capturer instead), it writes ``gpu-check.json`` and ``gpu-check.md`` into DIR with:

1. agreement: 200 steps of 784-50-10 at batch 100 compared with the same backend's eager
   steps, every loss and every parameter (the largest relative difference, and whether a
   fallback to eager happened);
2. speed: ms per step over blocks of steps (CUDA events on a GPU, wall clock on the host);
3. the whole run: 10,000 iterations of Fashion-MNIST's size (after a warm-up run), with the
   test accuracy when ``--data-dir`` holds Fashion-MNIST (synthetic data otherwise);
4. the crossover: ms per step from 784-50-10 at batch 100 to 784-1000-1000-10 at batch 1000,
   beside host NumPy.

Nothing needs a network. Every figure is measured by this run; a backend that is absent is
listed with the reason.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from xbackprop import MultiLayerNet, get_namespace, to_numpy
from xbackprop.backend import (
    BackendUnavailableError,
    backend_name,
    describe_device,
    resolve_device,
    synchronize,
)
from xbackprop.capture import ReplayCapturer
from xbackprop.datasets import Dataset, load_split
from xbackprop.io import plan_outputs, replace_atomically
from xbackprop.optimizers import SGD
from xbackprop.trainer import make_steps, to_device, train, training_targets

#: (hidden widths, batch) of the crossover sweep, and its smoke-test stand-in.
SWEEP = (((50,), 100), ((100,), 100), ((1000,), 100), ((1000, 1000), 100), ((1000, 1000), 1000))
SMOKE_SWEEP = (((20,), 10), ((50,), 20))


def modes(smoke: bool) -> list[tuple[str, str | None, str]]:
    """``(backend, device, mode)`` rows to measure, for the backends that run here."""
    rows = [("numpy", None, "eager")]
    if smoke:
        return rows + [("numpy", None, "replayed")]
    on_gpu = (("cupy", None, "captured"), ("torch", "cuda", "captured"), ("jax", "gpu", "compiled"))
    for backend, device, extra in on_gpu:
        try:
            xp = get_namespace(backend, strict=True)
            resolve_device(xp, device)
        except (BackendUnavailableError, ValueError, ImportError) as exc:
            print(f"{backend}: not measured ({str(exc).splitlines()[0]})")
            continue
        rows += [(backend, device, "eager"), (backend, device, extra)]
    return rows


def stepper(backend: str, device: str | None, mode: str, hidden: tuple[int, ...], batch: int, data: Dataset,
            dtype: str = "float32", seed: int = 0) -> tuple[Callable[[Any], Any], Any, Any, Any]:
    """``(run, net, steps, xp)``: ``run(indices (K, batch))`` takes K steps of ``mode`` and returns their losses."""
    xp = get_namespace(backend, strict=True)
    dev = resolve_device(xp, device)
    net = MultiLayerNet(data.num_features, list(hidden), data.num_classes, xp=xp, device=dev, dtype=dtype, seed=seed)
    device_data = to_device(data, xp, device=dev, dtype=getattr(xp, dtype))
    targets = training_targets(device_data, data.num_classes)
    capturer = ReplayCapturer() if mode == "replayed" else None
    steps = make_steps(net, SGD(lr=0.1), xp, batch_size=batch, compile=mode != "eager", capturer=capturer)

    def run(indices: Any) -> Any:
        if steps.runs_blocks:
            return steps(device_data.x_train, targets, indices)
        return xp.stack([steps(device_data.x_train, targets, indices[k, :]) for k in range(indices.shape[0])])

    return run, net, steps, xp


def agreement(backend: str, device: str | None, mode: str, data: Dataset, steps_n: int, batch: int) -> dict:
    """Largest relative differences after ``steps_n`` steps of ``mode`` against the same backend's eager steps."""
    rng = np.random.default_rng(5)
    host_indices = rng.integers(0, data.x_train.shape[0], (steps_n, batch))
    results = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for which in ("eager", mode):
            run, net, steps, xp = stepper(backend, device, which, (50,), batch, data)
            losses = to_numpy(run(xp.asarray(host_indices, device=resolve_device(xp, device))))
            steps.finish()
            results.append((losses, {key: to_numpy(value) for key, value in net.params.items()}))
    (eager_losses, eager_params), (losses, params) = results

    def worst(got: np.ndarray, want: np.ndarray) -> float:
        return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-30 + np.abs(want).max() * 1e-3)))

    return {"steps": steps_n, "loss_max_rel": worst(losses, eager_losses),
            "param_max_rel": max(worst(params[key], eager_params[key]) for key in params),
            "fallback": [str(w.message) for w in caught if "fell back" in str(w.message)]}


def ms_per_step(backend: str, device: str | None, mode: str, data: Dataset, hidden: tuple[int, ...], batch: int,
                steps_n: int, repeats: int) -> float:
    """Median over ``repeats`` of the time per step of ``steps_n`` steps (one block), device work included."""
    run, _, _, xp = stepper(backend, device, mode, hidden, batch, data)
    rng = np.random.default_rng(1)
    dev = resolve_device(xp, device)
    blocks = [xp.asarray(rng.integers(0, data.x_train.shape[0], (steps_n, batch)), device=dev)
              for _ in range(repeats + 1)]
    run(blocks[0])  # capture, compile, warm caches
    synchronize(xp)
    times = []
    for block in blocks[1:]:
        times.append(_elapsed(xp, lambda block=block: run(block)) / steps_n)
    return float(np.median(times)) * 1e3


def _elapsed(xp: Any, fn: Callable[[], Any]) -> float:
    """Seconds ``fn``'s device work took: CUDA events on CuPy and torch CUDA, the wall clock elsewhere."""
    name = backend_name(xp)
    if name == "cupy":
        import cupy

        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / 1e3
    if name == "torch":
        import torch

        if torch.cuda.is_available():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    result = fn()
    to_numpy(result)  # JAX and others: the losses on the host mean the work is done
    return time.perf_counter() - t0


def whole_run(backend: str, device: str | None, mode: str, data: Dataset, iters: int, warm_iters: int) -> dict:
    """Seconds of training for ``iters`` iterations at batch 100 (after an untimed run of ``warm_iters``), and the
    final test accuracy."""
    xp = get_namespace(backend, strict=True)
    dev = resolve_device(xp, device)
    device_data = to_device(data, xp, device=dev, dtype=xp.float32)
    seconds, accuracy = [], None
    for n in (warm_iters, iters):
        net = MultiLayerNet(data.num_features, [50], data.num_classes, xp=xp, device=dev, dtype="float32", seed=0)
        capturer = ReplayCapturer() if mode == "replayed" else None
        result = train(net, SGD(lr=0.1), device_data, iters=n, batch_size=100, seed=0, compile=mode != "eager",
                       capturer=capturer)
        seconds.append(result.seconds)
        accuracy = result.final_test_acc
    return {"iters": iters, "seconds": seconds[-1], "test_acc": accuracy}


def synthetic(n_train: int, n_test: int, seed: int = 0) -> Dataset:
    """Fashion-MNIST-shaped data: learnable (labels follow the mean brightness of a band of pixels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_train + n_test, 28, 28), dtype=np.uint8)
    labels = (images[:, 10:18, :].mean(axis=(1, 2)) / 25.6).astype(np.uint8).clip(0, 9)
    return Dataset("synthetic", images[:n_train], labels[:n_train], images[n_train:], labels[n_train:], 255,
                   "synthetic", 10)


def fashion(folder: Path) -> Dataset:
    x_train, t_train = load_split(folder, "train")
    x_test, t_test = load_split(folder, "test")
    return Dataset("fashion-mnist", x_train, t_train, x_test, t_test, 255, str(folder), 10)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("cupy", "torch", "jax", "array_api_compat"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            pass
    return found


def markdown(record: dict) -> str:
    lines = [f"# GPU check — {record['date']}", "", f"Command: `{record['command']}`", "",
             f"Devices: {', '.join(f'{k}: {v}' for k, v in record['devices'].items())}", "",
             f"Versions: {', '.join(f'{k} {v}' for k, v in record['versions'].items())}", "",
             "## Agreement with eager steps (784-50-10, batch 100, float32)", "",
             "| backend | mode | steps | max rel. loss diff | max rel. param diff | fallback |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for row in record["agreement"]:
        lines.append(f"| {row['backend']} | {row['mode']} | {row['steps']} | {row['loss_max_rel']:.2e} | "
                     f"{row['param_max_rel']:.2e} | {'; '.join(row['fallback']) or 'none'} |")
    lines += ["", "## Whole run (784-50-10, batch 100, SGD 0.1, float32; a warm-up run first)", "",
              "| backend | mode | iterations | seconds | test acc |", "| --- | --- | ---: | ---: | ---: |"]
    for row in record["whole_run"]:
        acc = "—" if row["test_acc"] is None else f"{row['test_acc']:.4f}"
        lines.append(f"| {row['backend']} | {row['mode']} | {row['iters']} | {row['seconds']:.2f} | {acc} |")
    lines += ["", f"## ms per step (median of {record['repeats']} blocks of {record['block']} steps; host NumPy's "
              "1000-wide nets: a tenth of that) and host NumPy / it", "",
              "| net | batch | " + " | ".join(f"{b} {m}" for b, _, m in record["modes"]) + " |",
              "| --- | ---: |" + " ---: |" * len(record["modes"])]
    for row in record["sweep"]:
        host = row["ms"]["numpy eager"]
        cells = [f"{ms:.3f} ({host / ms:.1f}x)" for ms in row["ms"].values()]
        lines.append(f"| {row['net']} | {row['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for gpu-check.json and gpu-check.md")
    parser.add_argument("--data-dir", type=Path, help="Fashion-MNIST's four IDX files, for the whole run's accuracy")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, NumPy only (eager and replayed): seconds")
    args = parser.parse_args(argv)
    planned = plan_outputs({"--out json": args.out / "gpu-check.json", "--out md": args.out / "gpu-check.md"})
    smoke = args.smoke
    data = synthetic(2_000, 500) if smoke else (fashion(args.data_dir) if args.data_dir else synthetic(60_000, 10_000))
    rows = modes(smoke)
    block, repeats = (20, 3) if smoke else (200, 5)
    record: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "command": "python -m benchmarks.gpu_check "
                              + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
                              "versions": versions(), "modes": rows, "block": block, "repeats": repeats,
                              "data": data.name}
    record["devices"] = {}
    for backend, device, _ in rows:
        xp = get_namespace(backend, strict=True)
        record["devices"][backend] = describe_device(xp, resolve_device(xp, device))
    started = time.perf_counter()
    record["agreement"] = [{"backend": b, "mode": m, **agreement(b, d, m, data, 20 if smoke else 200, 100)}
                           for b, d, m in rows if m != "eager"]
    iters, warm = (100, 20) if smoke else (10_000, 500)
    record["whole_run"] = [{"backend": b, "mode": m, **whole_run(b, d, m, data, iters, warm)} for b, d, m in rows]
    if data.name == "synthetic":
        for row in record["whole_run"]:
            row["test_acc"] = None  # synthetic labels: an accuracy would mean nothing
    record["sweep"] = []
    for hidden, batch in (SMOKE_SWEEP if smoke else SWEEP):
        net_name = "-".join(map(str, (data.num_features, *hidden, data.num_classes)))
        # the host's large steps take tens of ms: fewer of them keep the proof within its minutes
        host_block = block if smoke or hidden[0] < 1000 else max(block // 10, 5)
        record["sweep"].append({"net": net_name, "batch": batch, "ms": {
            f"{b} {m}": ms_per_step(b, d, m, data, hidden, batch, host_block if b == "numpy" else block, repeats)
            for b, d, m in rows}})
        print(f"{net_name} @ {batch}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in record["sweep"][-1]["ms"].items()))
    record["seconds"] = time.perf_counter() - started
    with replace_atomically(planned["--out json"]) as temporary:
        temporary.write_text(json.dumps(record, indent=2) + "\n")
    with replace_atomically(planned["--out md"]) as temporary:
        temporary.write_text(markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
