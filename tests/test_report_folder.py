"""The report of what a net learned: from Python, from ``train --report`` and from ``predict ... --report``."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import idx_bytes, learnable

from xbackprop import TwoLayerNet
from xbackprop.optimizers import SGD
from xbackprop.predict import main as predict
from xbackprop.show.evaluation import evaluate
from xbackprop.show.report_folder import write_report
from xbackprop.train import main as train

pytest.importorskip("matplotlib", reason="reports draw with matplotlib: pip install 'xbackprop[plot]'")


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    images, labels = learnable(300, rng)
    x = images.reshape(300, -1).astype(np.float64) / 255
    net = TwoLayerNet(x.shape[1], 20, 10, dtype="float64", seed=0)
    optimizer = SGD(lr=0.5)
    for step in range(12):  # briefly: the net must still make mistakes to show
        rows = rng.integers(0, 300, 30)
        optimizer.update(net.params, net.gradient(x[rows], labels[rows]))
    return net, x, labels


def test_an_evaluation_counts_every_answer_and_orders_the_mistakes(trained):
    net, x, labels = trained
    evaluation = evaluate(net, x, labels, batch_size=70)
    assert sum(map(sum, evaluation.matrix)) == 300
    assert evaluation.accuracy == pytest.approx(net.accuracy(x, labels))
    predicted = net.predict(x).argmax(axis=1)
    assert evaluation.predicted == predicted.tolist()
    wrong = evaluation.mistakes()
    assert 0 < len(wrong) <= 24
    assert all(labels[i] != predicted[i] for i in wrong)
    assert [evaluation.confidence[i] for i in wrong] == sorted((evaluation.confidence[i] for i in wrong), reverse=True)


def test_a_report_from_python_writes_its_pictures_and_a_summary_linking_them(trained, tmp_path):
    net, x, labels = trained
    evaluation = write_report(tmp_path / "report", net, x, labels, title="toy run")
    files = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert files == ["confusion.png", "mistakes.png", "summary.md"]
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert f"**{evaluation.accuracy:.4f}** (300 images)" in summary
    assert "![confusion matrix](confusion.png)" in summary and "![the most confident mistakes](mistakes.png)" in summary
    assert summary.count("\n| ") == 12  # the header, its rule and one row per class
    for name in ("confusion.png", "mistakes.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_and_predict_write_reports(synthetic_dir, tmp_path, capsys):
    model = tmp_path / "model.npz"
    assert train(["--data-dir", str(synthetic_dir), "--iters", "100", "--quiet", "--save", str(model),
                  "--report", str(tmp_path / "trained")]) == 0
    assert sorted(p.name for p in (tmp_path / "trained").iterdir()) == ["confusion.png", "curves.png",
                                                                         "mistakes.png", "summary.md"]
    assert "wrote " in capsys.readouterr().err
    images, labels = learnable(40, np.random.default_rng(9))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    files = [str(tmp_path / "t10k-images-idx3-ubyte"), str(tmp_path / "t10k-labels-idx1-ubyte")]
    assert predict(["--load", str(model), *files, "--limit", "0", "--report", str(tmp_path / "seen")]) == 0
    assert "(40 images)" in (tmp_path / "seen" / "summary.md").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--lr-sweep", "0.1,1"], "--report describes one run"),
    (["--report", "{tmp}/no/such/report"], "does not exist"),
    (["--report", "/proc/xbackprop-report"], "--report /proc/xbackprop-report: cannot make the folder"),
])
def test_a_report_that_cannot_be_written_is_refused_before_training(synthetic_dir, tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    base = ["--data-dir", str(synthetic_dir), "--iters", "1", "--quiet"]
    if "--report" not in args:
        args += ["--report", str(tmp_path / "r")]
    assert train([*base, *args]) == 2
    assert message in capsys.readouterr().err


def test_predict_needs_labels_for_a_report(synthetic_dir, tmp_path, capsys):
    images, _ = learnable(3, np.random.default_rng(9))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images))
    assert predict(["--load", "/nonexistent.npz", str(tmp_path / "t10k-images-idx3-ubyte"),
                    "--report", str(tmp_path / "r")]) == 2
    assert "--report needs labels" in capsys.readouterr().err


@pytest.mark.parametrize(("change", "message"), [
    (lambda x, t: (x[:0], t[:0]), "x: no images"),
    (lambda x, t: (x, t[:-1]), "t: labels of shape"),
    (lambda x, t: (x, t + 10), r"t: labels must lie in \[0, 10\)"),
    (lambda x, t: (x, t.astype(np.float32)), "t: labels of shape .* dtype float32 fit neither integer class indices"),
    (lambda x, t: (x * np.nan, t), "outputs are not finite"),
])
def test_an_evaluation_of_what_does_not_fit_names_the_argument(trained, change, message):
    net, x, t = trained
    x, t = change(np.asarray(x), np.asarray(t))
    with pytest.raises(ValueError, match=message):
        evaluate(net, x, t)


def test_one_hot_labels_are_evaluated_as_their_classes_and_names_must_fit(trained, tmp_path):
    net, x, t = trained
    t = np.asarray(t)
    assert evaluate(net, x, np.eye(10)[t]).accuracy == evaluate(net, x, t).accuracy
    with pytest.raises(ValueError, match="names: 3 class names for a net of 10 classes"):
        write_report(tmp_path / "r", net, x, t, names=["a", "b", "c"])


def test_a_net_whose_outputs_are_not_finite_counts_no_row_correct():
    net = TwoLayerNet(4, 3, 2, xp="numpy", dtype="float64", seed=0)
    net.params["W2"][...] = np.nan  # argmax of NaN rows is 0: class 0's rows would count as correct
    assert net.accuracy(np.ones((5, 4)), np.zeros(5, dtype=np.int64)) == 0.0
