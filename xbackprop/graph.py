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
draws the book's examples (needs matplotlib: ``pip install 'xbackprop[plot]'``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import hooks
from .cli import Parser, UsageError, one_line, run_command
from .files import plan_outputs
from .layers import AddLayer, MulLayer
from .show.figures import svg_text
from .show.graph_figure import draw, edge_name, figure, format_value, is_array

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
        return self._named(value) or ("x" if is_array(value) else "")

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
            ins = ", ".join(f"{edge_name(edge)}={format_value(edge.value)}" for edge in node.inputs)
            grads = ", ".join(f"d{edge_name(edge)}={format_value(edge.grad)}" for edge in node.inputs)
            out = node.name or "out"
            lines.append(f"{node.label}: {ins} -> {out}={format_value(node.output)}; "
                         f"backward d{out}={format_value(node.output_grad)} -> {grads}")
        return "\n".join(lines)

    def _repr_svg_(self) -> str | None:
        """The drawing, for Jupyter (needs matplotlib; ``None`` without it or for an empty graph)."""
        if not self.nodes:
            return None
        try:
            return svg_text(figure(self))
        except ImportError:
            return None

    def save(self, path: str | Path) -> None:
        """Draw the graph into ``path``; the suffix picks the format (``.svg``, ``.png``, ``.pdf``)."""
        draw(self, path)


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
    from .two_layer_net import TwoLayerNet

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
