"""Computational graphs you can see: record the book's layers in a ``with`` block, then draw the graph.

::

    from xbackprop import MulLayer
    from xbackprop.graph import trace

    apple, apple_num, tax = 100, 2, 1.1
    mul_apple_layer, mul_tax_layer = MulLayer(), MulLayer()
    with trace(apple=apple, apple_num=apple_num, tax=tax) as graph:
        apple_price = mul_apple_layer.forward(apple, apple_num)
        price = mul_tax_layer.forward(apple_price, tax)
        dapple_price, dtax = mul_tax_layer.backward(1)
        dapple, dapple_num = mul_apple_layer.backward(dapple_price)
    graph.name(price=price)
    graph.save("apple.svg")        # forward values in black above each arrow, backward in red below

Every layer of :mod:`xbackprop.layers` reports its forward and backward passes to
the innermost :func:`trace`; a value that one layer returned and another received
becomes an arrow between them, any other input a named or numbered leaf. Values
are matched by identity, as Python hands them on (a literal small integer equal to
an earlier result, which Python shares, may be taken for it). Numbers are shown as
values, arrays as their shapes (0-D arrays as values).

``python -m xbackprop.graph apple|apple-orange|shop|two-layer-net --out FILE.svg``
draws the book's examples (needs matplotlib: ``pip install 'xbackprop[plot]'``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import hooks
from .cli import Parser, UsageError, one_line, run_command
from .io import plan_outputs, replace_atomically
from .layers import AddLayer, MulLayer

__all__ = ["ComputationalGraph", "Node", "Edge", "trace", "EXAMPLES"]

_SYMBOLS = {MulLayer: "×", AddLayer: "+"}


@dataclass
class Edge:
    """An arrow into a node: from ``source`` (a :class:`Node`) or from a leaf labelled ``leaf``."""

    value: Any
    source: Node | None = None
    leaf: str | None = None
    grad: Any = None


@dataclass
class Node:
    """One layer's pass: its ``label``, the arrows into it, its output and the gradient that reached it."""

    layer: Any
    label: str
    inputs: list[Edge]
    output: Any
    output_grad: Any = None
    name: str | None = None  # of the output, when the user named it


@dataclass
class ComputationalGraph:
    """The passes recorded by :func:`trace`, in forward order."""

    nodes: list[Node] = field(default_factory=list)
    _names: dict[int, tuple[str, Any]] = field(default_factory=dict, repr=False)

    # -- recording (called through xbackprop.hooks) --
    def forward(self, layer: Any, inputs: tuple[Any, ...], output: Any) -> None:
        edges = []
        for value in inputs:
            source = self._producer_of(value)
            edges.append(Edge(value, source=source, leaf=None if source else self._leaf_label(value)))
        label = self._label_of(layer)
        self.nodes.append(Node(layer, label, edges, output))

    def backward(self, layer: Any, dout: Any, grads: tuple[Any, ...]) -> None:
        for node in reversed(self.nodes):
            if node.layer is layer:
                node.output_grad = dout
                for edge, grad in zip(node.inputs, grads):
                    edge.grad = grad
                return

    def position(self) -> int:
        return len(self.nodes)

    def recorded(self, layer: Any, since: int) -> bool:
        """Whether ``layer`` recorded a forward pass after position ``since``."""
        return any(node.layer is layer for node in self.nodes[since:])

    def backward_recorded(self, layer: Any) -> bool:
        """Whether ``layer``'s last forward pass has its backward recorded."""
        return next((node.output_grad is not None for node in reversed(self.nodes) if node.layer is layer), True)

    # -- naming --
    def name(self, **values: Any) -> ComputationalGraph:
        """Label values (leaves or results) and layers by keyword, matched by identity; returns the graph."""
        for label, value in values.items():
            self._names[id(value)] = (label, value)  # the value is kept, so its id stays its own
        for node in self.nodes:
            node.label = self._label_of(node.layer)
            named = self._names.get(id(node.output))
            if named is not None and named[1] is node.output:
                node.name = named[0]
            for edge in node.inputs:
                if edge.source is None:
                    edge.leaf = self._leaf_label(edge.value)
        return self

    def _producer_of(self, value: Any) -> Node | None:
        for node in reversed(self.nodes):
            if node.output is value:
                return node
        return None

    def _named(self, value: Any) -> str | None:
        named = self._names.get(id(value))
        return named[0] if named is not None and named[1] is value else None

    def _leaf_label(self, value: Any) -> str:
        return self._named(value) or ("x" if _is_array(value) else "")

    def _label_of(self, layer: Any) -> str:
        return self._named(layer) or _SYMBOLS.get(type(layer), type(layer).__name__)

    # -- reading --
    @property
    def outputs(self) -> list[Node]:
        """Nodes whose output no other node received: the right-hand ends of the graph."""
        consumed = {id(edge.source) for node in self.nodes for edge in node.inputs if edge.source is not None}
        return [node for node in self.nodes if id(node) not in consumed]

    def __str__(self) -> str:
        lines = []
        for node in self.nodes:
            ins = ", ".join(f"{_edge_name(edge)}={format_value(edge.value)}" for edge in node.inputs)
            grads = ", ".join(f"d{_edge_name(edge)}={format_value(edge.grad)}" for edge in node.inputs)
            out = node.name or "out"
            lines.append(f"{node.label}: {ins} -> {out}={format_value(node.output)}; "
                         f"backward d{out}={format_value(node.output_grad)} -> {grads}")
        return "\n".join(lines)

    def _repr_svg_(self) -> str | None:
        """The drawing, for Jupyter (needs matplotlib; ``None`` without it or for an empty graph)."""
        if not self.nodes:
            return None
        try:
            return _svg_text(figure(self))
        except ImportError:
            return None

    def save(self, path: str | Path) -> None:
        """Draw the graph into ``path``; the suffix picks the format (``.svg``, ``.png``, ``.pdf``)."""
        draw(self, path)


def _edge_name(edge: Edge) -> str:
    if edge.source is not None:
        return edge.source.name or edge.source.label
    return edge.leaf or "?"


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def format_value(value: Any) -> str:
    """A number to 6 significant digits (the book's 2.2, not 2.2000000000000002); an array as its shape."""
    if value is None:
        return "—"
    if _is_array(value):
        if len(value.shape) == 0:
            return f"{float(value):.4g}"
        return str(tuple(int(n) for n in value.shape))
    if isinstance(value, (int, float)):
        return f"{value:.6g}"
    return str(value)


@contextmanager
def trace(**names: Any) -> Iterator[ComputationalGraph]:
    """Record every layer pass inside the block into a :class:`ComputationalGraph`.

    Keyword arguments name values or layers (as :meth:`ComputationalGraph.name`).
    Tracing is local to the block and its thread or task; blocks nest, the inner one
    recording alone.
    """
    graph = ComputationalGraph()
    graph.name(**names)
    token = hooks.RECORDER.set(graph)
    try:
        yield graph
    finally:
        hooks.RECORDER.reset(token)
        graph.name()  # leaves named before their first use keep their names


# -- drawing --

_ARROW = 1.9  # length of an arrow between two nodes, in drawing units (0.95 inch)
_ROW = 1.25  # distance between rows
_RADIUS = 0.34  # of an operator's circle


def _half_width(node: Node) -> float:
    """Half the width of a node: a circle for an operator symbol, a box around a layer's name."""
    return _RADIUS if node.label in _SYMBOLS.values() else 0.055 * len(node.label) + 0.3


@dataclass
class _Layout:
    nodes: dict[int, tuple[float, float]]  # id(node) -> centre
    leaves: dict[int, tuple[float, float]]  # id(edge) -> where the leaf's arrow starts


def _layout(graph: ComputationalGraph) -> _Layout:
    """Outputs on the right, each input one column further left.

    A graph of operators (the book's shopping examples) is laid out as a tree, each
    node midway between its inputs. A graph of layers is a chain: each layer sits on
    the row of its first input, and its parameters and labels come in from below and
    above.
    """
    chain = any(node.label not in _SYMBOLS.values() for node in graph.nodes)
    depth: dict[int, int] = {}

    def assign_depth(node: Node, d: int) -> None:
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

    def place(node: Node) -> float:
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


def draw(graph: ComputationalGraph, path: str | Path, *, title: str | None = None) -> None:
    """Render ``graph`` with matplotlib: black forward values above the arrows, red backward values below, and a
    key saying so; the format follows ``path``'s suffix (SVG by default)."""
    _save(figure(graph, title=title), path)


def figure(graph: ComputationalGraph, *, title: str | None = None) -> Any:
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


def _canvas(graph: ComputationalGraph, layout: _Layout, title: str | None) -> tuple[Any, Any]:
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


def _draw_node(ax: Any, node: Node, layout: _Layout) -> None:
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
        elif _is_array(edge.value) and len(edge.value.shape) and edge.source is None:
            backward = f"d{_edge_name(edge)} {backward}"
        # Arrows from below or above end a little off the centre, so they do not meet in one point.
        y1 = y + max(min((y0 - y) * 0.25, 0.25), -0.25)
        _draw_arrow(ax, (x0, y0), (x - half, y1), forward, backward)


def _svg_text(fig: Any) -> str:
    import io

    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "xbackprop"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def _save(fig: Any, path: str | Path) -> None:
    """Write the figure in the format ``path``'s suffix names (SVG by default), replacing ``path`` atomically."""
    import matplotlib

    suffix = Path(path).suffix.lstrip(".").lower() or "svg"
    # Text stays text in an SVG (searchable, testable), and the same graph gives the same file;
    # the settings are local to this save.
    settings = {"svg.fonttype": "none", "svg.hashsalt": "xbackprop"}
    metadata = {"Date": None} if suffix in ("svg", "pdf") else None
    with matplotlib.rc_context(settings), replace_atomically(path) as temporary:
        fig.savefig(temporary, format=suffix, dpi=110, metadata=metadata)


# -- the book's examples --


def _apple() -> ComputationalGraph:
    apple, apple_num, tax = 100, 2, 1.1
    mul_apple_layer, mul_tax_layer = MulLayer(), MulLayer()
    with trace(apple=apple, apple_num=apple_num, tax=tax) as graph:
        apple_price = mul_apple_layer.forward(apple, apple_num)
        price = mul_tax_layer.forward(apple_price, tax)
        dapple_price, dtax = mul_tax_layer.backward(1)
        mul_apple_layer.backward(dapple_price)
    return graph.name(price=price)


def _fruit(apple: float, apple_num: int, orange: float, orange_num: int, tax: float) -> ComputationalGraph:
    """(apple * apple_num + orange * orange_num) * tax, as the book's buy_apple_orange.py."""
    mul_apple_layer, mul_orange_layer = MulLayer(), MulLayer()
    add_apple_orange_layer, mul_tax_layer = AddLayer(), MulLayer()
    with trace(apple=apple, apple_num=apple_num, orange=orange, orange_num=orange_num, tax=tax) as graph:
        apple_price = mul_apple_layer.forward(apple, apple_num)
        orange_price = mul_orange_layer.forward(orange, orange_num)
        all_price = add_apple_orange_layer.forward(apple_price, orange_price)
        price = mul_tax_layer.forward(all_price, tax)
        dall_price, dtax = mul_tax_layer.backward(1)
        dapple_price, dorange_price = add_apple_orange_layer.backward(dall_price)
        mul_orange_layer.backward(dorange_price)
        mul_apple_layer.backward(dapple_price)
    return graph.name(price=price)


def _two_layer_net(batch: int = 100) -> ComputationalGraph:
    """One forward and backward pass of TwoLayerNet(784, 50, 10) on a batch of synthetic images."""
    from .backend import get_namespace, host_rng
    from .nets import TwoLayerNet

    xp = get_namespace("numpy")
    net = TwoLayerNet(784, 50, 10, xp=xp, dtype="float32", seed=0)
    rng = host_rng(0)
    x = xp.asarray(rng.random((batch, 784)), dtype=xp.float32)
    t = xp.asarray(rng.integers(0, 10, batch), dtype=xp.uint8)
    with trace(x=x, t=t, **net.params, **net.layers, SoftmaxWithLoss=net.last_layer) as graph:
        net.gradient(x, t)
    return graph.name(L=net.last_layer.loss)


#: The examples ``python -m xbackprop.graph`` draws, by name.
EXAMPLES: dict[str, Callable[[], ComputationalGraph]] = {
    "apple": _apple,
    "apple-orange": lambda: _fruit(100, 2, 150, 3, 1.1),
    "shop": lambda: _fruit(100, 5, 80, 3, 1.08),
    "two-layer-net": _two_layer_net,
}

_TITLES = {
    "apple": "2 apples at 100 yen, 10% tax",
    "apple-orange": "2 apples at 100 yen and 3 oranges at 150 yen, 10% tax",
    "shop": "5 apples at 100 yen and 3 oranges at 80 yen, 8% tax",
    "two-layer-net": "TwoLayerNet(784, 50, 10), a batch of 100: shapes forward, gradients backward",
}


#: What ``--help`` ends with.
HELP_EXAMPLES = (
    "python -m xbackprop.graph apple-orange --out apple-orange.svg",
    "python -m xbackprop.graph two-layer-net --out net.png",
)


def main(argv: list[str] | None = None) -> int:
    """The command; every ending is one line and an exit status (see :mod:`xbackprop.cli`)."""
    return run_command(_graph, "python -m xbackprop.graph", argv)


def _graph(argv: list[str] | None) -> int:
    parser = Parser("python -m xbackprop.graph",
                    "Draw one of the book's computational graphs from a real forward and backward pass.", HELP_EXAMPLES)
    parser.add_argument("example", choices=list(EXAMPLES))
    parser.add_argument("--out", required=True, metavar="FILE", help="where to draw it: FILE.svg, .png or .pdf")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.suffix.lower() not in (".svg", ".png", ".pdf"):
        raise UsageError(f"--out {args.out}: use a .svg, .png or .pdf file name")
    plan_outputs({"--out": out})
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("drawing needs matplotlib: pip install 'xbackprop[plot]'") from None
    graph = EXAMPLES[args.example]()
    print(graph)
    try:
        draw(graph, out, title=_TITLES[args.example])
    except OSError as exc:
        raise UsageError(f"--out {args.out}: {exc.strerror or exc}") from None
    print(one_line(f"wrote {out}"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
