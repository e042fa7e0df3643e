"""The trainer and ``python -m xbackprop.train``: runs per backend, the CLI's errors, JSON, save/load."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from array_api_compat import array_namespace
from conftest import corrupt_copy, write_split

from xbackprop import MultiLayerNet, get_namespace, to_numpy
from xbackprop.backend import backend_name
from xbackprop.datasets import Dataset, find_dataset_dir, load_split
from xbackprop.optimizers import SGD
from xbackprop.train import main
from xbackprop.training import Schedule, to_device, train


def run_cli(*args, env=None):
    """Run the CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "xbackprop.train", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture
def fashion_subset(data_dir):
    folder = find_dataset_dir("fashion-mnist", data_dir / "fashion-mnist", split="train")
    if folder is None:
        pytest.skip("Fashion-MNIST not in XBACKPROP_DATA")
    x_train, t_train = load_split(folder, "train")
    x_test, t_test = load_split(folder, "test")
    return Dataset("fashion-mnist", x_train[:5000], t_train[:5000], x_test[:1000], t_test[:1000], 255, str(folder))


def test_short_run_learns_real_data_on_every_backend(xp, fashion_subset):
    """300 SGD steps of the book's net on 5,000 Fashion-MNIST images reach 70% test accuracy."""
    data = to_device(fashion_subset, xp)
    assert backend_name(array_namespace(data.x_train)) == backend_name(xp)
    net = MultiLayerNet(784, [50], 10, xp=xp, dtype="float32", seed=0)
    result = train(net, SGD(lr=0.1), data, Schedule(iters=300, batch_size=100, seed=0))
    assert result.steps_done == 300 and result.diverged_at is None
    assert [row["iter"] for row in result.history] == [1, 51, 101, 151, 201, 251, 300]
    assert result.final_test_acc >= 0.70, result.history
    assert all(value.dtype == xp.float32 for value in net.params.values())


def test_divergence_stops_with_the_iteration(synthetic_dir):
    from xbackprop.datasets import load_dataset

    data = to_device(load_dataset("mnist", data_dir=synthetic_dir), get_namespace("numpy"))
    net = MultiLayerNet(784, [50], 10, xp="numpy", weight_init_std=1.0, seed=0)
    with np.errstate(all="ignore"):
        result = train(net, SGD(lr=1e6), data, Schedule(iters=200, batch_size=50, seed=0))
    assert result.diverged_at is not None and result.steps_done == result.diverged_at < 200
    assert not result.losses[-1] <= 10 * result.losses[0]  # blown up, or not finite
    assert np.all(np.asarray(result.losses[:-1]) <= 10 * result.losses[0])
    assert result.history[-1]["iter"] == result.diverged_at


def test_cli_trains_and_writes_json(synthetic_dir, tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["--data-dir", str(synthetic_dir), "--iters", "60", "--batch-size", "50", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("xbackprop ") and "backend numpy, device cpu, float32, dataset synthetic0 (600 train / 200 test" in lines[0]
    assert lines[1].startswith("train acc, test acc | ")
    assert lines[-1].startswith("test acc ") and "samples/s" in lines[-1]
    record = json.loads(out.read_text())
    for key, kind in [("backend", str), ("device", str), ("dataset", str), ("iters", int), ("batch_size", int),
                      ("lr", float), ("final_train_acc", float), ("final_test_acc", float), ("seconds", float),
                      ("samples_per_s", float), ("history", list)]:
        assert isinstance(record[key], kind), key
    assert record["iters"] == 60 and record["lr"] == 0.1 and record["final_test_acc"] >= 0.9
    assert set(record["history"][0]) == {"iter", "loss", "train_acc", "test_acc"}
    assert len(record["losses"]) == 60


def test_cli_epochs_and_other_optimizers(synthetic_dir, capsys):
    assert main(["--data-dir", str(synthetic_dir), "--epochs", "2", "--batch-size", "100", "--optimizer", "adam",
                 "--hidden", "30,20", "--activation", "sigmoid", "--weight-init-std", "xavier", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "net 784-30-20-10 sigmoid, adam lr 0.001, batch 100, 12 iterations" in out
    assert "train acc, test acc" not in out  # --quiet


def test_chapter_6_flags_train_save_and_load_their_state(synthetic_dir, tmp_path, capsys):
    saved = tmp_path / "extended.npz"
    common = ["--data-dir", str(synthetic_dir), "--quiet", "--hidden", "30,20"]
    assert main([*common, "--iters", "30", "--batchnorm", "--dropout", "0.2", "--weight-decay", "0.01",
                 "--save", str(saved)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "net 784-30-20-10 relu + batchnorm + dropout 0.2 + weight decay 0.01, sgd" in out[0]
    trained = out[-1].split(",")[0]
    with np.load(saved, allow_pickle=False) as f:
        assert {"gamma1", "beta2", "buffer.running_mean1", "buffer.running_var2", "buffer.draws1", "batchnorm",
                "dropout_ratio"} <= set(f.files)
        assert np.any(f["buffer.running_mean1"]) and f["buffer.draws1"].tolist() == [30]
    # --load alone brings the architecture and the running statistics back: the same accuracies
    assert main([*common[:-2], "--iters", "0", "--load", str(saved)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "relu + batchnorm + dropout 0.2" in out[0] and out[-1].split(",")[0] == trained


def test_load_brings_the_dataset_it_was_trained_on(synthetic_dir, tmp_path, monkeypatch, capsys):
    """A net trained on Fashion-MNIST names its classes: --load alone must not evaluate it on digits."""
    saved = tmp_path / "net.npz"
    assert main(["--data-dir", str(synthetic_dir), "--iters", "5", "--save", str(saved), "--quiet",
                 "--dataset", "fashion-mnist"]) == 0
    capsys.readouterr()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fashion-mnist").symlink_to(synthetic_dir, target_is_directory=True)
    monkeypatch.setenv("XBACKPROP_DATA", str(tmp_path / "data"))
    assert main(["--load", str(saved), "--iters", "0", "--quiet"]) == 0
    assert "dataset fashion-mnist (600 train" in capsys.readouterr().out
    completed = run_cli("--load", str(saved), "--iters", "0", "--dataset", "mnist")
    assert completed.returncode == 2 and "was trained on fashion-mnist, not --dataset mnist" in completed.stderr


def test_save_then_load_gives_the_same_net(synthetic_dir, tmp_path, capsys):
    saved = tmp_path / "net.npz"
    assert main(["--data-dir", str(synthetic_dir), "--iters", "30", "--save", str(saved), "--quiet"]) == 0
    trained = capsys.readouterr().out.splitlines()[-1].split(",")[0]
    assert main(["--data-dir", str(synthetic_dir), "--iters", "0", "--load", str(saved), "--quiet"]) == 0
    reloaded = capsys.readouterr().out.splitlines()[-1].split(",")[0]
    assert trained == reloaded and trained.startswith("test acc ")
    with np.load(saved, allow_pickle=False) as f:
        assert sorted(f.files) == ["W1", "W2", "activation", "b1", "b2", "dataset", "sizes"]


def test_load_into_another_backend(xp, tmp_path):
    from xbackprop.io import load_params, save_params

    source = MultiLayerNet(6, [4], 3, xp="numpy", dtype="float32", seed=1)
    save_params(tmp_path / "n.npz", source)
    target = MultiLayerNet(6, [4], 3, xp=xp, seed=2, dtype="float64")
    load_params(tmp_path / "n.npz", target)
    for key, value in target.params.items():
        assert value.dtype == xp.float64
        np.testing.assert_array_equal(to_numpy(value).astype(np.float32), source.params[key])


def test_lr_sweep_reports_divergence(synthetic_dir, tmp_path, capsys):
    plot = tmp_path / "sweep.png"
    args = ["--data-dir", str(synthetic_dir), "--iters", "40", "--lr-sweep", "0.1,1e6", "--quiet",
            "--weight-init-std", "1.0", "--json", str(tmp_path / "s.json")]
    if importlib.util.find_spec("matplotlib"):
        args += ["--plot", str(plot)]
    with np.errstate(all="ignore"):
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "| lr | train acc | test acc | seconds | diverged |" in out
    assert "| 0.1 |" in out and "| no |" in out
    assert "lr 1e+06: diverged at iteration" in out and "| at iteration " in out
    sweep = json.loads((tmp_path / "s.json").read_text())["lr_sweep"]
    assert [run["lr"] for run in sweep] == [0.1, 1e6] and sweep[1]["diverged_at"] >= 1
    if "--plot" in args:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def labels200_dir(tmp_path):
    folder = tmp_path / "labels200"
    folder.mkdir()
    images = np.zeros((5, 28, 28), np.uint8)
    write_split(folder, "train", images, np.array([0, 1, 2, 3, 200], np.uint8))
    write_split(folder, "test", images, np.zeros(5, np.uint8))
    return folder


def corrupt_dir(tmp_path):
    folder = tmp_path / "corrupt"
    folder.mkdir()
    write_split(folder, "train", np.zeros((10, 28, 28), np.uint8), np.zeros(60, np.uint8))
    write_split(folder, "test", np.zeros((10, 28, 28), np.uint8), np.zeros(10, np.uint8))
    return folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "--batch-size: must be a positive integer, got 0"),
        (["--lr", "-0.1"], "--lr: must be a positive number, got -0.1"),
        (["--hidden", "50,x"], "--hidden: must be a comma-separated list"),
        (["--iters", "10", "--epochs", "1"], "not allowed with argument"),
        (["--data-dir", "{empty}"], "no train-images-idx3-ubyte"),
        (["--data-dir", "{corrupt}"], "60 labels for 10 images"),
        (["--data-dir", "{synthetic}", "--load", "{missing}"], "not a saved xbackprop network"),
        (["--data-dir", "{synthetic}", "--lr-sweep", "0.1,1", "--save", "x.npz"], "does not combine"),
        (["--data-dir", "{synthetic}", "--device", "cuda:0"], "--device cuda:0"),
        (["--data-dir", "{synthetic}", "--seed", "-1"], "--seed: must not be negative, got -1"),
        (["--data-dir", "{synthetic}", "--load", "{npy}"], "not a saved xbackprop network (not an .npz archive)"),
        (["--data-dir", "{synthetic}", "--hidden", "1000000000"], "GiB, more than the"),
        (["--data-dir", "{synthetic}", "--batch-size", "2000000000"], "exceeds the 600 training images"),
        (["--data-dir", "{deflate}"], "train-images-idx3-ubyte.gz: cannot read"),
        (["--data-dir", "{labels200}", "--dataset", "mnist"], "training: labels must lie in [0, 10), got values from 0 to 200"),
        (["--data-dir", "{labels200}", "--classes", "1"], "at least 2 classes"),
        (["--data-dir", "{newline}"], "two\\nlines: no such folder"),
        (["--data-dir", "{synthetic}", "--json", "{tmp}/no/such/folder/x.json"], "does not exist"),
        (["--data-dir", "{synthetic}", "--save", "{fifo}"], "exists and is not a regular file"),
        (["--dropout", "1"], "--dropout: must lie in [0, 1), got 1"),
        (["--data-dir", "{synthetic}", "--epochs", "1e308"], "--epochs 1e+308: more than"),
        (["--data-dir", "{synthetic}", "--weight-init-std", "1e308"], "gives weights beyond the range of float32"),
        (["--dataset", "digits", "--data-dir", "{tmp}/nowhere"], "the digits come with scikit-learn"),
        (["--dataset", "mnist", "--data-dir", "{tmp}/nowhere"], "nowhere: no such folder"),
        (["--weight-decay", "-1"], "--weight-decay: must be a non-negative number, got -1"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(args, message, synthetic_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    np.save(tmp_path / "x.npy", np.zeros(3))
    os.mkfifo(tmp_path / "fifo")
    paths = {"fifo": tmp_path / "fifo", "empty": tmp_path / "empty", "corrupt": corrupt_dir(tmp_path), "synthetic": synthetic_dir,
             "missing": tmp_path / "nope.npz", "npy": tmp_path / "x.npy", "deflate": corrupt_copy(synthetic_dir, tmp_path / "deflate"),
             "labels200": labels200_dir(tmp_path), "newline": tmp_path / "two\nlines", "tmp": tmp_path}
    completed = run_cli(*[a.format(**paths) for a in args], "--quiet")
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.count("\n") == 1 and "Traceback" not in completed.stderr
    assert completed.stderr.startswith("python -m xbackprop.train: error: ") and message in completed.stderr


def test_cli_rejects_a_net_of_another_shape(synthetic_dir, tmp_path):
    saved = tmp_path / "wide.npz"
    assert main(["--data-dir", str(synthetic_dir), "--iters", "1", "--hidden", "80", "--save", str(saved), "--quiet"]) == 0
    completed = run_cli("--data-dir", str(synthetic_dir), "--load", str(saved), "--hidden", "50", "--quiet")
    assert completed.returncode == 2 and "W1 has shape (784, 80), the network needs (784, 50)" in completed.stderr
    completed = run_cli("--data-dir", str(synthetic_dir), "--load", str(saved), "--activation", "sigmoid", "--quiet")
    assert completed.returncode == 2 and "saved from a relu network, this one is sigmoid" in completed.stderr


def test_evaluate_a_saved_model(synthetic_dir, tmp_path, capsys):
    saved = tmp_path / "model"  # no suffix: saved and loaded under exactly this name
    assert main(["--data-dir", str(synthetic_dir), "--iters", "60", "--hidden", "30", "--activation", "sigmoid",
                 "--weight-init-std", "xavier", "--save", str(saved), "--quiet"]) == 0
    trained = capsys.readouterr().out.splitlines()[-1]
    assert main(["--data-dir", str(synthetic_dir), "--iters", "0", "--load", str(saved)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "net 784-30-10 sigmoid" in out[0]
    assert out[-1].split(" after ")[0] == trained.split(" after ")[0]  # the same accuracies, nothing trained


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No data anywhere and every mirror refusing connections (port 9 on loopback)."""
    monkeypatch.delenv("XBACKPROP_DATA", raising=False)
    monkeypatch.setenv("XBACKPROP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XBACKPROP_MIRRORS", "http://127.0.0.1:9/")  # MNIST has no system folder to find


def test_explicit_mnist_offline_exits_2_with_remedies(offline, capsys):
    assert main(["--dataset", "mnist", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "127.0.0.1:9: cannot connect" in err
    assert "set XBACKPROP_DATA" in err and "--data-dir" in err and "--dataset digits" in err


def test_default_mnist_offline_falls_back_to_digits(offline, capsys):
    pytest.importorskip("sklearn", reason="the digits fallback needs scikit-learn")
    assert main(["--iters", "1000", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "falling back to the digits dataset" in captured.err
    assert "dataset digits (1438 train / 359 test, 64 features, 10 classes" in captured.out
    assert float(captured.out.splitlines()[-1].split()[2].rstrip(",")) >= 0.90


def test_xp_cupy_without_gpu_warns_once_and_trains(synthetic_dir):
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a GPU is present: there is no fallback to see")
    except Exception:
        pass
    env = {**os.environ, "XP": "cupy"}
    env.pop("XBACKPROP_STRICT_BACKEND", None)
    completed = run_cli("--data-dir", str(synthetic_dir), "--iters", "5", "--quiet", env=env)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr.count("warning: ") == 1 and "CuPy" in completed.stderr
    assert "backend numpy, device cpu" in completed.stdout


def test_the_trainers_gradient_step_equals_backprop(xp):
    """The gathered (and, on JAX, compiled) step gives the net's own backprop gradients."""
    from xbackprop.training import make_gradient_step

    rng = np.random.default_rng(4)
    x_all = xp.asarray(rng.random((50, 12)), dtype=xp.float64)
    t_all = xp.asarray(rng.integers(0, 3, 50).astype(np.uint8))
    index = xp.asarray(rng.integers(0, 50, 8))
    net = MultiLayerNet(12, [6], 3, weight_init_std=0.5, xp=xp, dtype="float64", seed=0)
    grads, loss, buffers = make_gradient_step(net, xp)(net.params, net.buffers, x_all, t_all, index)
    assert buffers == {}
    x, t = xp.take(x_all, index, axis=0), xp.take(t_all, index, axis=0)
    expected = net.gradient(x, t)
    assert float(loss) == pytest.approx(float(net.loss(x, t)), rel=1e-12)
    for key, value in expected.items():
        np.testing.assert_allclose(to_numpy(grads[key]), to_numpy(value), rtol=1e-12, atol=1e-15)


def synthetic_data(synthetic_dir, xp=None):
    from xbackprop.datasets import load_dataset

    return to_device(load_dataset("mnist", data_dir=synthetic_dir), xp or get_namespace("numpy"))


def test_eval_interval_and_minibatch_accuracy(xp, synthetic_dir):
    net = MultiLayerNet(784, [40], 10, xp=xp, dtype="float32", seed=0)
    result = train(net, SGD(lr=0.1), synthetic_data(synthetic_dir, xp),
                   Schedule(iters=95, batch_size=20, seed=0, eval_interval=10, train_acc_source="batch"))
    assert [row["iter"] for row in result.history] == [*range(1, 92, 10), 95]
    assert result.train_acc_source == "batch"
    # A minibatch of 20 scores in steps of 1/20; the full 600-image set would not.
    assert all(abs(row["train_acc"] * 20 - round(row["train_acc"] * 20)) < 1e-9 for row in result.history)
    assert result.final_test_acc > 0.5
    assert net.last_layer.check_labels is True  # the trainer skips the check per call, never on the net


def test_divergence_continue_trains_on_and_marks_the_iteration(synthetic_dir):
    net = MultiLayerNet(784, [50], 10, xp="numpy", weight_init_std=1.0, dtype="float32", seed=0)
    with np.errstate(all="ignore"):
        result = train(net, SGD(lr=1e6), synthetic_data(synthetic_dir),
                       Schedule(iters=60, batch_size=50, seed=0, divergence="continue"))
    assert result.diverged_at is not None and result.diverged_at < 60
    assert result.steps_done == 60 and result.history[-1]["iter"] == 60


def test_a_shuffled_epoch_takes_every_row_once_and_replacement_draws_the_books_way():
    from xbackprop.training.loop import epoch_rows

    rows = epoch_rows(np.random.default_rng(0), 600, 6, 100, "shuffle")
    assert rows.shape == (6, 100) and sorted(rows.ravel().tolist()) == list(range(600))
    rows = epoch_rows(np.random.default_rng(0), 650, 6, 100, "shuffle")  # 50 rows left out of this epoch
    assert len(set(rows.ravel().tolist())) == 600
    rows = epoch_rows(np.random.default_rng(0), 30, 1, 100, "shuffle")  # a set smaller than a batch
    assert sorted(rows.ravel().tolist()[:30]) == list(range(30)) and rows.max() < 30
    drawn = epoch_rows(np.random.default_rng(0), 600, 6, 100, "replacement")
    np.testing.assert_array_equal(drawn, np.random.default_rng(0).integers(0, 600, size=(6, 100)))


def test_training_on_shuffled_epochs_from_the_command_line(synthetic_dir, tmp_path, capsys):
    path = tmp_path / "run.json"
    assert main(["--data-dir", str(synthetic_dir), "--epochs", "2", "--sampling", "shuffle", "--json", str(path),
                 "--quiet"]) == 0
    assert "batch 100 (each epoch a shuffle), 12 iterations" in capsys.readouterr().out
    record = json.loads(path.read_text())
    assert record["sampling"] == "shuffle" and record["final_test_acc"] > 0.3


def test_trainer_rejects_unknown_choices(synthetic_dir):
    net = MultiLayerNet(784, [5], 10, xp="numpy", seed=0)
    data = synthetic_data(synthetic_dir)
    with pytest.raises(ValueError, match="train_acc_source"):
        train(net, SGD(), data, Schedule(iters=1, train_acc_source="test"))
    with pytest.raises(ValueError, match="divergence"):
        train(net, SGD(), data, Schedule(iters=1, divergence="ignore"))
    with pytest.raises(ValueError, match="eval_interval"):
        train(net, SGD(), data, Schedule(iters=1, eval_interval=0))
    with pytest.raises(ValueError, match="sampling"):
        train(net, SGD(), data, Schedule(iters=1, sampling="sequential"))


def test_course_exercise_runs_every_rate_to_the_end(synthetic_dir, tmp_path, capsys):
    plot = tmp_path / "course.svg"
    args = ["--course-exercise", "--data-dir", str(synthetic_dir), "--iters", "60", "--json", str(tmp_path / "c.json")]
    if importlib.util.find_spec("matplotlib"):
        args += ["--plot", str(plot)]
    with np.errstate(all="ignore"):
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "net 784-40-10 relu, sgd lr 0.01, 0.1, 1, 10, batch 100, 60 iterations, accuracies every 10 on the " \
           "minibatch and test set" in out
    assert "iter  1: minibatch acc, test acc | " in out and "iter 60: minibatch acc, test acc | " in out
    assert "| lr | minibatch acc | test acc | seconds | diverged |" in out
    record = json.loads((tmp_path / "c.json").read_text())
    assert record["eval_interval"] == 10 and record["train_acc"] == "batch" and record["divergence"] == "continue"
    assert [run["lr"] for run in record["lr_sweep"]] == [0.01, 0.1, 1.0, 10.0]
    assert all(len(run["losses"]) == 60 for run in record["lr_sweep"])  # diverging runs are not cut off
    assert [row["iter"] for row in record["lr_sweep"][0]["history"]] == [1, 11, 21, 31, 41, 51, 60]
    if "--plot" in args:
        svg = plot.read_text()
        assert all(f"lr {lr}" in svg for lr in ("0.01", "0.1", "1", "10"))  # one panel per rate


def test_course_exercise_flags_can_be_overridden(synthetic_dir, capsys):
    assert main(["--course-exercise", "--data-dir", str(synthetic_dir), "--iters", "20", "--lr", "0.1",
                 "--train-acc", "full", "--quiet"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "sgd lr 0.1, batch 100, 20 iterations, accuracies every 10" in header and "minibatch" not in header


def test_progress_bar_stays_out_of_redirected_logs(synthetic_dir):
    completed = run_cli("--data-dir", str(synthetic_dir), "--iters", "30", "--batch-size", "50")
    assert completed.returncode == 0 and completed.stderr == ""
    assert "\r" not in completed.stdout and "it/s" not in completed.stdout


def test_default_evaluations_stay_few_on_small_datasets(synthetic_dir, capsys):
    # 600 images in batches of 10: 60 steps an epoch, 50 epochs; printed about 20 times, not 50.
    assert main(["--data-dir", str(synthetic_dir), "--iters", "3000", "--batch-size", "10"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train acc, test acc")]
    assert 15 <= len(lines) <= 21


def test_data_dir_names_its_dataset(data_dir, capsys):
    assert main(["--data-dir", str(data_dir / "fashion-mnist"), "--iters", "0", "--quiet"]) == 0
    assert "dataset fashion-mnist (60000 train / 10000 test" in capsys.readouterr().out
    assert main(["--dataset", "mnist", "--data-dir", str(data_dir / "fashion-mnist"), "--iters", "0"]) == 2
    assert "holds fashion-mnist, not mnist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "path", "message"),
    [
        ("--json", "{tmp}/missing/run.json", "does not exist"),
        ("--save", "{tmp}", "is a folder"),
        ("--plot", "{tmp}/curves.xyz", "unknown figure format 'xyz'"),
    ],
)
def test_outputs_are_checked_before_training(flag, path, message, synthetic_dir, tmp_path, capsys):
    if flag == "--plot":
        pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    assert main(["--data-dir", str(synthetic_dir), "--iters", "5", flag, path.format(tmp=tmp_path)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""  # refused before the run began


def test_xp_naming_no_backend_is_a_user_error(synthetic_dir):
    completed = run_cli("--data-dir", str(synthetic_dir), "--quiet", env={**os.environ, "XP": "nonsense"})
    assert completed.returncode == 2 and completed.stderr.count("\n") == 1
    assert "XP='nonsense': unknown backend 'nonsense'" in completed.stderr


def test_cuda_on_a_cpu_only_torch_is_a_user_error(synthetic_dir):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    if torch.cuda.is_available():
        pytest.skip("this PyTorch has a usable CUDA device")
    completed = run_cli("--data-dir", str(synthetic_dir), "--backend", "torch", "--device", "cuda", "--quiet")
    assert completed.returncode == 2 and completed.stderr.count("\n") == 1
    assert "--device cuda: device 'cuda' cannot be used with torch" in completed.stderr


def test_an_unusable_cache_falls_back_to_digits_or_says_why(offline, tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn", reason="the digits fallback needs scikit-learn")
    cache = tmp_path / "a-file"
    cache.write_text("not a folder")
    monkeypatch.setenv("XBACKPROP_CACHE", str(cache))
    assert main(["--iters", "20", "--quiet"]) == 0
    assert "falling back to the digits dataset" in capsys.readouterr().err
    assert main(["--dataset", "mnist", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not writable" in err


def test_json_is_standard_json_even_when_the_loss_is_not_finite(synthetic_dir, tmp_path):
    out = tmp_path / "run.json"
    with np.errstate(all="ignore"):
        assert main(["--data-dir", str(synthetic_dir), "--iters", "30", "--lr", "1e30", "--weight-init-std", "1",
                     "--divergence", "continue", "--json", str(out), "--quiet"]) == 1

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    record = json.loads(out.read_text(), parse_constant=refuse)
    assert record["diverged_at"] is not None and None in record["losses"]


def test_ctrl_c_ends_with_130_and_one_line(synthetic_dir, tmp_path):
    import time

    saved = tmp_path / "model.npz"
    assert main(["--data-dir", str(synthetic_dir), "--iters", "1", "--save", str(saved), "--quiet"]) == 0
    before = saved.read_bytes()
    # Ctrl-C as a terminal delivers it, even when this test run was started in the background (its children then
    # inherit SIGINT ignored, and Python leaves an ignored SIGINT ignored).
    foreground = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                  "sys.argv[0] = 'xbackprop.train'; runpy.run_module('xbackprop.train', run_name='__main__')")
    child = subprocess.Popen([sys.executable, "-c", foreground, "--data-dir", str(synthetic_dir), "--iters",
                              "100000000", "--save", str(saved)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().startswith("xbackprop ")  # training has begun
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 130 and err == "python -m xbackprop.train: interrupted\n"
    assert saved.read_bytes() == before


def test_a_failed_write_at_save_time_is_one_line(synthetic_dir, tmp_path):
    """The write fails for real (a file size limit, as a full disk would): one line, exit 2, nothing left behind."""
    pytest.importorskip("resource", reason="file size limits need the resource module (POSIX)")
    target = tmp_path / "m.npz"
    # The limit is set inside the child (SIGXFSZ ignored, so the write fails with EFBIG), then the CLI runs.
    limited = ("import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384)); sys.argv[0] = 'xbackprop.train'; "
               "runpy.run_module('xbackprop.train', run_name='__main__')")
    completed = subprocess.run(
        [sys.executable, "-B", "-c", limited, "--data-dir", str(synthetic_dir), "--iters", "5", "--save", str(target),
         "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert completed.stdout.splitlines()[-1].startswith("test acc ")  # the run's figures were printed first
    assert completed.stderr == f"python -m xbackprop.train: error: --save {target}: File too large\n"
    assert list(tmp_path.iterdir()) == []  # no partial file


@pytest.mark.parametrize("optimizer_name", ["sgd", "momentum", "adagrad", "adam"])
@pytest.mark.parametrize(("dtype", "rtol"), [("float64", 1e-12), ("float32", 1e-5)])
def test_compiled_training_ends_where_eager_training_does(xp, synthetic_dir, optimizer_name, dtype, rtol):
    """100 steps compiled (on JAX: blocks of steps in one scan) against 100 eager steps, every optimizer."""
    from xbackprop.optimizers import OPTIMIZERS

    data = to_device(__import__("xbackprop.datasets", fromlist=["load_dataset"]).load_dataset(
        "mnist", data_dir=synthetic_dir), xp, dtype=getattr(xp, dtype))
    runs = {}
    for compile in (True, False):
        net = MultiLayerNet(784, [20], 10, xp=xp, dtype=dtype, seed=3)
        optimizer = OPTIMIZERS[optimizer_name](lr=0.05 if optimizer_name != "adam" else 0.002)
        result = train(net, optimizer, data, Schedule(iters=100, batch_size=30, seed=1, eval_interval=30),
                       compile=compile)
        runs[compile] = (net.params, result)
    (compiled, fast), (eager, slow) = runs[True], runs[False]
    if optimizer_name == "adagrad" and dtype == "float32":
        # lr * g / sqrt(h) at a nearly unused weight divides two tiny float32 numbers; XLA's fused kernels
        # round them differently from eager ones, and AdaGrad carries the difference (1e-3 seen on JAX).
        rtol = 3e-3
    for key in eager:
        reference = to_numpy(eager[key])
        scale = np.abs(reference).max()
        assert np.abs(to_numpy(compiled[key]) - reference).max() <= rtol * scale, key
    assert [row["iter"] for row in fast.history] == [row["iter"] for row in slow.history] == [1, 31, 61, 91, 100]
    assert [row["test_acc"] for row in fast.history] == pytest.approx([row["test_acc"] for row in slow.history],
                                                                       abs=0.02)
    np.testing.assert_allclose(fast.losses, slow.losses, rtol=100 * rtol)


def test_steps_run_up_to_the_next_event():
    from xbackprop.training.loop import _steps_until_event

    # 600 steps an epoch, evaluations every 600, losses read every 100 (the book's run)
    assert _steps_until_event(0, 10_000, 600, 600, 100) == 1
    assert _steps_until_event(1, 10_000, 600, 600, 100) == 100
    assert _steps_until_event(501, 10_000, 600, 600, 100) == 99
    assert _steps_until_event(9_601, 10_000, 600, 600, 100) == 100
    assert _steps_until_event(9_901, 10_000, 600, 600, 100) == 99
    # 10 steps an epoch, evaluations every 10: steps 11..19, then step 20 is evaluated after its own dispatch
    assert _steps_until_event(11, 1000, 10, 10, 100) == 9


def test_training_with_numerical_gradients_follows_backprop(synthetic_dir, capsys):
    """The chapter's commented-out line, as a flag: the same run with each gradient, float64 by default."""
    finals = {}
    for method in ("backprop", "numerical-batched", "numerical"):
        dtype = ["--dtype", "float64"] if method == "backprop" else []  # numerical gradients default to it
        assert main(["--data-dir", str(synthetic_dir), "--iters", "3", "--hidden", "4", "--batch-size", "20",
                     "--gradient", method, "--quiet", *dtype]) == 0
        out = capsys.readouterr().out.splitlines()
        assert "float64" in out[0] and "ms per iteration" in out[-1]
        finals[method] = out[-1].split(" after ")[0]
    assert finals["numerical"] == finals["numerical-batched"] == finals["backprop"]


def test_numerical_gradients_of_a_large_net_warn(synthetic_dir, capsys):
    assert main(["--data-dir", str(synthetic_dir), "--iters", "0", "--gradient", "numerical", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "--gradient numerical runs 79,520 forward passes a step (2P, P = 39,760)" in err


def test_numerical_batched_training_on_every_backend(xp, synthetic_dir):
    data = to_device(__import__("xbackprop.datasets", fromlist=["load_dataset"]).load_dataset(
        "mnist", data_dir=synthetic_dir), xp, dtype=xp.float64)
    params = {}
    for method in ("backprop", "numerical-batched"):
        net = MultiLayerNet(784, [3], 10, weight_init_std=0.3, xp=xp, dtype="float64", seed=5)
        train(net, SGD(lr=0.1), data, Schedule(iters=3, batch_size=10, seed=2), gradient=method)
        params[method] = {key: to_numpy(value) for key, value in net.params.items()}
    for key, value in params["backprop"].items():
        np.testing.assert_allclose(params["numerical-batched"][key], value, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("flags", "env", "expected"), [
    ([], {}, 1), (["--threads", "3"], {}, 3), (["--threads", "0"], {}, None),
    ([], {"OPENBLAS_NUM_THREADS": "2"}, None), (["--threads", "1"], {"OMP_NUM_THREADS": "2"}, 1),
])
def test_the_cpu_libraries_run_one_thread_unless_told_otherwise(monkeypatch, flags, env, expected):
    from xbackprop.train import _threads, parse_args

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _threads(parse_args(flags)) == expected


def test_training_runs_under_the_thread_limit(synthetic_dir, monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="needs threadpoolctl: pip install -e '.[test]'")
    import xbackprop.train as command

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    seen = []
    runs = command.train_runs

    def spying(*args, **kwargs):
        seen.append({pool["num_threads"] for pool in threadpoolctl.threadpool_info()})
        return runs(*args, **kwargs)

    monkeypatch.setattr(command, "train_runs", spying)
    assert command.main(["--data-dir", str(synthetic_dir), "--iters", "2", "--quiet"]) == 0
    assert seen == [{1}]


def test_the_first_line_says_how_often_accuracies_are_printed_and_save_confirms(synthetic_dir, tmp_path, capsys):
    assert main(["--data-dir", str(synthetic_dir), "--iters", "300", "--eval-interval", "2", "--batch-size", "10",
                 "--save", str(tmp_path / "m.npz")]) == 0
    captured = capsys.readouterr()
    first = captured.out.splitlines()[0]
    assert "accuracies every 2 (printed every 16; --json and --plot keep them all)" in first
    assert f"wrote {tmp_path / 'm.npz'}: the 784-50-10 relu net trained on" in captured.err


def _tracers_left_on(net):
    """``layer.attribute`` of every JAX tracer a layer of ``net`` holds, directly or in one of its dicts."""
    jax = pytest.importorskip("jax", reason="the tracers are JAX's: pip install 'jax[cpu]'")
    found = []
    for name, layer in [*net.layers.items(), ("last_layer", net.last_layer)]:
        for attribute, value in vars(layer).items():
            for item in value.values() if isinstance(value, dict) else [value]:
                if isinstance(item, jax.core.Tracer):
                    found.append(f"{name}.{attribute}")
    return found


def test_compiled_jax_training_leaves_no_tracer_on_the_layers(synthetic_dir):
    import copy

    from xbackprop import SimpleConvNet
    from xbackprop.optimizers import Adam
    from xbackprop.training import make_gradient_step

    jax_xp = get_namespace("jax", strict=True) if importlib.util.find_spec("jax") else pytest.skip("pip install jax")
    data = synthetic_data(synthetic_dir, jax_xp)
    for net in (MultiLayerNet(784, [20], 10, xp=jax_xp, dtype="float32", seed=0),
                SimpleConvNet(xp=jax_xp, dtype="float32", seed=0)):
        train(net, Adam(lr=1e-3), data, Schedule(iters=4, batch_size=50, seed=0))  # blocks of steps, one lax.scan
        make_gradient_step(net, jax_xp)(net.params, net.buffers, data.x_train, data.t_train,
                                        jax_xp.asarray(np.arange(50)))  # one jitted step
        assert _tracers_left_on(net) == []
        copy.deepcopy(net)  # failed on the tracers a traced backward left in the layers' grads
        grads = net.gradient(data.x_train[:20, ...], data.t_train[:20])  # and the book's eager pass still works
        assert set(grads) == set(net.params)


def test_the_compiled_evaluation_counts_as_the_eager_one_with_the_buffers_of_the_moment(synthetic_dir):
    """JAX evaluates through one compiled program per chunk size; the net's buffers (batch normalization's running
    statistics) are its arguments, never constants baked in when it was first compiled."""
    from xbackprop.training import make_count

    jax_xp = get_namespace("jax", strict=True) if importlib.util.find_spec("jax") else pytest.skip("pip install jax")
    data = synthetic_data(synthetic_dir, jax_xp)
    net = MultiLayerNet(784, [30], 10, use_batchnorm=True, xp=jax_xp, dtype="float32", seed=0)
    count = make_count(net, jax_xp)
    assert count is not None and make_count(net, get_namespace("numpy")) is None
    for _ in range(3):
        eager = int(net.count_correct(data.x_test, data.t_test, batch_size=64))
        assert int(net.count_correct(data.x_test, data.t_test, batch_size=64, count=count)) == eager
        net.predict(data.x_train[:100, ...], train_flg=True)  # moves the running statistics
    assert _tracers_left_on(net) == []
