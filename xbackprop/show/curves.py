"""Training curves: accuracy and loss against the step, for one run or several (a learning-rate sweep)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from .figures import save_figure

#: Losses spanning more than this factor (largest / smallest, over 1.3 decades) get a log axis; narrower ranges
#: stay linear from zero.
LOG_AXIS_SPAN = 20.0


def results_figure(runs: Sequence[tuple[str, Any]], title: str = "") -> Any:
    """A :class:`matplotlib.figure.Figure` with one column per run: accuracy per evaluation (top), minibatch
    loss per step (bottom).

    The loss panels share one y-axis, linear from zero unless the losses span more than
    :data:`LOG_AXIS_SPAN` (a diverging run), and then logarithmic with plain tick labels;
    the legend sits below the panels, clear of the curves. A diverged run says
    so in its panel title and marks the iteration with a vertical line.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    columns = max(len(runs), 1)
    fig = Figure(figsize=(min(max(4.2 * columns, 6.4), 17), 6.6), layout="constrained")
    axes = fig.subplots(2, columns, squeeze=False, sharex="col", sharey="row")
    finite = [loss for _, result in runs for loss in result.losses if math.isfinite(loss) and loss > 0]
    log_axis = bool(finite) and max(finite) / min(finite) > LOG_AXIS_SPAN
    handles = []
    for column, (label, result) in enumerate(runs):
        ax_acc, ax_loss = axes[0][column], axes[1][column]
        iters = [row["iter"] for row in result.history]
        source = "minibatch" if result.train_acc_source == "batch" else "train"
        handles = [*ax_acc.plot(iters, [row["train_acc"] for row in result.history], "-", lw=1,
                                label=f"{source} accuracy"),
                   *ax_acc.plot(iters, [row["test_acc"] for row in result.history], "-", lw=1,
                                label="test accuracy")]
        losses = [loss if math.isfinite(loss) and (loss > 0 or not log_axis) else math.nan for loss in result.losses]
        handles += ax_loss.plot(range(1, len(losses) + 1), losses, lw=0.6, color="tab:gray", label="minibatch loss")
        heading = label
        if result.diverged_at:
            heading += f" (diverged at iteration {result.diverged_at})"
            for ax in (ax_acc, ax_loss):
                ax.axvline(result.diverged_at, color="tab:red", lw=0.8, ls=":")
        ax_acc.set(ylim=(0, 1), ylabel="accuracy" if column == 0 else None, title=heading)
        ax_loss.set(xlabel="iteration", ylabel="minibatch loss" if column == 0 else None)
        if not log_axis:  # from zero: a loss moving from 2.305 to 2.265 looks that small (no losses: 0 to 1)
            ax_loss.set_ylim(0, max(finite) * 1.08 if finite else 1.0)
        else:
            ax_loss.set_yscale("log")
            ax_loss.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.01, not 10^-2
            ax_loss.yaxis.set_minor_formatter(NullFormatter())
        for ax in (ax_acc, ax_loss):
            ax.grid(alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small", frameon=False)
    if title:
        fig.suptitle(title, wrap=True)
    return fig


def plot_results(path: str | os.PathLike[str], runs: Sequence[tuple[str, Any]], title: str = "") -> None:
    """Write :func:`results_figure` to ``path``, in the format its suffix names (PNG, SVG, PDF, ...)."""
    save_figure(results_figure(runs, title), path, dpi=120)
