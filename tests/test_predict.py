"""python -m xbackprop.predict: a saved model classifies PNG and IDX images; mistakes end in one line."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from conftest import idx_bytes, learnable

from xbackprop.predict import main as predict
from xbackprop.train import main as train


@pytest.fixture(scope="module")
def model(synthetic_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.npz"
    assert train(["--data-dir", str(synthetic_dir), "--iters", "200", "--save", str(path), "--quiet"]) == 0
    return path


def test_png_drawn_dark_on_light_is_inverted_and_classified(model, tmp_path, capsys):
    image = pytest.importorskip("PIL.Image", reason="PNG input needs Pillow (pip install 'xbackprop[images]')")
    images, labels = learnable(2, np.random.default_rng(5))
    paths = []
    for k, (pixels, label) in enumerate(zip(images, labels)):
        paths.append(tmp_path / f"class{label}-{k}.png")
        # Twice the size and dark strokes on white, as a drawing would be: scaled back and inverted.
        image.fromarray(255 - pixels).resize((56, 56)).save(paths[-1])
    assert predict(["--load", str(model), *map(str, paths)]) == 0
    lines = capsys.readouterr().out.splitlines()
    for line, label in zip(lines, labels):
        assert line.split(": ")[1].startswith(f"{label} ("), line
        assert line.count("%") == 3


def test_idx_images_with_a_limit(model, tmp_path, capsys):
    images, labels = learnable(30, np.random.default_rng(6))
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(images)))
    assert predict(["--load", str(model), str(path), "--limit", "25", "--top", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 26 and lines[-1] == "... 5 more (--limit 0 prints all)"
    predicted = [int(line.split(": ")[1].split(" ")[0]) for line in lines[:-1]]
    assert np.mean(np.array(predicted) == labels[:25]) >= 0.9


def test_fashion_models_name_their_classes(data_dir, tmp_path, capsys):
    path = tmp_path / "fashion.npz"
    assert train(["--data-dir", str(data_dir / "fashion-mnist"), "--iters", "300", "--save", str(path), "--quiet"]) == 0
    capsys.readouterr()
    assert predict(["--load", str(path), str(data_dir / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"),
                    "--limit", "1", "--top", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("t10k-images-idx3-ubyte.gz[0]: Ankle boot (")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{model}", "{tmp}/missing.png"], "missing.png: no such file"),
        (["{model}", "{tmp}/garbage.png"], "garbage.png: not an image"),
        (["{tmp}/garbage.png", "{tmp}/garbage.png"], "not a saved xbackprop network"),
        (["{model}", "{tmp}/garbage.png", "--top", "0"], "--top must be at least 1"),
    ],
)
def test_mistakes_end_in_one_line(model, tmp_path, capsys, args, message):
    pytest.importorskip("PIL.Image", reason="image input needs Pillow (pip install 'xbackprop[images]')")
    (tmp_path / "garbage.png").write_bytes(b"not a png at all")
    model_arg, *rest = [a.format(model=model, tmp=tmp_path) for a in args]
    assert predict(["--load", model_arg, *rest]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m xbackprop.predict: error: ") and message in err
