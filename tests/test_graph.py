"""Computational graphs: recorded from real passes, drawn with forward values in black and backward in red."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import asarray

from xbackprop import AddLayer, MulLayer, TwoLayerNet
from xbackprop.graph import main, trace

RED = "fill: #d62728"


def svg_texts(path):
    """``[(text, is_red)]`` of every text element of an SVG, in document order."""
    texts = []
    for element in ET.parse(path).iter("{http://www.w3.org/2000/svg}text"):
        texts.append(("".join(element.itertext()), RED in element.get("style", "")))
    return texts


@pytest.fixture
def drawn(tmp_path):
    pytest.importorskip("matplotlib", reason="drawing needs matplotlib (pip install 'xbackprop[plot]')")

    def draw(example):
        out = tmp_path / f"{example}.svg"
        assert main([example, "--out", str(out)]) == 0
        return svg_texts(out)

    return draw


@pytest.mark.parametrize(
    ("example", "forward", "backward"),
    [
        ("apple", ["apple", "100", "2", "200", "1.1", "220", "price", "×"], ["2.2", "110", "1.1", "200", "1"]),
        ("apple-orange", ["150", "3", "450", "650", "715", "+"], ["3.3", "165", "650", "2.2", "110"]),
        # 5 apples at 100 and 3 oranges at 80 with 8% tax: d price / d apple = 5 x 1.08 = 5.4
        ("shop", ["100", "5", "80", "3", "500", "240", "740", "1.08", "799.2"], ["5.4", "108", "3.24", "86.4", "740"]),
    ],
)
def test_the_books_graphs_show_their_values(drawn, example, forward, backward):
    texts = drawn(example)
    black = {text for text, red in texts if not red}
    red = {text for text, red in texts if red}
    assert set(forward) <= black, set(forward) - black
    assert set(backward) <= red, set(backward) - red


def test_two_layer_net_graph_shows_shapes_and_gradients(drawn):
    texts = drawn("two-layer-net")
    black = {text for text, red in texts if not red}
    red = {text for text, red in texts if red}
    assert {"Affine1", "Relu1", "Affine2", "SoftmaxWithLoss", "x", "W1", "b1", "W2", "b2", "t", "L"} <= black
    assert {"(100, 784)", "(784, 50)", "(50,)", "(100, 50)", "(50, 10)", "(10,)", "(100, 10)", "(100,)"} <= black
    assert {"dW1 (784, 50)", "db1 (50,)", "dW2 (50, 10)", "db2 (10,)", "(100, 50)", "(100, 10)", "1"} <= red
    assert not any(text.startswith("dx") or text.startswith("dt") for text in red)  # never computed


def test_png_and_bad_outputs(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="drawing needs matplotlib (pip install 'xbackprop[plot]')")
    assert main(["apple", "--out", str(tmp_path / "apple.png")]) == 0
    assert (tmp_path / "apple.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    for out, message in [("apple.gif", "use a .svg, .png or .pdf"), ("nowhere/apple.svg", "does not exist")]:
        assert main(["apple", "--out", str(tmp_path / out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err


def test_trace_your_own_expression():
    apple, apple_num, tax = 100.0, 4, 1.05
    mul_apple, mul_tax = MulLayer(), MulLayer()
    with trace(apple=apple, tax=tax) as graph:
        price = mul_tax.forward(mul_apple.forward(apple, apple_num), tax)
        dapple_price, dtax = mul_tax.backward(1)
        dapple, _ = mul_apple.backward(dapple_price)
    graph.name(price=price)
    first, second = graph.nodes
    assert [edge.leaf for edge in first.inputs] == ["apple", ""] and first.inputs[0].grad == dapple
    assert second.inputs[0].source is first and second.inputs[1].leaf == "tax" and second.inputs[1].grad == dtax
    assert graph.outputs == [second] and second.name == "price" and second.output_grad == 1
    assert str(graph).splitlines()[1] == "×: ×=400, tax=1.05 -> price=420; backward dprice=1 -> d×=1.05, dtax=400"


def test_tracing_is_local_to_the_block():
    layer = AddLayer()
    layer.forward(1.0, 2.0)  # outside any trace: nothing to record into
    with trace() as outer:
        layer.forward(1.0, 2.0)
        with trace() as inner:
            layer.forward(3.0, 4.0)
        layer.forward(5.0, 6.0)
    layer.forward(7.0, 8.0)
    assert [node.output for node in outer.nodes] == [3.0, 11.0]
    assert [node.output for node in inner.nodes] == [7.0]


def test_trace_records_a_net_on_every_backend(xp):
    net = TwoLayerNet(6, 4, 3, weight_init_std=0.5, xp=xp, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    x, t = asarray(xp, rng.random((5, 6))), xp.asarray(asarray(xp, rng.integers(0, 3, 5)), dtype=xp.int64)
    with trace(x=x, t=t, **net.params, **net.layers) as graph:
        grads = net.gradient(x, t)
    assert [node.label for node in graph.nodes] == ["Affine1", "Relu1", "Affine2", "SoftmaxWithLoss"]
    affine1, _, affine2, last = graph.nodes
    assert [edge.leaf for edge in affine1.inputs] == ["x", "W1", "b1"]
    assert affine1.inputs[1].grad is grads["W1"] and affine2.inputs[2].grad is grads["b2"]
    assert affine1.inputs[0].grad is None  # the first layer computes no input gradient
    assert last.inputs[0].source is affine2 and last.output_grad == 1
    lines = str(graph).splitlines()
    assert lines[0].startswith("Affine1: x=(5, 6), W1=(6, 4), b1=(4,) -> out=(5, 4)")


class SilentScale:
    """A learner's layer that reports nothing to a trace: y = x * s."""

    def __init__(self, s):
        self.params, self.grads = {"s": s}, {}

    def forward(self, x):
        self.x = x
        return x * self.params["s"]

    def backward(self, dout):
        self.grads["s"] = (dout * self.x).sum(axis=0)
        return dout * self.params["s"]


def test_a_layer_that_reports_nothing_is_drawn_as_a_box_in_its_place():
    from xbackprop import Affine, LayerNet, Relu

    rng = np.random.default_rng(0)
    net = LayerNet([Affine(rng.standard_normal((4, 5)), np.zeros(5)), SilentScale(np.ones(5)), Relu(),
                    Affine(rng.standard_normal((5, 3)), np.zeros(3))])
    with trace() as graph:
        net.gradient(rng.standard_normal((2, 4)), np.array([0, 2]))
    labels = [node.label for node in graph.nodes]
    assert labels == ["Affine", "SilentScale", "Relu", "Affine", "SoftmaxWithLoss"]
    scale = graph.nodes[1]
    assert scale.inputs[0].source is graph.nodes[0] and graph.nodes[2].inputs[0].source is scale  # one chain
    assert scale.output_grad is not None and scale.inputs[0].grad is not None
    assert len(graph.outputs) == 1
