"""The train-step ratios measured side by side: every implementation in turn, round after round, one core each.

    python -m benchmarks.train_step_ratios [--rounds 200] [--steps 10] [--threads 1|default] [--json PATH]

pytest-benchmark times one implementation after the other, so a neighbour's burst on a shared machine lands
on whichever runs at that moment, and the ratios move from run to run. This script times 10 steps of
every implementation back to back in each round (in a new random order each round), and reports each ratio
as the median over rounds of that round's ratio, so noise common to a round cancels.

With ``--threads 1`` (the default) every library runs on one thread: OpenBLAS, PyTorch's intra-op pool
and XLA's CPU pool. Interleaving libraries that each keep idle worker threads spinning (OpenBLAS spins for
a while after every call) on two cores otherwise measures their contention, not their steps.
``--threads default`` leaves every library at its own default.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

GOALS = {"handwritten-numpy": 1.0, "jax-jit": 0.8, "torch-eager-cpu": 0.6, "matmul-floor": 2.0}


def _limit_threads() -> None:
    """One thread per library; must run before numpy, torch or jax are imported."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()


def implementations(threads: str) -> dict[str, Callable[[], None]]:
    """Every step compared, by name; PyTorch and JAX where installed."""
    from . import steps

    x, t = steps.training_data()
    impls = {"xbackprop-numpy": steps.make_xbackprop("numpy", x, t),
             "xbackprop-book-numpy": steps.make_book_step(x, t),
             "handwritten-numpy": steps.make_handwritten(x, t),
             "matmul-floor": steps.make_matmul_floor(x)}
    try:
        import torch

        if threads == "1":
            torch.set_num_threads(1)
        impls["torch-eager-cpu"] = steps.make_torch_eager(x, t)
    except ImportError:
        print("PyTorch not installed: no torch row")
    try:
        impls["jax-jit"] = steps.make_jax_jit(x, t)
    except ImportError:
        print("JAX not installed: no jax row")
    return impls


def interleaved_seconds(impls: dict[str, Callable[[], None]], rounds: int, steps_per_round: int) -> dict[str, list]:
    """Seconds per step of each implementation in each round, every implementation once a round."""
    import numpy as np

    from xbackprop.timing import warm_up

    for step in impls.values():
        warm_up(step)
    seconds: dict[str, list[float]] = {name: [] for name in impls}
    order = np.random.default_rng(0)
    for _ in range(rounds):
        # A new order every round: whoever runs after another library finds the caches full of its data.
        for name in order.permutation(list(impls)):
            step = impls[name]
            t0 = time.perf_counter()
            for _ in range(steps_per_round):
                step()
            seconds[name].append((time.perf_counter() - t0) / steps_per_round)
    return seconds


def ratio_rows(seconds: dict[str, list[float]]) -> list[dict]:
    """Median ms per step and xbackprop's median per-round ratio against each implementation."""
    import numpy as np

    ours = np.array(seconds["xbackprop-numpy"])
    return [{"implementation": name, "median_ms": float(np.median(times)) * 1e3,
             "ratio": float(np.median(ours / np.array(times))), "goal": GOALS.get(name)}
            for name, times in seconds.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10, help="steps of each implementation per round")
    parser.add_argument("--threads", choices=("1", "default"), default="1")
    parser.add_argument("--json", type=Path, help="also write the medians and ratios here")
    args = parser.parse_args(argv)
    if args.threads == "1":
        _limit_threads()
    from xbackprop.files import replace_atomically
    from xbackprop.timing import blas_info

    rows = ratio_rows(interleaved_seconds(implementations(args.threads), args.rounds, args.steps))
    print(f"784-50-10, batch 100, float32, {args.rounds} rounds of {args.steps} steps; threads: {args.threads}; "
          f"BLAS: {blas_info()}\n")
    print("| implementation | median ms/step | xbackprop-numpy / it (median of per-round ratios) | goal |")
    print("| --- | ---: | ---: | --- |")
    for row in rows:
        goal, ratio = row["goal"], row["ratio"]
        verdict = "" if goal is None else f"≤ {goal}: " + (
            "met" if ratio <= goal else f"missed by {ratio / goal - 1:.0%}")
        print(f"| {row['implementation']} | {row['median_ms']:.3f} | {row['ratio']:.2f} | {verdict} |")
    if args.json:
        record = {"threads": args.threads, "blas": blas_info(), "rounds": args.rounds, "steps_per_round": args.steps,
                  "rows": rows}
        with replace_atomically(args.json) as temporary:
            temporary.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
