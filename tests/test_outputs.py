"""No output ever destroys input data: every file a run reads, wherever it was found, is planned against its
outputs before any work, a report folder is a report's alone, and a report is replaced as a unit."""

from __future__ import annotations

import os
import shutil

import pytest

from xbackprop.files import replace_atomically, replace_folder_atomically
from xbackprop.predict import main as predict
from xbackprop.train import main as train

DATA_FILES = ("t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz")


@pytest.fixture
def data_root(synthetic_dir, tmp_path, monkeypatch):
    """``$XBACKPROP_DATA`` with the synthetic set filed as mnist/, and a cache of its own."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_dir, root / "mnist")
    monkeypatch.setenv("XBACKPROP_DATA", str(root))
    monkeypatch.setenv("XBACKPROP_CACHE", str(tmp_path / "cache"))
    return root


def contents(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("flag", ["--save", "--json"])
@pytest.mark.parametrize("name", DATA_FILES)
def test_an_output_onto_a_data_file_found_anywhere_is_refused_before_training(data_root, capsys, flag, name):
    before = contents(data_root / "mnist")
    target = data_root / "mnist" / name
    assert train(["--dataset", "mnist", "--iters", "1", "--quiet", flag, str(target)]) == 2
    err = capsys.readouterr().err
    assert f"{flag} {target} would overwrite --dataset's file" in err and err.count("\n") == 1
    assert contents(data_root / "mnist") == before


def test_an_output_onto_the_download_cache_is_refused(data_root, tmp_path, capsys):
    target = tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz"
    target.parent.mkdir(parents=True)
    assert train(["--dataset", "mnist", "--iters", "1", "--quiet", "--save", str(target)]) == 2
    assert "would overwrite --dataset's file" in capsys.readouterr().err


def test_an_output_onto_a_data_dir_file_is_refused(synthetic_dir, tmp_path, capsys):
    folder = shutil.copytree(synthetic_dir, tmp_path / "d")
    before = contents(folder)
    assert train(["--data-dir", str(folder), "--iters", "1", "--quiet", "--plot",
                  str(folder / "t10k-labels-idx1-ubyte.gz")]) == 2
    assert "would overwrite" in capsys.readouterr().err and contents(folder) == before


@pytest.mark.parametrize("outputs", [
    ["--save", "{tmp}/rep/model.npz", "--report", "{tmp}/rep"],
    ["--plot", "{tmp}/rep/curves.png", "--report", "{tmp}/rep"],
    ["--json", "{tmp}/rep/run.json", "--report", "{tmp}/rep"],
    ["--report", "{data}"],
])
def test_outputs_colliding_with_a_report_folder_are_refused_before_training(data_root, tmp_path, capsys, outputs):
    outputs = [o.format(tmp=tmp_path, data=data_root / "mnist") for o in outputs]
    (tmp_path / "rep").mkdir()  # an earlier report
    (tmp_path / "rep" / "summary.md").write_text("earlier")
    before = contents(data_root / "mnist")
    assert train(["--dataset", "mnist", "--iters", "1", "--quiet", *outputs]) == 2
    err = capsys.readouterr().err
    assert "--report" in err and "is in it" in err and err.count("\n") == 1
    assert contents(data_root / "mnist") == before


def test_a_report_folder_holding_other_files_is_refused(synthetic_dir, tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    assert train(["--data-dir", str(synthetic_dir), "--iters", "1", "--quiet", "--report", str(folder)]) == 2
    assert "holds mine.txt, which is no report's" in capsys.readouterr().err
    assert (folder / "mine.txt").read_text() == "keep me"


def test_predict_refuses_show_onto_its_own_report(synthetic_dir, tmp_path, capsys):
    (tmp_path / "rep").mkdir()  # an earlier report
    images = str(synthetic_dir / "t10k-images-idx3-ubyte.gz")
    labels = str(synthetic_dir / "t10k-labels-idx1-ubyte.gz")
    assert predict(["--load", "/nonexistent.npz", images, labels, "--show", str(tmp_path / "rep" / "mistakes.png"),
                    "--report", str(tmp_path / "rep")]) == 2
    assert "is in it" in capsys.readouterr().err


def test_a_folder_replaced_as_a_unit_is_left_whole_by_an_interruption(tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "summary.md").write_text("old")
    (folder / "confusion.png").write_bytes(b"old picture")
    with pytest.raises(KeyboardInterrupt), replace_folder_atomically(folder) as staging:
        (staging / "summary.md").write_text("new")
        raise KeyboardInterrupt
    assert contents(folder) == {"confusion.png": b"old picture", "summary.md": b"old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no staging folder left
    with replace_folder_atomically(folder) as staging:
        (staging / "summary.md").write_text("new")
    assert contents(folder) == {"summary.md": b"new"} and sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_report_interrupted_while_drawing_leaves_the_old_report(synthetic_dir, tmp_path, monkeypatch):
    from xbackprop.show import figures as plotting

    folder = tmp_path / "rep"
    assert train(["--data-dir", str(synthetic_dir), "--iters", "20", "--quiet", "--report", str(folder)]) == 0
    before = contents(folder)
    drawn = []

    def interrupted(figure, path, **kwargs):
        drawn.append(path)
        if len(drawn) == 2:
            raise KeyboardInterrupt
        return save_figure(figure, path, **kwargs)

    save_figure = plotting.save_figure
    monkeypatch.setattr(plotting, "save_figure", interrupted)
    assert train(["--data-dir", str(synthetic_dir), "--iters", "30", "--quiet", "--report", str(folder)]) == 130
    assert contents(folder) == before


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), replace_atomically(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_only_regular_files_are_replaced(tmp_path):

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="exists and is not a regular file"), replace_atomically(fifo):
        pass
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
    real, link = tmp_path / "real.json", tmp_path / "link.json"
    real.write_text("old")
    link.symlink_to(real)
    with replace_atomically(link) as temporary:
        temporary.write_text("new")
    assert link.is_symlink() and real.read_text() == "new"  # the link still points at the replaced file
