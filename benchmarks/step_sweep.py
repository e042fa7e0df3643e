"""A training step across net sizes, on every backend here, eager and compiled: where does an accelerator win?

    python -m benchmarks.step_sweep                          # table only
    python -m benchmarks.step_sweep --out benchmarks/results # also JSON and a log-log PNG, named for the machine

For each size (784-50-10 at batch 100 up to 784-1000-1000-10 at batch 1000) and each
importable backend (NumPy on the host; JAX; PyTorch on the CPU and, with a GPU, CUDA;
CuPy with a GPU), times one SGD step of xbackprop's float32 net, batch draw
included: step by step as the trainer runs it on that backend ("eager"; JAX's
gradient is jitted), and, where the backend compiles whole loops, 100 steps per
call of the trainer's compiled loop ("compiled", per step). Every figure is a
median of back-to-back calls after a warm-up, all device work finished.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import date
from pathlib import Path

from xbackprop.backend import BackendUnavailableError, describe_device, get_namespace
from xbackprop.files import replace_atomically
from xbackprop.timing import machine_description, median_seconds

from . import steps

#: (layer sizes, batch): from the book's net to one where the products dominate.
SWEEP = [
    ((784, 50, 10), 100),
    ((784, 200, 10), 200),
    ((784, 500, 500, 10), 500),
    ((784, 1000, 1000, 10), 1000),
]
BACKENDS = [("numpy", None), ("jax", None), ("torch", "cpu"), ("torch", "cuda"), ("cupy", None)]
BLOCK = 100


def available(backend: str, device: str | None) -> bool:
    try:
        get_namespace(backend, strict=True)
    except BackendUnavailableError:
        return False
    if backend == "torch" and device == "cuda":
        import torch

        return torch.cuda.is_available()
    return True


def measure(backend: str, device: str | None, sizes: tuple[int, ...], batch: int, data) -> list[dict]:
    """Rows for one backend and size: eager, and compiled where the backend compiles loops."""
    label = backend if device is None else f"{backend}-{device}"
    rows = []
    eager = steps.make_xbackprop(backend, *data, batch=batch, sizes=sizes, device=device)
    rows.append({"backend": label, "mode": "eager", "sizes": "-".join(map(str, sizes)), "batch": batch,
                 "seconds_per_step": median_seconds(eager, min_time=0.5, min_runs=5)})
    compiled = steps.make_xbackprop_blocks(backend, *data, batch=batch, sizes=sizes, block=BLOCK, device=device)
    if compiled is not None:
        per_call = median_seconds(compiled, min_time=0.5, min_runs=3)
        rows.append({**rows[0], "mode": f"compiled ({BLOCK} steps a call)", "seconds_per_step": per_call / BLOCK})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    for key in sorted({(r["backend"], r["mode"]) for r in rows}):
        mine = [r for r in rows if (r["backend"], r["mode"]) == key]
        work = [r["flops_per_step"] for r in mine]
        ax.plot(work, [r["seconds_per_step"] for r in mine], marker="o", ls="-" if key[1] == "eager" else "--",
                label=f"{key[0]}, {key[1]}")
    ax.set(xscale="log", yscale="log", xlabel="floating-point operations per step",
           ylabel="seconds per step", title="one SGD step, 784-50-10 @100 ... 784-1000-1000-10 @1000")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    with replace_atomically(path) as temporary:
        fig.savefig(temporary, dpi=120, format="png")


def flops(sizes: tuple[int, ...], batch: int) -> int:
    """Multiply-adds of one step's matrix products, counted twice: forward, dW and dx (none for the data)."""
    products = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * batch * (3 * sum(products) - products[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", metavar="DIR", help="write the rows as JSON and a log-log PNG into DIR")
    parser.add_argument("--name", help="file name stem (default: derived from the machine)")
    parser.add_argument("--sizes", type=int, default=len(SWEEP), metavar="N",
                        help=f"measure the first N sizes only (default all {len(SWEEP)})")
    args = parser.parse_args(argv)
    if args.out is not None and not Path(args.out).is_dir():
        print(f"python -m benchmarks.step_sweep: error: --out {args.out}: no such folder", file=sys.stderr)
        return 2
    data = steps.training_data(n=20_000)
    rows = []
    for backend, device in BACKENDS:
        if not available(backend, device):
            print(f"  {backend}{'' if device is None else '-' + device}: not available here", file=sys.stderr)
            continue
        for sizes, batch in SWEEP[: args.sizes]:
            for row in measure(backend, device, sizes, batch, data):
                row["flops_per_step"] = flops(sizes, batch)
                rows.append(row)
                print(f"  {row['backend']} {row['mode']} {row['sizes']} @{batch}: "
                      f"{row['seconds_per_step'] * 1e3:.3f} ms", file=sys.stderr, flush=True)
    host = machine_description()
    devices = sorted({describe_device(get_namespace(b)) for b, _ in BACKENDS if available(b, None)})
    print(f"# one SGD step by size — {date.today()}; {host}; devices: {', '.join(devices)}\n")
    print("| backend | mode | net | batch | ms per step | GFLOP/s |\n| --- | --- | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['backend']} | {r['mode']} | {r['sizes']} | {r['batch']} | {r['seconds_per_step'] * 1e3:.3f} | "
              f"{r['flops_per_step'] / r['seconds_per_step'] / 1e9:.1f} |")
    if args.out:
        name = args.name or f"step-sweep-{platform.node() or 'machine'}"
        record = {"date": str(date.today()), "host": host, "devices": devices, "python": platform.python_version(),
                  "command": "python -m benchmarks.step_sweep " + " ".join(argv or sys.argv[1:]), "rows": rows}
        with replace_atomically(Path(args.out) / f"{name}.json") as temporary:
            temporary.write_text(json.dumps(record, indent=1))
        try:
            plot(rows, Path(args.out) / f"{name}.png")
        except ImportError:
            print("(no plot: matplotlib is not installed)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
