"""Chapter 8's DeepConvNet and the book's Trainer (common/trainer.py) that chapters 7 and 8 train with."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import asarray

from xbackprop import DeepConvNet, LayerNet, SimpleConvNet, directional_check, gradient_check
from xbackprop.backend import backend_name
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
    """A small DeepConvNet (8x8 input, a filter or two per convolution) with its dropout, element by element (a
    kink told apart); on JAX, whose immutable arrays make the element loop one dispatch per element, along a
    random direction (two loss evaluations against one backward pass), from biases off the kinks."""
    net = DeepConvNet((1, 8, 8), *SMALL_CONVS, hidden_size=3, output_size=3, xp=xp, dtype="float64", seed=1)
    x = asarray(xp, np.random.default_rng(0).random((2, 1, 8, 8)))
    t = xp.asarray(np.array([0, 2]))
    if backend_name(xp) == "jax":
        rng = np.random.default_rng(2)
        for key in [key for key in net.params if key.startswith("b")]:  # zero biases put the padded border's
            net.params[key] = asarray(xp, 0.1 * rng.standard_normal(net.params[key].shape))  # ReLUs on a kink
        result = directional_check(net, x, t, seed=0)
        assert result.rel_error < 1e-6, result
        return
    result = gradient_check(net, x, t, verbose=False)
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
    assert seen == [1, 100, 100, 50]  # one row tells the labels' check the number of classes


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


def test_the_command_trains_saves_and_predicts_with_a_conv_net(synthetic_dir, tmp_path, capsys):
    from xbackprop.io import read_saved
    from xbackprop.predict import main as predict
    from xbackprop.train import main as train

    model = tmp_path / "convnet.npz"
    assert train(["--net", "simple-convnet", "--data-dir", str(synthetic_dir), "--iters", "40", "--optimizer", "adam",
                  "--lr", "0.001", "--quiet", "--save", str(model)]) == 0
    out, err = capsys.readouterr()
    assert "net simple-convnet 784-100-10, adam lr 0.001" in out and "the simple-convnet 784-100-10 net" in err
    saved = read_saved(model)
    assert saved.architecture.net == "simple-convnet" and saved.sizes == [784, 100, 10]
    assert predict(["--load", str(model), str(synthetic_dir / "t10k-images-idx3-ubyte.gz"),
                    str(synthetic_dir / "t10k-labels-idx1-ubyte.gz"), "--limit", "0"]) == 0
    accuracy = float(capsys.readouterr().out.split("accuracy ")[1].split()[0].rstrip(","))
    assert accuracy > 0.5
    assert train(["--data-dir", str(synthetic_dir), "--iters", "0", "--quiet", "--load", str(model)]) == 0
    assert "net simple-convnet 784-100-10" in capsys.readouterr().out  # --load's file says which net


def test_a_fully_connected_nets_file_is_as_it_was(synthetic_dir, tmp_path):
    """The net's record adds no member to a fully connected net's file: older readers read it as before."""
    import numpy as np

    from xbackprop.train import main as train

    model = tmp_path / "mlp.npz"
    assert train(["--data-dir", str(synthetic_dir), "--iters", "1", "--quiet", "--save", str(model)]) == 0
    with np.load(model) as saved:
        assert sorted(name for name in saved.files if not name[0].isupper() and not name[0] == "b") == [
            "activation", "dataset", "sizes"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--batchnorm"], "--net deep-convnet: deep-convnet has the book's layers: batchnorm does not apply to it"),
    (["--hidden", "50,50"], "--net deep-convnet: deep-convnet takes square grey images and one hidden layer"),
    (["--weight-init-std", "0.1"], "DeepConvNet is He-initialised, as the book's: --weight-init-std 0.1 does not apply"),
])
def test_a_conv_net_refuses_what_does_not_apply_to_it(synthetic_dir, capsys, flags, message):
    from xbackprop.train import main as train

    assert train(["--net", "deep-convnet", "--data-dir", str(synthetic_dir), "--iters", "1", *flags]) == 2
    assert message in capsys.readouterr().err


def test_a_conv_nets_step_is_measured_against_the_memory_before_training(synthetic_dir, capsys, monkeypatch):
    from xbackprop import memory
    from xbackprop.train import main as train

    monkeypatch.setattr(memory, "memory_limit", lambda: 20 << 20)  # 20 MiB: the data fit, a DeepConvNet step not
    assert train(["--net", "deep-convnet", "--data-dir", str(synthetic_dir), "--iters", "1"]) == 2
    err = capsys.readouterr().err
    assert "a deep-convnet 784-50-10 step at --batch-size 100 needs about" in err


def test_a_conv_nets_report_shows_its_first_filters_before_and_after_training(synthetic_dir, tmp_path, monkeypatch):
    """The book's visualize_filter.py, in the report: the filters drawn from the starting and the trained weights."""
    pytest.importorskip("matplotlib", reason="reports need matplotlib: pip install 'xbackprop[plot]'")
    from xbackprop.show import filters as module
    from xbackprop.train import main as train

    drawn = []
    figure = module.filters_figure
    monkeypatch.setattr(module, "filters_figure", lambda after, before=None, *args, **kwargs: drawn.append(
        (after, before)) or figure(after, before, *args, **kwargs))
    import xbackprop.show.report_folder as report_folder

    monkeypatch.setattr(report_folder, "filters_figure", module.filters_figure)
    folder = tmp_path / "report"
    assert train(["--net", "simple-convnet", "--data-dir", str(synthetic_dir), "--iters", "20", "--optimizer", "adam",
                  "--lr", "0.001", "--quiet", "--report", str(folder)]) == 0
    assert (folder / "filters.png").stat().st_size > 0
    assert "![the first layer's filters](filters.png)" in (folder / "summary.md").read_text()
    (after, before), = drawn
    assert after.shape == before.shape == (30, 1, 5, 5) and not np.array_equal(after, before)


def test_load_mnist_without_flattening_gives_the_images_the_conv_nets_take(synthetic_dir):
    """The book's ch07/train_convnet.py: load_mnist(flatten=False) is (N, 1, 28, 28), which SimpleConvNet takes."""
    from xbackprop import load_mnist

    (x_train, t_train), (x_test, _) = load_mnist(flatten=False, data_dir=synthetic_dir)
    assert x_train.shape == (600, 1, 28, 28) and x_test.shape == (200, 1, 28, 28) and x_train.dtype == np.float32
    net = SimpleConvNet(xp="numpy", dtype="float32", seed=0)
    assert net.predict(x_train[:3]).shape == (3, 10) and 0.0 <= net.accuracy(x_train[:10], t_train[:10]) <= 1.0
