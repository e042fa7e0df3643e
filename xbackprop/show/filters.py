"""A conv net's first-layer filters as pictures, before and after training: the book's ``visualize_filter.py``."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["first_filters", "filters_figure"]


def first_filters(net: Any) -> Any:
    """A host NumPy copy of the net's first parameter when it is a convolution's filters ``(FN, C, FH, FW)``, else
    ``None`` (a fully connected net has no filters to show)."""
    from ..backend import to_numpy

    first = next(iter(net.params.values()), None)
    return None if first is None or first.ndim != 4 else to_numpy(first).copy()


def filters_figure(after: Any, before: Any = None, title: str = "", columns: int = 10) -> Any:
    """Each filter's first channel as a grey image (dark: large weights, as the book's ``cmap=gray_r``), after
    training and, given ``before``, before it above them; each filter scaled to its own range."""
    from matplotlib.figure import Figure

    blocks = [("before training", before), ("after training", after)] if before is not None else [
        ("after training", after)]
    count = after.shape[0]
    rows_each = math.ceil(count / columns)
    fig = Figure(figsize=(columns * 0.9, (rows_each * len(blocks)) * 0.95 + 0.6 * len(blocks)))
    grid = fig.add_gridspec(rows_each * len(blocks), columns, hspace=0.35, wspace=0.1)
    for b, (label, filters) in enumerate(blocks):
        for i in range(count):
            ax = fig.add_subplot(grid[b * rows_each + i // columns, i % columns])
            ax.imshow(filters[i, 0], cmap="gray_r", interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(label, loc="left", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
