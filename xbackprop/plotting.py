"""Accuracy and loss curves of one or more training runs (needs matplotlib: ``pip install xbackprop[plot]``).

Figures are drawn on a :class:`matplotlib.figure.Figure` of their own, never through
``pyplot``'s global state, so plotting neither switches a notebook's backend nor
leaves figures open. Files are written beside their target and renamed into place.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from .io import replace_atomically
from .trainer import TrainResult

__all__ = ["plot_results", "results_figure", "confusion_figure", "mistakes_figure", "png_bytes", "save_figure"]

#: Losses spanning more than this factor (largest / smallest, over 1.3 decades) get a log axis; narrower ranges
#: stay linear from zero.
LOG_AXIS_SPAN = 20.0


def results_figure(runs: Sequence[tuple[str, TrainResult]], title: str = "") -> Any:
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


def plot_results(path: str | os.PathLike[str], runs: Sequence[tuple[str, TrainResult]], title: str = "") -> None:
    """Write :func:`results_figure` to ``path``, in the format its suffix names (PNG, SVG, PDF, ...)."""
    save_figure(results_figure(runs, title), path, dpi=120)


def confusion_figure(matrix: Sequence[Sequence[int]], names: Sequence[str], title: str) -> Any:
    """The confusion matrix as a picture: rows the true class, columns the predicted one, each cell's count
    written in it, shaded by the share of its row (so a weak class shows at any class size)."""
    from matplotlib.figure import Figure

    classes = len(matrix)
    shares = [[count / max(sum(row), 1) for count in row] for row in matrix]
    fig = Figure(figsize=(1.0 + 0.62 * classes, 1.6 + 0.55 * classes), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    color="white" if shares[i][j] > 0.5 else "black")
    ax.set_xticks(range(classes), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(classes), names, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    fig.suptitle(title, wrap=True, fontsize=10)
    return fig


def mistakes_figure(images: Sequence[Any], captions: Sequence[str], title: str, columns: int = 6) -> Any:
    """A grid of grey images ``(H, W)`` in ``[0, 1]`` with a caption under each (true, predicted, probability)."""
    from matplotlib.figure import Figure

    rows = max(math.ceil(len(images) / columns), 1)
    fig = Figure(figsize=(1.9 * columns, 2.2 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(ax for row in axes for ax in row):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k], cmap="gray", vmin=0, vmax=1)
            ax.set_title(captions[k], fontsize=7.5)
    fig.suptitle(title, wrap=True, fontsize=10)
    return fig


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> None:
    """Write ``fig`` to ``path`` (format from its suffix) through a temporary file beside it."""
    with replace_atomically(path) as temporary:
        fig.savefig(temporary, dpi=dpi, format=_format_of(path))


def png_bytes(fig: Any, dpi: int = 90) -> bytes:
    """``fig`` as PNG bytes (for a notebook's ``_repr_png_``)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _format_of(path: str | os.PathLike[str]) -> str:
    """The figure format named by ``path``'s suffix (the temporary name has none)."""
    suffix = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    return suffix or "png"
