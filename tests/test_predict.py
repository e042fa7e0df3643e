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
        (["{model}", "{tmp}/garbage.png", "--top", "0"], "--top: must be a positive integer, got 0"),
        (["{model}", "{tmp}/empty-idx3-ubyte"], "empty-idx3-ubyte: holds no images"),
    ],
)
def test_mistakes_end_in_one_line(model, tmp_path, capsys, args, message):
    pytest.importorskip("PIL.Image", reason="image input needs Pillow (pip install 'xbackprop[images]')")
    (tmp_path / "garbage.png").write_bytes(b"not a png at all")
    (tmp_path / "empty-idx3-ubyte").write_bytes(idx_bytes(np.zeros((0, 8, 8))))
    model_arg, *rest = [a.format(model=model, tmp=tmp_path) for a in args]
    assert predict(["--load", model_arg, *rest]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m xbackprop.predict: error: ") and message in err


def grey_of(path):
    from xbackprop.datasets.images import _grey_image

    return _grey_image(path)


def test_every_image_mode_reads_as_its_grey_levels(tmp_path):
    """Transparency, 16-bit and float images were read blank or clipped with exit 0."""
    image = pytest.importorskip("PIL.Image", reason="image input needs Pillow (pip install 'xbackprop[images]')")
    levels = np.linspace(0, 1, 64).reshape(8, 8)
    image.fromarray(np.round(levels * 65535).astype(np.uint16)).save(tmp_path / "deep.png")
    np.testing.assert_allclose(grey_of(tmp_path / "deep.png"), levels, atol=1e-4)
    image.fromarray((levels * 7 + 3).astype(np.float32), "F").save(tmp_path / "float.tiff")
    np.testing.assert_allclose(grey_of(tmp_path / "float.tiff"), levels, atol=1e-6)
    # black strokes on a transparent ground (a canvas export): ink on white paper
    alpha = (levels > 0.5).astype(np.uint8) * 255
    image.fromarray(np.dstack([np.zeros((8, 8, 3), np.uint8), alpha]), "RGBA").save(tmp_path / "strokes.png")
    np.testing.assert_allclose(grey_of(tmp_path / "strokes.png"), 1.0 - alpha / 255.0)
    # a light picture cut out of its dark ground: back on black
    grey = np.round(levels * 255).astype(np.uint8)
    image.fromarray(np.dstack([grey, grey, grey, alpha]), "RGBA").save(tmp_path / "cutout.png")
    np.testing.assert_allclose(grey_of(tmp_path / "cutout.png"), grey / 255.0 * (alpha / 255.0), atol=1e-3)


def test_a_decompression_bomb_and_nan_pixels_are_one_line(model, tmp_path, capsys):
    image = pytest.importorskip("PIL.Image", reason="image input needs Pillow (pip install 'xbackprop[images]')")
    image.new("L", (10_000, 10_000)).save(tmp_path / "bomb.png")  # 100 MB of pixels in a file of about 100 kB
    assert predict(["--load", str(model), str(tmp_path / "bomb.png")]) == 2
    assert "declares 10000x10000 pixels" in capsys.readouterr().err
    nan = np.full((4, 4), np.nan, np.float32)
    image.fromarray(nan, "F").save(tmp_path / "nan.tiff")
    assert predict(["--load", str(model), str(tmp_path / "nan.tiff")]) == 2
    assert "holds NaN or infinite pixels" in capsys.readouterr().err


def test_show_draws_what_the_net_sees(model, tmp_path, capsys):
    image = pytest.importorskip("PIL.Image", reason="image input needs Pillow (pip install 'xbackprop[images]')")
    drawing = np.full((96, 96), 255, np.uint8)
    drawing[40:80, 20:44] = 0  # a dark bar, small and off-centre on white
    image.fromarray(drawing).save(tmp_path / "bar.png")
    shown = tmp_path / "seen.png"
    assert predict(["--load", str(model), str(tmp_path / "bar.png"), "--prepare", "mnist", "--show", str(shown)]) == 0
    seen = np.asarray(image.open(shown))[::10, ::10] / 255.0  # back to 28x28
    rows, columns = np.nonzero(seen > 0.5)
    assert rows.max() - rows.min() + 1 <= 21 and 19 <= rows.max() - rows.min() + 1  # fitted in 20x20
    assert abs((rows.mean() - 13.5)) < 1.5 and abs(columns.mean() - 13.5) < 1.5  # centred by its mass
    assert predict(["--load", str(model), str(tmp_path / "bar.png"), "--show", str(tmp_path / "bar.png")]) == 2
    assert "would overwrite FILE's file" in capsys.readouterr().err


def test_images_with_their_labels_are_scored(model, tmp_path, capsys):
    """An IDX labels file right after its images file: accuracy, accuracy per class and the confusion matrix."""
    images, labels = learnable(30, np.random.default_rng(6))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    args = ["--load", str(model), str(tmp_path / "t10k-images-idx3-ubyte"), str(tmp_path / "t10k-labels-idx1-ubyte")]
    assert predict([*args, "--limit", "0"]) == 0  # with labels, the scores are the output
    assert capsys.readouterr().out.startswith("accuracy ")
    assert predict([*args, "--limit", "0", "--top", "1", "--each"]) == 0
    lines = capsys.readouterr().out.splitlines()
    predicted = np.array([int(line.split(": ")[1].split(" ")[0]) for line in lines[:30]])
    correct = int((predicted == labels).sum())
    assert lines[30] == f"accuracy {correct / 30:.4f} ({correct} of 30 images of t10k-images-idx3-ubyte)"
    assert lines[31].startswith("accuracy per class: 0 ") and lines[32].startswith("confusion matrix (rows: true")
    matrix = np.array([[int(n) for n in line.split()[2:]] for line in lines[34:]])
    assert matrix.sum() == 30 and np.trace(matrix) == correct
    assert (matrix.sum(axis=1) == np.bincount(labels, minlength=matrix.shape[0])).all()

    assert predict([*args, "--limit", "10"]) == 0  # scored over the images read
    assert " of 10 images of t10k-images-idx3-ubyte)" in capsys.readouterr().out
    assert predict(["--load", str(model), str(tmp_path / "t10k-labels-idx1-ubyte")]) == 2
    assert "a labels file must follow the IDX images file it labels" in capsys.readouterr().err
    (tmp_path / "short-labels-idx1-ubyte").write_bytes(idx_bytes(labels[:5]))
    assert predict(["--load", str(model), str(tmp_path / "t10k-images-idx3-ubyte"),
                    str(tmp_path / "short-labels-idx1-ubyte"), "--limit", "0"]) == 2
    assert "short-labels-idx1-ubyte: 5 labels for 30 images" in capsys.readouterr().err
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.concatenate([labels, labels])))
    assert predict(["--load", str(model), str(tmp_path / "t10k-images-idx3-ubyte"),  # another split's labels
                    str(tmp_path / "train-labels-idx1-ubyte"), "--limit", "5"]) == 2
    assert "train-labels-idx1-ubyte: 60 labels for 30 images" in capsys.readouterr().err
    assert predict([*args, str(tmp_path / "t10k-images-idx3-ubyte")]) == 2
    assert "t10k-images-idx3-ubyte: given twice" in capsys.readouterr().err
    promising = bytearray(idx_bytes(images))
    promising[4:8] = (60).to_bytes(4, "big")  # the header promises 60 images, the file holds 30
    (tmp_path / "short-images-idx3-ubyte").write_bytes(bytes(promising))
    assert predict(["--load", str(model), str(tmp_path / "short-images-idx3-ubyte"), "--limit", "5"]) == 2
    assert "header says shape (60, 28, 28)" in capsys.readouterr().err


@pytest.mark.parametrize("ground", [225, "noisy 220"])
def test_a_photo_on_light_grey_paper_is_prepared_as_on_white(tmp_path, ground):
    """Preparation takes the paper off, whatever its grey or noise: the net sees the picture on black, as the
    same picture photographed on white paper gives it."""
    image = pytest.importorskip("PIL.Image", reason="photos need Pillow (pip install 'xbackprop[images]')")
    from xbackprop.datasets import read_images

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:60, :40]
    item = np.where(((yy - 30) / 28) ** 2 + ((xx - 20) / 18) ** 2 < 1, 90 + 60 * np.sin(yy / 4) ** 2, 0)  # a garment

    def photo(paper):
        canvas = paper.copy()
        canvas[18:78, 28:68] = np.where(item > 0, 255 - item, canvas[18:78, 28:68])  # dark cloth on the paper
        path = tmp_path / f"photo-{len(list(tmp_path.iterdir()))}.png"
        image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(path)
        return read_images(path, 28, prepare="fashion")[1][0].reshape(28, 28)

    on_white = photo(np.full((96, 96), 255.0))
    paper = np.full((96, 96), 225.0) if ground == 225 else 220 + rng.normal(0, 8, (96, 96))
    on_grey = photo(paper)
    assert max(on_grey[0, 0], on_grey[0, -1], on_grey[-1, 0], on_grey[-1, -1]) < 0.05  # no grey ground left
    assert np.corrcoef(on_white.ravel(), on_grey.ravel())[0, 1] > 0.9
