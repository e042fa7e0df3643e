"""The SimpleConvNet step ratios measured side by side (see ``train_step_ratios``): every implementation in turn,
round after round, one thread each, each ratio the median over rounds of that round's ratio.

    XBACKPROP_BOOK=path/to/deep-learning-from-scratch python -m benchmarks.conv_step_ratios [--rounds 30]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .train_step_ratios import _limit_threads, interleaved_seconds, ratio_rows

#: xbackprop-numpy's time over each peer's, at most (issue: chapter 7 on every backend).
GOALS = {"torch-eager-cpu": 1.0, "book-numpy": 0.25}


def implementations() -> dict[str, Callable[[], None]]:
    from . import conv_steps

    x, t = conv_steps.image_data()
    impls = {"xbackprop-numpy": conv_steps.make_xbackprop("numpy", x, t)}
    for backend in ("torch", "jax"):
        try:
            impls[f"xbackprop-{backend}"] = conv_steps.make_xbackprop(backend, x, t)
        except Exception as exc:  # not installed
            print(f"no xbackprop-{backend} row: {exc}")
    try:
        import torch

        torch.set_num_threads(1)
        impls["torch-eager-cpu"] = conv_steps.make_torch_eager(x, t)
    except ImportError:
        print("PyTorch not installed: no torch row")
    book = conv_steps.make_book(x, t)
    if book is None:
        print(f"no book-numpy row: set {conv_steps.BOOK_ENV} to a checkout of oreilly-japan/deep-learning-from-scratch")
    else:
        impls["book-numpy"] = book
    return impls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=3, help="steps of each implementation per round")
    args = parser.parse_args(argv)
    _limit_threads()
    from xbackprop.timing import blas_info

    rows = ratio_rows(interleaved_seconds(implementations(), args.rounds, args.steps))
    print(f"SimpleConvNet (30 5x5 filters, 100 hidden), 28x28, batch 100, float32, SGD; {args.rounds} rounds of "
          f"{args.steps} steps; one thread each; BLAS: {blas_info()}\n")
    print("| implementation | median ms/step | xbackprop-numpy / it (median of per-round ratios) | goal |")
    print("| --- | ---: | ---: | --- |")
    for row in rows:
        goal = GOALS.get(row["implementation"])
        verdict = "" if goal is None else f"≤ {goal}: " + (
            "met" if row["ratio"] <= goal else f"missed by {row['ratio'] / goal - 1:.0%}")
        print(f"| {row['implementation']} | {row['median_ms']:.2f} | {row['ratio']:.2f} | {verdict} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
