"""Chapter 7's im2col/col2im, Convolution and Pooling on every backend, against PyTorch's conv2d and max_pool2d
(with autograd) in float64."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asarray

from xbackprop.backend import to_numpy
from xbackprop.layercheck import check_layer
from xbackprop.layers import Convolution, Pooling
from xbackprop.util import col2im, im2col, window_slices, windows_added_back

#: (N, C, H, W), (FN, FH, FW), stride, pad: square and not, odd sizes, several channels, stride 1 and 2, pad 0-2.
CASES = [((2, 3, 7, 6), (4, 3, 2), 1, 0), ((1, 1, 10, 10), (10, 3, 3), 1, 0), ((2, 2, 9, 7), (3, 3, 3), 2, 1),
         ((3, 3, 8, 8), (2, 5, 5), 1, 2), ((2, 1, 5, 9), (2, 1, 4), 2, 2)]


@pytest.mark.parametrize(("x_shape", "filters", "stride", "pad"), CASES)
def test_col2im_is_the_adjoint_of_im2col(xp, rng, x_shape, filters, stride, pad):
    _, fh, fw = filters
    x = asarray(xp, rng.standard_normal(x_shape))
    col = im2col(x, fh, fw, stride, pad)
    y = asarray(xp, rng.standard_normal(tuple(col.shape)))
    left = float(xp.sum(col * y))
    right = float(xp.sum(x * col2im(y, x_shape, fh, fw, stride, pad)))
    assert abs(left - right) <= 1e-12 * max(abs(left), 1.0)


@pytest.mark.parametrize(("x_shape", "window", "stride", "pad"),
                         [((2, 3, 8, 6), 2, 2, 0), ((2, 3, 7, 6), 2, 2, 0), ((1, 2, 6, 6), 3, 1, 0),
                          ((2, 1, 6, 8), 2, 2, 1), ((1, 2, 9, 9), 3, 3, 0)])
def test_windows_added_back_is_the_adjoint_of_window_slices_tiled_or_not(xp, rng, x_shape, window, stride, pad):
    x = asarray(xp, rng.standard_normal(x_shape))
    pieces = window_slices(x, window, window, stride, pad)
    ys = [asarray(xp, rng.standard_normal(tuple(piece.shape))) for piece in pieces]
    left = sum(float(xp.sum(piece * y)) for piece, y in zip(pieces, ys))
    channels_first = xp.permute_dims(xp.asarray(xp.permute_dims(x, (1, 0, 2, 3)), copy=True), (1, 0, 2, 3))
    for like in (None, channels_first):  # a layout lent, and none
        back = windows_added_back(ys, x_shape, window, window, stride, pad, like=like)
        assert tuple(back.shape) == x_shape
        right = float(xp.sum(x * back))
        assert abs(left - right) <= 1e-12 * max(abs(left), 1.0)


def torch_reference(x, W, b, stride, pad, dout):
    torch = pytest.importorskip("torch", reason="the autograd reference needs PyTorch: pip install torch (CPU build)")
    tx, tW, tb = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    out = torch.nn.functional.conv2d(tx, tW, tb, stride=stride, padding=pad)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), tx.grad.numpy(), tW.grad.numpy(), tb.grad.numpy()


@pytest.mark.parametrize(("x_shape", "filters", "stride", "pad"), CASES)
def test_convolution_agrees_with_torch_conv2d_and_its_autograd(xp, rng, x_shape, filters, stride, pad):
    fn, fh, fw = filters
    x, W, b = rng.standard_normal(x_shape), rng.standard_normal((fn, x_shape[1], fh, fw)), rng.standard_normal(fn)
    layer = Convolution(asarray(xp, W), asarray(xp, b), stride=stride, pad=pad)
    out = layer.forward(asarray(xp, x))
    dout = rng.standard_normal(tuple(out.shape))
    dx = layer.backward(asarray(xp, dout))
    want_out, want_dx, want_dW, want_db = torch_reference(x, W, b, stride, pad, dout)
    for got, want in ((out, want_out), (dx, want_dx), (layer.dW, want_dW), (layer.db, want_db),
                      (layer.grads["W"], want_dW)):
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-10, atol=1e-10)
    assert tuple(layer.col.shape) == (out.shape[0] * out.shape[2] * out.shape[3], x_shape[1] * fh * fw)
    assert tuple(layer.col_W.shape) == (x_shape[1] * fh * fw, fn)


@pytest.mark.parametrize(("window", "stride"), [(2, 2), (3, 1), (3, 2)])
def test_pooling_agrees_with_torch_max_pool2d_and_its_autograd(xp, rng, window, stride):
    torch = pytest.importorskip("torch", reason="the autograd reference needs PyTorch: pip install torch (CPU build)")
    x = rng.standard_normal((2, 3, 7, 8))
    layer = Pooling(window, window, stride=stride)
    out = layer.forward(asarray(xp, x))
    dout = rng.standard_normal(tuple(out.shape))
    dx = layer.backward(asarray(xp, dout))
    tx = torch.tensor(x, requires_grad=True)
    want = torch.nn.functional.max_pool2d(tx, window, stride)
    want.backward(torch.tensor(dout))
    np.testing.assert_allclose(to_numpy(out), want.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(dx), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert tuple(layer.arg_max.shape) == (out.shape[0] * out.shape[2] * out.shape[3] * out.shape[1],)


def test_a_tied_window_gives_its_gradient_to_the_first_of_its_maxima(xp):
    x = asarray(xp, np.array([[[[1.0, 1.0], [0.5, 1.0]]]]))
    layer = Pooling(2, 2, stride=2)
    layer.forward(x)
    dx = layer.backward(asarray(xp, np.array([[[[3.0]]]])))
    np.testing.assert_array_equal(to_numpy(dx), [[[[3.0, 0.0], [0.0, 0.0]]]])


def test_arg_max_is_the_books_argmax_of_the_im2col_rows_with_ties_and_overlaps(xp, rng):
    x = np.maximum(rng.standard_normal((2, 3, 7, 8)), 0.0)  # ReLU's zeros: many tied windows
    x[0, 0, :3, :3] = 1.0
    for window, stride in ((2, 2), (3, 1), (2, 3)):
        layer = Pooling(window, window, stride=stride)
        layer.forward(asarray(xp, x))
        rows = im2col(x, window, window, stride).reshape(-1, window * window)  # the book's Pooling.forward
        np.testing.assert_array_equal(to_numpy(layer.arg_max), np.argmax(rows, axis=1))


def test_a_window_holding_a_nan_passes_nan_forward_and_its_gradient_to_its_first_position(xp):
    layer = Pooling(2, 2, stride=2)
    out = layer.forward(asarray(xp, np.array([[[[1.0, np.nan], [np.nan, 2.0]]]])))
    assert np.isnan(to_numpy(out)).all()
    dx = layer.backward(asarray(xp, np.array([[[[3.0]]]])))
    np.testing.assert_array_equal(to_numpy(dx), [[[[3.0, 0.0], [0.0, 0.0]]]])


def test_check_layer_passes_convolution_and_pooling(xp, rng):
    x = asarray(xp, rng.standard_normal((2, 2, 6, 5)))
    conv = Convolution(asarray(xp, rng.standard_normal((3, 2, 3, 2))), asarray(xp, rng.standard_normal(3)),
                       stride=2, pad=1)
    assert check_layer(conv, x).passed
    assert check_layer(Pooling(2, 2, stride=2), x).passed


def test_array_api_strict_equals_numpy_in_float64(rng):
    strict = pytest.importorskip("array_api_strict", reason="needs array-api-strict: pip install array-api-strict")
    from xbackprop.backend import get_namespace

    numpy = get_namespace("numpy")
    x, W, b = rng.standard_normal((2, 3, 9, 7)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    results = []
    for xp in (numpy, strict):
        conv = Convolution(asarray(xp, W), asarray(xp, b), stride=2, pad=1)
        pool = Pooling(2, 2, stride=1)
        out = pool.forward(conv.forward(asarray(xp, x)))
        dx = conv.backward(pool.backward(xp.ones_like(out)))
        results.append([to_numpy(a) for a in (im2col(asarray(xp, x), 3, 3, 2, 1), out, dx, conv.dW, conv.db)])
    for mine, theirs in zip(*results):
        np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-12)


def test_simple_convnet_has_the_books_parameters():
    from xbackprop import SimpleConvNet

    net = SimpleConvNet(xp="numpy", dtype="float32", seed=0)
    shapes = {key: tuple(value.shape) for key, value in net.params.items()}
    assert shapes == {"W1": (30, 1, 5, 5), "b1": (30,), "W2": (4320, 100), "b2": (100,), "W3": (100, 10), "b3": (10,)}
    assert list(net.layers) == ["Conv1", "Relu1", "Pool1", "Affine1", "Relu2", "Affine2"]


@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_the_books_chapter_7_gradient_check_passes(name):
    """ch07/gradient_check.py's setting: one 1x10x10 input, ten 3x3 filters, hidden 10."""
    from xbackprop import SimpleConvNet, get_namespace, gradient_check

    if name == "array_api_strict":
        pytest.importorskip(name, reason="needs array-api-strict: pip install array-api-strict")
    xp = get_namespace(name)
    net = SimpleConvNet(input_dim=(1, 10, 10), conv_param={"filter_num": 10, "filter_size": 3, "pad": 0, "stride": 1},
                        hidden_size=10, output_size=10, weight_init_std=0.01, xp=xp, dtype="float64", seed=0)
    x = xp.asarray(np.random.default_rng(0).random(100).reshape((1, 1, 10, 10)))
    result = gradient_check(net, x, xp.asarray(np.array([1])), verbose=False)
    assert result.passed, str(result)
    assert max(result.mean_abs_diff.values()) < 1e-6


def test_simple_convnet_trains_from_the_trainers_rows(synthetic_dir):
    from xbackprop import SimpleConvNet
    from xbackprop.datasets import load_dataset
    from xbackprop.optimizers import Adam
    from xbackprop.training import Schedule, to_device, train

    data = to_device(load_dataset("synthetic", data_dir=synthetic_dir), get_numpy())
    net = SimpleConvNet(conv_param={"filter_num": 4, "filter_size": 5}, hidden_size=20, xp="numpy",
                        dtype="float32", seed=0)
    result = train(net, Adam(lr=0.01), data, Schedule(iters=60, batch_size=20, seed=0))
    assert result.losses[-1] < 0.5 * result.losses[0] and result.final_test_acc > 0.5


def get_numpy():
    from xbackprop import get_namespace

    return get_namespace("numpy")


def test_the_books_labels_of_shape_n_by_1_are_class_indices_for_the_loss():
    """ch07/gradient_check.py passes np.array([1]).reshape((1, 1)); the book's loss reads them as indices."""
    from xbackprop import SimpleConvNet

    net = SimpleConvNet(input_dim=(1, 10, 10), conv_param={"filter_num": 10, "filter_size": 3, "pad": 0, "stride": 1},
                        hidden_size=10, output_size=10, weight_init_std=0.01, dtype="float64", seed=0)
    x = np.random.default_rng(0).random(100).reshape((1, 1, 10, 10))
    assert float(net.loss(x, np.array([1]).reshape((1, 1)))) == float(net.loss(x, np.array([1])))
    grads = net.gradient(x, np.array([1]).reshape((1, 1)))
    np.testing.assert_array_equal(grads["W1"], net.gradient(x, np.array([1]))["W1"])
