"""What a notebook shows: a net's repr, a traced graph's SVG, a training result's curves; and the curves'
axes and keys that keep a picture from misleading."""

from __future__ import annotations

import numpy as np
import pytest

from xbackprop import MulLayer, MultiLayerNet, TwoLayerNet
from xbackprop.graph import trace
from xbackprop.training import TrainResult


def test_a_net_lists_its_layers_shapes_count_backend_dtype_and_device():
    text = repr(TwoLayerNet(784, 50, 10, xp="numpy", dtype="float32"))
    assert text.splitlines()[0] == "TwoLayerNet: 39,760 parameters, numpy, float32, device cpu"
    assert "Affine1     Affine           W1 (784, 50)  b1 (50,)" in text
    assert text.splitlines()[-1].split() == ["last_layer", "SoftmaxWithLoss"]
    with_bn = repr(MultiLayerNet(4, [3], 2, use_batchnorm=True))
    assert "gamma1 (3,)  beta1 (3,)  running_mean1 (3,)  running_var1 (3,)" in with_bn


def test_a_traced_graph_shows_itself_as_svg_with_its_key():
    pytest.importorskip("matplotlib", reason="drawings need matplotlib: pip install 'xbackprop[plot]'")
    with trace(apple=100.0, apple_num=2.0) as graph:
        layer = MulLayer()
        layer.forward(100.0, 2.0)
        layer.backward(1.0)
    svg = graph._repr_svg_()
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    assert "forward values (black, above the arrows)" in svg and "backward values ∂L/∂(value) (red, below)" in svg
    with trace() as empty:
        pass
    assert empty._repr_svg_() is None


def result(losses, history=None):
    run = TrainResult(batch_size=10, losses=list(losses))
    run.history = history or [{"iter": 1, "loss": losses[0], "train_acc": 0.1, "test_acc": 0.1},
                              {"iter": len(losses), "loss": losses[-1], "train_acc": 0.5, "test_acc": 0.4}]
    return run


def test_a_training_result_shows_its_curves_as_png():
    pytest.importorskip("matplotlib", reason="curves need matplotlib: pip install 'xbackprop[plot]'")
    png = result(np.linspace(2.3, 0.5, 50))._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_panels_share_a_linear_axis_from_zero_unless_the_losses_span_decades():
    pytest.importorskip("matplotlib", reason="curves need matplotlib: pip install 'xbackprop[plot]'")
    from xbackprop.show.curves import results_figure

    slow, fast = result(np.linspace(2.305, 2.265, 100)), result(np.linspace(2.3, 1.0, 100))
    fig = results_figure([("lr 0.01", slow), ("lr 0.1", fast)], "title")
    loss_axes = fig.axes[2:4]
    assert [ax.get_yscale() for ax in loss_axes] == ["linear", "linear"]
    assert loss_axes[0].get_ylim() == loss_axes[1].get_ylim() and loss_axes[0].get_ylim()[0] == 0
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)  # one key, below the panels

    wide = results_figure([("lr 1", result(np.geomspace(2.3, 0.002, 100)))])
    loss_axis = wide.axes[1]
    assert loss_axis.get_yscale() == "log"
    labels = [loss_axis.yaxis.get_major_formatter()(value, 0) for value in (0.01, 0.1, 1)]
    assert labels == ["0.01", "0.1", "1"]
