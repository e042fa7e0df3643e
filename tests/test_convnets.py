"""Chapter 8's DeepConvNet and the book's Trainer (common/trainer.py) that chapters 7 and 8 train with."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import asarray

from xbackprop import DeepConvNet, LayerNet, SimpleConvNet, gradient_check
from xbackprop.trainer import Trainer

#: The book's six convolutions with a filter or two each: a DeepConvNet small enough to differentiate numerically.
SMALL_CONVS = [{"filter_num": n, "filter_size": 3, "pad": pad, "stride": 1}
               for n, pad in ((1, 1), (1, 1), (1, 1), (1, 2), (2, 1), (2, 1))]


def test_deep_convnet_has_the_books_layers_parameters_and_he_scales():
    net = DeepConvNet(xp="numpy", dtype="float64", seed=0)
    shapes = {key: tuple(value.shape) for key, value in net.params.items()}
    assert shapes == {"W1": (16, 1, 3, 3), "b1": (16,), "W2": (16, 16, 3, 3), "b2": (16,), "W3": (32, 16, 3, 3),
                      "b3": (32,), "W4": (32, 32, 3, 3), "b4": (32,), "W5": (64, 32, 3, 3), "b5": (64,),
                      "W6": (64, 64, 3, 3), "b6": (64,), "W7": (64 * 4 * 4, 50), "b7": (50,), "W8": (50, 10),
                      "b8": (10,)}
    kinds = [type(layer).__name__ for layer in net.layers.values()]
    assert kinds == ["Convolution", "Relu", "Convolution", "Relu", "Pooling"] * 3 + [
        "Affine", "Relu", "Dropout", "Affine", "Dropout"]
    for key, fan_in in (("W1", 9), ("W2", 144), ("W6", 576), ("W7", 1024), ("W8", 50)):
        assert np.std(net.params[key]) == pytest.approx(math.sqrt(2 / fan_in), rel=0.25 if fan_in < 100 else 0.1)
    assert not any(np.any(net.params[f"b{i}"]) for i in range(1, 9))


def test_deep_convnet_backprop_agrees_with_the_numerical_gradient(xp):
    """A small DeepConvNet (8x8 input, a filter or two per convolution) with its dropout, element by element."""
    net = DeepConvNet((1, 8, 8), *SMALL_CONVS, hidden_size=3, output_size=3, xp=xp, dtype="float64", seed=1)
    x = asarray(xp, np.random.default_rng(0).random((2, 1, 8, 8)))
    result = gradient_check(net, x, xp.asarray(np.array([0, 2])), verbose=False)
    assert result.passed, str(result)


def test_conv_nets_save_and_load_their_params_under_the_books_names(tmp_path):
    net = DeepConvNet((1, 8, 8), *SMALL_CONVS, hidden_size=5, output_size=3, xp="numpy", seed=1)
    net.save_params(tmp_path / "params.pkl")  # the book's name; the file is .npz, never pickled
    other = DeepConvNet((1, 8, 8), *SMALL_CONVS, hidden_size=5, output_size=3, xp="numpy", seed=2)
    other.load_params(tmp_path / "params.pkl")
    x = np.random.default_rng(0).random((3, 64))
    np.testing.assert_array_equal(other.predict(x), net.predict(x))
    with open(tmp_path / "params.pkl", "rb") as f:
        assert f.read(2) == b"PK"


def test_conv_nets_score_a_hundred_rows_at_a_time():
    """The book's conv nets score 100 rows at once: 10,000 test images at once would be gigabytes of im2col."""
    net = SimpleConvNet(input_dim=(1, 10, 10), conv_param={"filter_num": 2, "filter_size": 3}, hidden_size=4,
                        xp="numpy", seed=0)
    seen = []
    predict = net.predict
    net.predict = lambda x, *args, **kwargs: seen.append(x.shape[0]) or predict(x, *args, **kwargs)
    net.accuracy(np.zeros((250, 100)), np.zeros(250, dtype=np.int64), batch_size=10_000)
    assert seen == [100, 100, 50]


def book_trainer(xp, verbose=True, optimizer="Adam", **settings):
    net = SimpleConvNet(input_dim=(1, 6, 6), conv_param={"filter_num": 3, "filter_size": 3}, hidden_size=8,
                        output_size=2, xp=xp, dtype="float32", seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 6, 6)).astype(np.float32)
    t = (x[:, 0, :3].mean(axis=(1, 2)) > x[:, 0, 3:].mean(axis=(1, 2))).astype(np.uint8)  # which half is brighter
    return Trainer(net, x[:30], t[:30], x[30:], t[30:], epochs=3, mini_batch_size=10, optimizer=optimizer,
                   optimizer_param={"lr": 0.01}, verbose=verbose, seed=0, **settings)


def test_the_trainer_prints_and_keeps_what_the_books_does(xp, capsys):
    trainer = book_trainer(xp, evaluate_sample_num_per_epoch=5)
    trainer.train()
    lines = capsys.readouterr().out.splitlines()
    assert len(trainer.train_loss_list) == trainer.max_iter == 9
    assert all(type(v) is float for v in trainer.train_loss_list)
    assert len(trainer.train_acc_list) == len(trainer.test_acc_list) == 3
    assert all(acc in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0) for acc in trainer.train_acc_list)  # 5 rows each epoch
    assert lines[0].startswith("train loss:") and sum(line.startswith("train loss:") for line in lines) == 9
    assert lines[1] == f"=== epoch:1, train acc:{trainer.train_acc_list[0]}, test acc:{trainer.test_acc_list[0]} ==="
    assert lines[-2:] == ["=============== Final Test Accuracy ===============", lines[-1]]
    assert lines[-1].startswith("test acc:")


def test_the_trainer_trains_a_plain_numpy_net_as_the_books_scripts_build_it(capsys):
    """Any net with params, gradient, loss and accuracy: the book's own SimpleConvNet class on xbackprop's layers."""
    from xbackprop import Affine, Relu

    rng = np.random.default_rng(0)
    W1, b1 = 0.1 * rng.standard_normal((4, 8)), np.zeros(8)
    W2, b2 = 0.1 * rng.standard_normal((8, 2)), np.zeros(2)
    net = LayerNet([Affine(W1, b1), Relu(), Affine(W2, b2)])
    x = rng.standard_normal((50, 4))
    t = (x[:, 0] > 0).astype(np.int64)
    trainer = Trainer(net, x, t, x, t, epochs=20, mini_batch_size=10, optimizer="sgd", optimizer_param={"lr": 0.5},
                      verbose=False, seed=0)
    trainer.train()
    assert trainer.test_acc_list[-1] > 0.8 and capsys.readouterr().out == ""


def test_the_trainer_refuses_an_optimizer_it_does_not_have():
    with pytest.raises(ValueError, match="optimizer 'RMSprop' is none of xbackprop's"):
        book_trainer("numpy", optimizer="RMSprop")
