"""The one prepared GPU proof: captured and eager training steps on CuPy, torch and JAX against host NumPy.

    python -m benchmarks.gpu_check --out DIR [--data-dir FASHION_DIR]    # on a GPU machine, under 8 minutes
    python -m benchmarks.gpu_check --out DIR --preflight                 # the first two minutes only
    python -m benchmarks.gpu_check --out DIR --smoke                     # anywhere, seconds (CI runs it)

First the preflight (:mod:`benchmarks.gpu_preflight`: versions, the libcublas loaded, the
capturing GEMM against ``a @ b``, 72 captured steps on CuPy and torch CUDA, one eager step
under torch's sync debug mode), then, unless ``--preflight``, for every backend that runs
here (host NumPy always; CuPy and torch on CUDA, JAX on a GPU when present) and each way it
steps (``eager``; ``captured`` CUDA graphs for CuPy and torch; ``compiled`` lax.scan for
JAX; with ``--smoke``, NumPy ``replayed`` through the stand-in capturer instead):

1. agreement: 200 steps of 784-50-10 at batch 100 compared with the same backend's eager
   steps, every loss and every parameter (the largest relative difference);
2. speed: ms per step over blocks of steps (CUDA events on a GPU, wall clock on the host);
3. the whole run: 10,000 iterations of Fashion-MNIST's size (after an untimed run that warms
   what a process keeps: kernels, libraries), with the test accuracy when ``--data-dir``
   holds Fashion-MNIST (synthetic data otherwise); the timed run captures or compiles its
   own graphs, as a user's run does, and the seconds that took are given beside it;
4. the crossover: ms per step from 784-50-10 at batch 100 to 784-1000-1000-10 at batch 1000,
   beside host NumPy;
5. the book's SimpleConvNet, one epoch (Adam 0.001, batch 100), each way beside host NumPy eager.

Every row names the stepper that actually ran (``eager``, ``captured``, ``compiled``,
``replayed``) and the fallback that made it eager, if any: a number is never labelled
captured when eager steps produced it. Everything goes into DIR (made if missing) as
``gpu-check.json`` and ``gpu-check.md``. Nothing needs a network; every figure is measured by
this run; a backend that is absent is listed with the reason.
"""
from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpu_preflight import preflight, versions
from xbackprop import MultiLayerNet, get_namespace, to_numpy
from xbackprop.architecture import NETS, Architecture
from xbackprop.backend import (
    BackendUnavailableError,
    backend_name,
    capturer_for,
    describe_device,
    resolve_device,
    synchronize,
)
from xbackprop.cli import Parser, UsageError, run_command
from xbackprop.datasets import Dataset, load_split
from xbackprop.files import plan_outputs, replace_atomically
from xbackprop.nets import build_net
from xbackprop.optimizers import SGD, Adam
from xbackprop.training import Schedule, make_steps, to_device, train, training_targets
from xbackprop.training.captured import ReplayCapturer

#: (hidden widths, batch) of the crossover sweep, and its smoke-test stand-in.
SWEEP = (((50,), 100), ((100,), 100), ((1000,), 100), ((1000, 1000), 100), ((1000, 1000), 1000))
SMOKE_SWEEP = (((20,), 10), ((50,), 20))
#: What the trainer's warnings about captured steps start with (a fallback, or no capturer at all).
CAPTURE_WARNINGS = ("captured training steps fell back", "captured training steps are unavailable")


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


class TimedCapturer:
    """A capturer that counts the graphs it records and the seconds that took (device work included)."""

    def __init__(self, inner: Any, xp: Any) -> None:
        self.inner, self.xp = inner, xp
        self.captures, self.seconds = 0, 0.0

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        started = time.perf_counter()
        launch = self.inner.capture(fn)
        synchronize(self.xp)
        self.seconds += time.perf_counter() - started
        self.captures += 1
        return launch

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def capturer_of(mode: str, xp: Any, like: Any) -> tuple[TimedCapturer | None, str | None]:
    """The capturer a ``mode`` asks for, timed, or ``(None, why not)`` where none can be made."""
    if mode == "replayed":
        return TimedCapturer(ReplayCapturer(), xp), None
    if mode != "captured":
        return None, None
    try:
        inner = capturer_for(xp, like)
    except Exception as exc:  # a capturer that cannot be set up: eager steps, and the row says why
        return None, f"captured training steps are unavailable ({type(exc).__name__}: {exc})"
    return (None, "no capturer for this backend") if inner is None else (TimedCapturer(inner, xp), None)


def ran(mode: str, steps_kind: str | None, capturer: TimedCapturer | None, caught: list[Any],
        unavailable: str | None) -> dict[str, Any]:
    """``{"stepper", "fallback"}``: what actually produced a row's numbers."""
    said = [str(w.message) for w in caught if str(w.message).startswith(CAPTURE_WARNINGS)]
    fallback = unavailable or (said[0] if said else None)
    if mode in ("captured", "replayed") and capturer is not None and capturer.captures == 0 and not fallback:
        fallback = "no graph was captured"
    return {"stepper": "eager" if fallback or steps_kind == "eager" else mode, "fallback": fallback}


def stepper(backend: str, device: str | None, mode: str, hidden: tuple[int, ...], batch: int, data: Dataset,
            dtype: str = "float32", seed: int = 0) -> tuple[Callable[[Any], Any], Any, Any, Any, Callable[[], dict]]:
    """``(run, net, steps, xp, what_ran)``: ``run(indices (K, batch))`` takes K steps of ``mode`` and returns their
    losses; ``what_ran()`` says which stepper produced them (call it after the runs, inside the same warnings
    record)."""
    xp = get_namespace(backend, strict=True)
    dev = resolve_device(xp, device)
    net = MultiLayerNet(data.num_features, list(hidden), data.num_classes, xp=xp, device=dev, dtype=dtype, seed=seed)
    device_data = to_device(data, xp, device=dev, dtype=getattr(xp, dtype))
    targets = training_targets(device_data, data.num_classes)
    capturer, unavailable = capturer_of(mode, xp, net.params["W1"])
    steps = make_steps(net, SGD(lr=0.1), xp, batch_size=batch, compile=mode != "eager" and unavailable is None,
                       capturer=capturer)

    def run(indices: Any) -> Any:
        if steps.runs_blocks:
            return steps(device_data.x_train, targets, indices)
        return xp.stack([steps(device_data.x_train, targets, indices[k, :]) for k in range(indices.shape[0])])

    def what_ran(caught: list[Any]) -> dict[str, Any]:
        return ran(mode, steps.kind, capturer, caught, unavailable)

    return run, net, steps, xp, what_ran


def agreement(backend: str, device: str | None, mode: str, data: Dataset, steps_n: int, batch: int) -> dict:
    """Largest relative differences after ``steps_n`` steps of ``mode`` against the same backend's eager steps."""
    rng = np.random.default_rng(5)
    host_indices = rng.integers(0, data.x_train.shape[0], (steps_n, batch))
    results = []
    for which in ("eager", mode):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run, net, steps, xp, what_ran = stepper(backend, device, which, (50,), batch, data)
            losses = to_numpy(run(xp.asarray(host_indices, device=resolve_device(xp, device))))
            steps.finish()
            _close(steps)
        results.append((losses, {key: to_numpy(value) for key, value in net.params.items()}, what_ran(caught)))
    (eager_losses, eager_params, _), (losses, params, how) = results

    def worst(got: np.ndarray, want: np.ndarray) -> float:
        return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-30 + np.abs(want).max() * 1e-3)))

    return {"steps": steps_n, "loss_max_rel": worst(losses, eager_losses),
            "param_max_rel": max(worst(params[key], eager_params[key]) for key in params), **how}


def _close(steps: Any) -> None:
    close = getattr(steps, "close", None)
    if close is not None:
        close()


def ms_per_step(backend: str, device: str | None, mode: str, data: Dataset, hidden: tuple[int, ...], batch: int,
                steps_n: int, repeats: int) -> dict[str, Any]:
    """``{"ms", "stepper", "fallback"}``: the median over ``repeats`` of the time per step of ``steps_n`` steps (one
    block, device work included), after one untimed block that captures, compiles and warms caches."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run, _, steps, xp, what_ran = stepper(backend, device, mode, hidden, batch, data)
        rng = np.random.default_rng(1)
        dev = resolve_device(xp, device)
        blocks = [xp.asarray(rng.integers(0, data.x_train.shape[0], (steps_n, batch)), device=dev)
                  for _ in range(repeats + 1)]
        try:
            run(blocks[0])
            synchronize(xp)
            times = [_elapsed(xp, lambda block=block: run(block)) / steps_n for block in blocks[1:]]
        finally:
            _close(steps)
    return {"ms": float(np.median(times)) * 1e3, **what_ran(caught)}


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


def whole_run(backend: str, device: str | None, mode: str, data: Dataset, iters: int, warm_iters: int,
              net_name: str = "multi-layer-net") -> dict:
    """Seconds of training for ``iters`` iterations at batch 100 (after an untimed run of ``warm_iters``), the
    seconds its own graph captures took, the stepper that ran, and the final test accuracy; ``net_name`` one of
    :data:`xbackprop.architecture.NETS` (the 784-50-10 net, or the book's SimpleConvNet with Adam 0.001)."""
    xp = get_namespace(backend, strict=True)
    dev = resolve_device(xp, device)
    device_data = to_device(data, xp, device=dev, dtype=xp.float32)
    hidden = NETS[net_name]
    optimizer = (lambda: SGD(lr=0.1)) if net_name == "multi-layer-net" else (lambda: Adam(lr=0.001))
    for n in (warm_iters, iters):
        net = build_net(Architecture((data.num_features, hidden, data.num_classes), net=net_name), xp=xp,
                        device=dev, dtype="float32", seed=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            capturer, unavailable = capturer_of(mode, xp, net.params["W1"])
            result = train(net, optimizer(), device_data, Schedule(iters=n, batch_size=100, seed=0),
                           compile=mode != "eager" and unavailable is None, capturer=capturer)
        how = ran(mode, None, capturer, caught, unavailable)
    return {"iters": iters, "seconds": result.seconds, "capture_seconds": capturer.seconds if capturer else None,
            "test_acc": result.final_test_acc, **how}


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


def _cell(value: Any, digits: str = ".2e") -> str:
    return "—" if value is None else format(value, digits)


def preflight_markdown(checks: dict) -> list[str]:
    lines = ["## Preflight", "", f"libcublas loaded: {', '.join(checks['libcublas']) or 'none'}", "",
             "| product | dtype | eager ulps | captured ulps | replayed after a change, ulps |",
             "| --- | --- | ---: | ---: | ---: |"]
    for row in checks["gemm"]:
        if "skipped" in row:
            lines.append(f"| cuBLAS GEMM not checked: {row['skipped']} | | | | |")
            continue
        lines.append(f"| {row['product']} | {row['dtype']} | {row['eager_ulps']:.1f} | {row['captured_ulps']:.1f} | "
                     f"{row['replayed_after_change_ulps']:.1f} |")
    lines += ["", "| 72 captured steps | stepper | fallback | replays bit-equal | default stream current |",
              "| --- | --- | --- | --- | --- |"]
    for row in checks["captured_steps"]:
        if "skipped" in row:
            lines.append(f"| {row['backend']} | not run: {row['skipped']} | | | |")
            continue
        lines.append(f"| {row['backend']} | {row['stepper']} | {row.get('fallback') or 'none'} | "
                     f"{row.get('replays_bit_equal', '—')} | {row.get('default_stream_current', '—')} |")
    sync = checks["sync_debug"]
    said = sync.get("skipped") or (f"synchronised: {sync['synchronised']}" if sync["synchronised"] else "no sync")
    return lines + ["", f"One eager torch CUDA step under `set_sync_debug_mode(\"error\")`: {said}", ""]


def markdown(record: dict) -> str:
    lines = [f"# GPU check — {record['date']}", "", f"Command: `{record['command']}`", "",
             f"Devices: {', '.join(f'{k}: {v}' for k, v in record['devices'].items())}", "",
             f"Versions: {', '.join(f'{k} {v}' for k, v in record['versions'].items())}", "",
             *preflight_markdown(record["preflight"])]
    if "agreement" not in record:
        return "\n".join(lines)
    lines += ["## Agreement with eager steps (784-50-10, batch 100, float32)", "",
              "| backend | asked | ran | steps | max rel. loss diff | max rel. param diff | fallback |",
              "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    for row in record["agreement"]:
        lines.append(f"| {row['backend']} | {row['mode']} | {row['stepper']} | {row['steps']} | "
                     f"{row['loss_max_rel']:.2e} | {row['param_max_rel']:.2e} | {row['fallback'] or 'none'} |")
    lines += ["", "## Whole run (784-50-10, batch 100, SGD 0.1, float32; an untimed run first)", "",
              "| backend | asked | ran | iterations | seconds | of which capturing | test acc | fallback |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for row in record["whole_run"]:
        lines.append(f"| {row['backend']} | {row['mode']} | {row['stepper']} | {row['iters']} | {row['seconds']:.2f} "
                     f"| {_cell(row['capture_seconds'], '.2f')} | {_cell(row['test_acc'], '.4f')} | "
                     f"{row['fallback'] or 'none'} |")
    host = next(row["seconds"] for row in record["convnet_epoch"] if row["backend"] == "numpy")
    lines += ["", "## SimpleConvNet, one epoch (batch 100, Adam 0.001, float32; an untimed 5 steps first)", "",
              "| backend | asked | ran | iterations | seconds | host NumPy / it | test acc | fallback |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for row in record["convnet_epoch"]:
        lines.append(f"| {row['backend']} | {row['mode']} | {row['stepper']} | {row['iters']} | {row['seconds']:.2f} "
                     f"| {host / row['seconds']:.1f}x | {_cell(row['test_acc'], '.4f')} | "
                     f"{row['fallback'] or 'none'} |")
    lines += ["", f"## ms per step (median of {record['repeats']} blocks of {record['block']} steps; host NumPy's "
              "1000-wide nets: a tenth of that) and host NumPy / it; a cell that ran otherwise than asked says so",
              "", "| net | batch | " + " | ".join(f"{b} {m}" for b, _, m in record["modes"]) + " |",
              "| --- | ---: |" + " ---: |" * len(record["modes"])]
    for row in record["sweep"]:
        host = row["ms"]["numpy eager"]["ms"]
        cells = []
        for (_, _, mode), cell in zip(record["modes"], row["ms"].values()):
            ran_otherwise = f" (ran {cell['stepper']})" if cell["stepper"] != mode else ""
            cells.append(f"{cell['ms']:.3f} ({host / cell['ms']:.1f}x){ran_otherwise}")
        lines.append(f"| {row['net']} | {row['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parser() -> Parser:
    parser = Parser("python -m benchmarks.gpu_check", __doc__.split("\n\n")[0], examples=(
        "python -m benchmarks.gpu_check --out gpu-results --data-dir benchmarks/gpu-data/fashion-mnist",
        "python -m benchmarks.gpu_check --out gpu-results --preflight",
        "python -m benchmarks.gpu_check --out /tmp/smoke --smoke"))
    parser.add_argument("--out", required=True, type=Path, help="folder (made if missing) for gpu-check.json and .md")
    parser.add_argument("--data-dir", type=Path, help="Fashion-MNIST's four IDX files, for the whole run's accuracy")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, NumPy only (eager and replayed): seconds")
    parser.add_argument("--preflight", action="store_true", help="only the preflight checks (under two minutes)")
    return parser


def _outputs(out: Path) -> dict[str, Path]:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot make the folder ({exc.strerror or exc})") from None
    return plan_outputs({"--out json": out / "gpu-check.json", "--out md": out / "gpu-check.md"})


def _data(args: Any) -> Dataset:
    if args.data_dir is None:
        return synthetic(2_000, 500) if args.smoke else synthetic(60_000, 10_000)
    try:
        return fashion(args.data_dir)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--data-dir {args.data_dir}: {str(exc).splitlines()[0]}") from None


def proof(record: dict[str, Any], data: Dataset, smoke: bool) -> None:
    """Parts 1-4 of the proof into ``record``."""
    rows, block, repeats = record["modes"], record["block"], record["repeats"]
    record["agreement"] = [{"backend": b, "mode": m, **agreement(b, d, m, data, 20 if smoke else 200, 100)}
                           for b, d, m in rows if m != "eager"]
    iters, warm = (100, 20) if smoke else (10_000, 500)
    record["whole_run"] = [{"backend": b, "mode": m, **whole_run(b, d, m, data, iters, warm)} for b, d, m in rows]
    epoch = 20 if smoke else data.x_train.shape[0] // 100  # SimpleConvNet: one epoch, after an untimed 20 steps
    record["convnet_epoch"] = [{"backend": b, "mode": m, **whole_run(b, d, m, data, epoch, 5, "simple-convnet")}
                               for b, d, m in rows]
    if data.name == "synthetic":
        for row in record["whole_run"] + record["convnet_epoch"]:
            row["test_acc"] = None  # synthetic labels: an accuracy would mean nothing
    record["sweep"] = []
    for hidden, batch in (SMOKE_SWEEP if smoke else SWEEP):
        net_name = "-".join(map(str, (data.num_features, *hidden, data.num_classes)))
        # the host's large steps take tens of ms: fewer of them keep the proof within its minutes
        host_block = block if smoke or hidden[0] < 1000 else max(block // 10, 5)
        record["sweep"].append({"net": net_name, "batch": batch, "ms": {
            f"{b} {m}": ms_per_step(b, d, m, data, hidden, batch, host_block if b == "numpy" else block, repeats)
            for b, d, m in rows}})
        print(f"{net_name} @ {batch}: "
              + ", ".join(f"{k} {v['ms']:.3f} ms" for k, v in record["sweep"][-1]["ms"].items()), flush=True)


def main(argv: list[str] | None = None) -> int:
    import sys

    args = parser().parse_args(argv)
    planned = _outputs(args.out)
    data = _data(args)
    rows = modes(args.smoke)
    record: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "command": "python -m benchmarks.gpu_check "
                              + " ".join(argv if argv is not None else sys.argv[1:]), "versions": versions(),
                              "modes": rows, "block": 20 if args.smoke else 200, "repeats": 3 if args.smoke else 5,
                              "data": data.name, "devices": {}}
    for backend, device, _ in rows:
        xp = get_namespace(backend, strict=True)
        record["devices"][backend] = describe_device(xp, resolve_device(xp, device))
    started = time.perf_counter()
    record["preflight"] = preflight(smoke=args.smoke)
    print("\n".join(preflight_markdown(record["preflight"])), flush=True)
    if not args.preflight:
        proof(record, data, args.smoke)
    record["seconds"] = time.perf_counter() - started
    with replace_atomically(planned["--out json"]) as temporary:
        temporary.write_text(json.dumps(record, indent=2) + "\n")
    with replace_atomically(planned["--out md"]) as temporary:
        temporary.write_text(markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main, "python -m benchmarks.gpu_check"))
