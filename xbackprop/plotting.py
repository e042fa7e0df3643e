"""Loss and accuracy curves of one or more training runs (needs matplotlib: ``pip install xbackprop[plot]``)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from .trainer import TrainResult

__all__ = ["PlotUnavailableError", "plot_results"]


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed."""


def plot_results(path: str | os.PathLike[str], runs: Sequence[tuple[str, TrainResult]], title: str = "") -> None:
    """Write a PNG with the loss per step (left) and train/test accuracy per evaluation (right) of each run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailableError("--plot needs matplotlib: pip install 'xbackprop[plot]'") from None

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, result in runs:
        losses = [loss if math.isfinite(loss) else math.nan for loss in result.losses]
        (line,) = ax_loss.plot(range(1, len(losses) + 1), losses, lw=0.6, alpha=0.8, label=label)
        iters = [row["iter"] for row in result.history]
        ax_acc.plot(iters, [row["train_acc"] for row in result.history], "-", color=line.get_color(),
                    label=f"{label} train")
        ax_acc.plot(iters, [row["test_acc"] for row in result.history], "--", color=line.get_color(),
                    label=f"{label} test")
    ax_loss.set(xlabel="iteration", ylabel="minibatch loss", yscale="log", title="loss")
    ax_acc.set(xlabel="iteration", ylabel="accuracy", ylim=(0, 1), title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
