"""Drawing a recorded computational graph with matplotlib, as the book draws them: operators in circles,
layers in boxes, forward values in black above each arrow and backward values in red below.

It reads the nodes by their attributes (``label``, ``inputs``, ``output``, ``output_grad``, ``name``; each input's
``value``, ``grad``, ``source``, ``leaf``), so it needs nothing of the recorder in :mod:`xbackprop.graph`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .figures import save_figure

#: The labels drawn in a circle: the book's operators (a layer's name gets a box).
OPERATORS = ("×", "+")


def edge_name(edge: Any) -> str:
    if edge.source is not None:
        return edge.source.name or edge.source.label
    return edge.leaf or "?"


def is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def format_value(value: Any) -> str:
    """A number to 6 significant digits (the book's 2.2, not 2.2000000000000002); an array as its shape."""
    if value is None:
        return "—"
    if is_array(value):
        if len(value.shape) == 0:
            return f"{float(value):.4g}"
        return str(tuple(int(n) for n in value.shape))
    if isinstance(value, (int, float)):
        return f"{value:.6g}"
    return str(value)


_ARROW = 1.9  # length of an arrow between two nodes, in drawing units (0.95 inch)


_ROW = 1.25  # distance between rows


_RADIUS = 0.34  # of an operator's circle


def _half_width(node: Any) -> float:
    """Half the width of a node: a circle for an operator symbol, a box around a layer's name."""
    return _RADIUS if node.label in OPERATORS else 0.055 * len(node.label) + 0.3


@dataclass
class _Layout:
    nodes: dict[int, tuple[float, float]]  # id(node) -> centre
    leaves: dict[int, tuple[float, float]]  # id(edge) -> where the leaf's arrow starts


def _layout(graph: Any) -> _Layout:
    """Outputs on the right, each input one column further left.

    A graph of operators (the book's shopping examples) is laid out as a tree, each
    node midway between its inputs. A graph of layers is a chain: each layer sits on
    the row of its first input, and its parameters and labels come in from below and
    above.
    """
    chain = any(node.label not in OPERATORS for node in graph.nodes)
    depth: dict[int, int] = {}

    def assign_depth(node: Any, d: int) -> None:
        if depth.get(id(node), -1) >= d:
            return
        depth[id(node)] = d
        for edge in node.inputs:
            if edge.source is not None:
                assign_depth(edge.source, d + 1)

    for output in graph.outputs:
        assign_depth(output, 0)
    widths = [0.0] * (max(depth.values()) + 2)
    for node in graph.nodes:
        widths[depth[id(node)]] = max(widths[depth[id(node)]], _half_width(node))
    column_x = [0.0]
    for d in range(1, len(widths)):
        column_x.append(column_x[-1] - widths[d - 1] - _ARROW - max(widths[d], 0.0))

    layout = _Layout({}, {})
    next_row = [0.0]

    def place(node: Any) -> float:
        d = depth[id(node)]
        x = column_x[d]
        leaf_x = x - _half_width(node) - _ARROW if chain else column_x[d + 1]
        rows: list[float] = []
        for k, edge in enumerate(node.inputs):
            if edge.source is not None:
                known = layout.nodes.get(id(edge.source))
                rows.append(known[1] if known is not None else place(edge.source))
            elif chain and k > 0:  # a parameter or label: below the chain, then above, then further below
                side = 1 if k % 2 else -1
                layout.leaves[id(edge)] = (leaf_x, rows[0] + side * _ROW * 1.25 * ((k + 1) // 2))
                rows.append(rows[0])
            else:
                layout.leaves[id(edge)] = (leaf_x, next_row[0])
                rows.append(next_row[0])
                next_row[0] += _ROW
        y = rows[0] if chain else sum(rows) / len(rows)
        layout.nodes[id(node)] = (x, y)
        return y

    for output in graph.outputs:
        place(output)
        next_row[0] += _ROW * 0.5
    return layout


def draw(graph: Any, path: str | Path, *, title: str | None = None) -> None:
    """Render ``graph`` with matplotlib: black forward values above the arrows, red backward values below, and a
    key saying so; the format follows ``path``'s suffix (SVG by default)."""
    save_figure(figure(graph, title=title), path, default_format="svg")


def figure(graph: Any, *, title: str | None = None) -> Any:
    """``graph`` drawn on a :class:`matplotlib.figure.Figure` of its own (see :func:`draw`)."""
    if not graph.nodes:
        raise ValueError("the graph is empty: no layer ran inside the trace")
    layout = _layout(graph)
    fig, ax = _canvas(graph, layout, title)
    for node in graph.nodes:
        _draw_node(ax, node, layout)
    for node in graph.outputs:
        x, y = layout.nodes[id(node)]
        x0 = x + _half_width(node)
        _draw_arrow(ax, (x0, y), (x0 + _ARROW, y), format_value(node.output),
                    None if node.output_grad is None else format_value(node.output_grad))
        ax.text(x0 + _ARROW + 0.1, y, node.name or "", ha="left", va="center", fontsize=11)
    fig.text(0.01, 0.01, "forward values (black, above the arrows)", color="black", fontsize=9, ha="left",
             va="bottom")
    fig.text(0.99, 0.01, "backward values ∂L/∂(value) (red, below)", color="tab:red", fontsize=9,
             ha="right", va="bottom")
    return fig


def _canvas(graph: Any, layout: _Layout, title: str | None) -> tuple[Any, Any]:
    """A figure and axes sized to the layout, rows running downwards, no frame."""
    from matplotlib.figure import Figure

    centres = list(layout.nodes.values()) + list(layout.leaves.values())
    left = min(x for x, _ in layout.leaves.values()) - 1.4 if layout.leaves else min(x for x, _ in centres) - 1
    right = max(x + _half_width(node) for node in graph.nodes for x, _ in [layout.nodes[id(node)]]) + _ARROW + 1.2
    top, bottom = max(y for _, y in centres) + 0.8, min(y for _, y in centres) - 0.8
    scale = 0.95  # inches per unit
    fig = Figure(figsize=((right - left) * scale, (top - bottom) * scale + (0.4 if title else 0)))
    ax = fig.add_axes((0, 0, 1, 0.94 if title else 1))
    ax.set_xlim(left, right)
    ax.set_ylim(top, bottom)  # rows run downwards, as read
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        fig.suptitle(title, y=0.99, va="top", fontsize=11)
    return fig, ax


def _draw_arrow(ax: Any, start: tuple[float, float], end: tuple[float, float], forward: str,
                backward: str | None) -> None:
    """An arrow with its forward value in black and its backward value (if any) in red."""
    from matplotlib.patches import FancyArrowPatch

    (x0, y0), (x1, y1) = start, end
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, lw=1.1, color="black",
                                 shrinkA=0, shrinkB=0))
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    if abs(y1 - y0) > 1.0:  # a steep arrow: forward value on its left, backward on its right
        ax.text(mx - 0.15, my, forward, ha="right", va="center", fontsize=10, color="black")
        if backward is not None:
            ax.text(mx + 0.15, my, backward, ha="left", va="center", fontsize=10, color="tab:red")
        return
    ax.text(mx, my - 0.1, forward, ha="center", va="bottom", fontsize=10, color="black")
    if backward is not None:
        ax.text(mx, my + 0.12, backward, ha="center", va="top", fontsize=10, color="tab:red")


def _draw_node(ax: Any, node: Any, layout: _Layout) -> None:
    """A node (a circle around an operator, a box around a layer's name) and the arrows into it."""
    from matplotlib.patches import Circle, FancyBboxPatch

    x, y = layout.nodes[id(node)]
    half = _half_width(node)
    if half == _RADIUS:
        ax.add_patch(Circle((x, y), _RADIUS, fill=False, lw=1.3))
    else:
        ax.add_patch(FancyBboxPatch((x - half, y - 0.3), 2 * half, 0.6,
                                    boxstyle="round,pad=0.02,rounding_size=0.12", fill=False, lw=1.3))
    ax.text(x, y, node.label, ha="center", va="center", fontsize=12 if half == _RADIUS else 10)
    for edge in node.inputs:
        if edge.source is not None:
            x0, y0 = layout.nodes[id(edge.source)]
            x0 += _half_width(edge.source)
        else:
            x0, y0 = layout.leaves[id(edge)]
            ax.text(x0 - 0.08, y0, edge.leaf or "", ha="right", va="center", fontsize=11)
        forward, backward = format_value(edge.value), format_value(edge.grad)
        if edge.grad is None:
            backward = None
        elif is_array(edge.value) and len(edge.value.shape) and edge.source is None:
            backward = f"d{edge_name(edge)} {backward}"
        # Arrows from below or above end a little off the centre, so they do not meet in one point.
        y1 = y + max(min((y0 - y) * 0.25, 0.25), -0.25)
        _draw_arrow(ax, (x0, y0), (x - half, y1), forward, backward)


