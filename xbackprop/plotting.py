"""Accuracy and loss curves of one or more training runs (needs matplotlib: ``pip install xbackprop[plot]``).

Figures are drawn on a :class:`matplotlib.figure.Figure` of their own, never through
``pyplot``'s global state, so plotting neither switches a notebook's backend nor
leaves figures open. Files are written beside their target and renamed into place.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from .io import replace_atomically
from .trainer import TrainResult

__all__ = ["plot_results"]


def plot_results(path: str | os.PathLike[str], runs: Sequence[tuple[str, TrainResult]], title: str = "") -> None:
    """Write a figure with one column per run: accuracy per evaluation (top), minibatch loss per step (bottom).

    A diverged run says so in its panel title and marks the iteration with a
    vertical line. The format follows ``path``'s suffix (PNG, SVG, PDF, ...).
    """
    from matplotlib.figure import Figure

    columns = max(len(runs), 1)
    fig = Figure(figsize=(min(4.2 * columns, 17), 6.4), layout="constrained")
    axes = fig.subplots(2, columns, squeeze=False, sharex="col")
    for column, (label, result) in enumerate(runs):
        ax_acc, ax_loss = axes[0][column], axes[1][column]
        iters = [row["iter"] for row in result.history]
        source = "minibatch" if result.train_acc_source == "batch" else "train"
        ax_acc.plot(iters, [row["train_acc"] for row in result.history], "-", lw=1, label=source)
        ax_acc.plot(iters, [row["test_acc"] for row in result.history], "-", lw=1, label="test")
        losses = [loss if math.isfinite(loss) and loss > 0 else math.nan for loss in result.losses]
        ax_loss.plot(range(1, len(losses) + 1), losses, lw=0.6, color="tab:gray")
        heading = label
        if result.diverged_at:
            heading += f" (diverged at iteration {result.diverged_at})"
            for ax in (ax_acc, ax_loss):
                ax.axvline(result.diverged_at, color="tab:red", lw=0.8, ls=":")
        ax_acc.set(ylim=(0, 1), ylabel="accuracy" if column == 0 else None, title=heading)
        ax_loss.set(xlabel="iteration", yscale="log", ylabel="minibatch loss" if column == 0 else None)
        ax_acc.legend(fontsize="small", loc="lower right")
        for ax in (ax_acc, ax_loss):
            ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    with replace_atomically(path) as temporary:
        fig.savefig(temporary, dpi=120, format=_format_of(path))


def _format_of(path: str | os.PathLike[str]) -> str:
    """The figure format named by ``path``'s suffix (the temporary name has none)."""
    suffix = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    return suffix or "png"
