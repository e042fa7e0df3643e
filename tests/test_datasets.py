"""IDX parsing and local look-up: synthetic files always, the real files when XBACKPROP_DATA is set."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from conftest import idx_bytes, write_split

from xbackprop.datasets import DataError, DataUnavailableError, find_dataset_dir, load_split, read_idx


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 5, dtype=np.uint8)
    write_split(tmp_path, "test", images, labels, compress=compress)
    got_images, got_labels = load_split(tmp_path, "test")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.dtype == np.uint8 and got_images.flags.writeable


def test_bad_magic(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match=r"x-idx1-ubyte: not an IDX file"):
        read_idx(path)


def test_truncated_payload(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros(10, np.uint8))[:-3])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: header says shape \(10,\) \(10 bytes\) but the file holds 7"):
        read_idx(path)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(1000, np.uint8)))[:-20])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: cannot read"):
        read_idx(path)


def test_wrong_rank(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros((2, 2), np.uint8)))
    with pytest.raises(DataError, match="expected 1 dimensions, the header says 2"):
        read_idx(path, ndim=1)


def test_mismatched_counts(tmp_path):
    write_split(tmp_path, "test", np.zeros((10, 28, 28), np.uint8), np.zeros(60, np.uint8))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: 60 labels for 10 images"):
        load_split(tmp_path, "test")


def test_look_up_order(tmp_path, monkeypatch):
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    (env / "mnist").mkdir(parents=True)
    explicit.mkdir()
    write_split(env / "mnist", "test", np.zeros((1, 2, 2), np.uint8), np.zeros(1, np.uint8))
    monkeypatch.setenv("XBACKPROP_DATA", str(env))
    assert find_dataset_dir("mnist") == env / "mnist"
    assert find_dataset_dir("mnist", explicit) == env / "mnist"  # empty explicit folder: next candidate
    write_split(explicit, "test", np.zeros((1, 2, 2), np.uint8), np.zeros(1, np.uint8))
    assert find_dataset_dir("mnist", explicit) == explicit
    assert find_dataset_dir("mnist", split="train") is None


def test_real_mnist_test_split(data_dir):
    folder = find_dataset_dir("mnist", data_dir / "mnist")
    if folder is None:
        pytest.skip("MNIST test split not in XBACKPROP_DATA")
    images, labels = load_split(folder, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_fashion_mnist(data_dir):
    folder = find_dataset_dir("fashion-mnist", data_dir / "fashion-mnist", split="train")
    if folder is None:
        pytest.skip("Fashion-MNIST not in XBACKPROP_DATA")
    images, labels = load_split(folder, "train")
    assert images.shape == (60000, 28, 28)
    assert np.bincount(labels).tolist() == [6000] * 10


def raw_idx(type_code, dims, payload=b""):
    import struct

    return struct.pack(">BBBB", 0, 0, type_code, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + payload


def test_a_header_promising_too_much_is_refused_before_reading(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    # Every axis 2**31: the byte count (2**93) must not wrap around to something small.
    path.write_bytes(gzip.compress(raw_idx(0x08, (2**31, 2**31, 2**31))))
    with pytest.raises(DataError, match=r"more than the 1,073,741,824 bytes"):
        read_idx(path)


def test_a_decompression_bomb_stops_at_what_the_header_promises(tmp_path):
    import tracemalloc

    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(raw_idx(0x08, (10,), bytes(200 << 20)), compresslevel=1))  # 200 MB inside
    tracemalloc.start()
    with pytest.raises(DataError, match=r"header says shape \(10,\) \(10 bytes\) but the file holds more"):
        read_idx(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_a_corrupt_deflate_body(tmp_path):
    labels = np.random.default_rng(3).integers(0, 10, 20000).astype(np.uint8)
    data = bytearray(gzip.compress(idx_bytes(labels)))
    data[len(data) // 2 : len(data) // 2 + 20] = b"\xff" * 20
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: cannot read"):
        read_idx(path)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8), "holds no pixels"),
        (np.zeros((5, 0, 0), np.uint8), np.zeros(5, np.uint8), "holds no pixels"),
    ],
)
def test_empty_images_are_refused(tmp_path, images, labels, message):
    write_split(tmp_path, "test", images, labels)
    with pytest.raises(DataError, match=message):
        load_split(tmp_path, "test")


def test_train_and_test_images_must_share_a_size(tmp_path):
    from xbackprop.datasets import load_dataset

    write_split(tmp_path, "train", np.zeros((5, 28, 28), np.uint8), np.zeros(5, np.uint8))
    write_split(tmp_path, "test", np.zeros((5, 27, 27), np.uint8), np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="training images are 28x28, test images 27x27"):
        load_dataset("mnist", data_dir=tmp_path)


def test_labels_must_fit_the_declared_classes(tmp_path):
    from xbackprop.datasets import load_dataset

    images = np.zeros((5, 4, 4), np.uint8)
    write_split(tmp_path, "train", images, np.array([0, 1, 2, 3, 200], np.uint8))
    write_split(tmp_path, "test", images, np.zeros(5, np.uint8))
    with pytest.raises(DataError, match=r"training: labels must lie in \[0, 10\), got values from 0 to 200"):
        load_dataset("mnist", data_dir=tmp_path)
    assert load_dataset("mine", data_dir=tmp_path).num_classes == 201  # undeclared: from the labels
    with pytest.raises(DataError, match=r"labels must lie in \[0, 50\)"):
        load_dataset("mine", data_dir=tmp_path, classes=50)


def test_labels_far_beyond_any_class_count_are_refused(tmp_path):
    import struct

    from xbackprop.datasets import load_dataset

    images = np.zeros((2, 4, 4), np.uint8)
    write_split(tmp_path, "train", images, np.zeros(2, np.uint8))
    write_split(tmp_path, "test", images, np.zeros(2, np.uint8))
    huge = raw_idx(0x0C, (2,), struct.pack(">2i", 0, 2**31 - 1))  # int32 labels
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(huge))
    with pytest.raises(DataError, match=r"labels go up to 2147483647; .* declare them \(--classes\)"):
        load_dataset("mine", data_dir=tmp_path).num_classes


def test_the_dataset_variable_makes_load_mnist_serve_another_dataset(synthetic_dir, tmp_path, monkeypatch):
    """The book's scripts call load_mnist() unedited; XBACKPROP_DATASET=fashion-mnist gives them Fashion-MNIST."""
    from xbackprop import load_mnist

    (tmp_path / "fashion-mnist").symlink_to(synthetic_dir)
    monkeypatch.setenv("XBACKPROP_DATA", str(tmp_path))
    monkeypatch.setenv("XBACKPROP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XBACKPROP_MIRRORS", "http://127.0.0.1:9/")  # nothing is downloaded
    monkeypatch.setenv("XBACKPROP_DATASET", "fashion-mnist")
    (x_train, t_train), (x_test, _) = load_mnist(normalize=True, one_hot_label=True)
    assert x_train.shape == (600, 784) and t_train.shape == (600, 10) and x_test.shape == (200, 784)
    monkeypatch.setenv("XBACKPROP_DATASET", "imagenet")
    with pytest.raises(DataError, match="XBACKPROP_DATASET='imagenet' is not a dataset; use one of mnist"):
        load_mnist()
    monkeypatch.setenv("XBACKPROP_DATASET", "mnist")
    with pytest.raises(DataUnavailableError, match=r"set XBACKPROP_DATA to a folder with mnist/ in it, pass "
                       r"data_dir=\.\.\., go online once .* or use other data \(XBACKPROP_DATASET=fashion-mnist"):
        load_mnist(timeout=1, progressbar=False)


def test_fashion_mnist_filed_as_mnist_is_recognised_by_its_checksums(data_dir, tmp_path, monkeypatch):
    from xbackprop.datasets import load_dataset

    (tmp_path / "mnist").symlink_to(data_dir / "fashion-mnist")
    monkeypatch.setenv("XBACKPROP_DATA", str(tmp_path))
    with pytest.raises(DataError, match=r"holds fashion-mnist, not mnist: move it to a folder named fashion-mnist/"):
        load_dataset("mnist", download=False)


def mixed_folder(folder, sources):
    """``folder``, made, with IDX files that are links to ``sources`` ``{file name: source path}``."""
    folder.mkdir()
    for name, source in sources.items():
        (folder / name).symlink_to(source)
    return folder


def test_a_folder_is_identified_by_all_four_files(data_dir, synthetic_dir, tmp_path):
    from xbackprop.datasets import identify_dataset

    fashion, mnist = data_dir / "fashion-mnist", data_dir / "mnist"
    assert identify_dataset(fashion) == "fashion-mnist" and identify_dataset(synthetic_dir) is None
    cases = {
        "fashion's training images among MNIST's files": (
            {"train-images-idx3-ubyte.gz": fashion / "train-images-idx3-ubyte.gz",
             **{f"{stem}.gz": mnist / f"{stem}.gz" for stem in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                                              "t10k-labels-idx1-ubyte")}},
            "train-images-idx3-ubyte is fashion-mnist's"),
        "train and test swapped": (
            {"train-images-idx3-ubyte.gz": fashion / "t10k-images-idx3-ubyte.gz",
             "train-labels-idx1-ubyte.gz": fashion / "t10k-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz": fashion / "train-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz": fashion / "train-labels-idx1-ubyte.gz"},
            "train-images-idx3-ubyte is fashion-mnist's t10k-images-idx3-ubyte"),
        "one known file beside unknown ones": (
            {"t10k-labels-idx1-ubyte.gz": fashion / "t10k-labels-idx1-ubyte.gz",
             **{f"{stem}.gz": synthetic_dir / f"{stem}.gz" for stem in ("train-images-idx3-ubyte",
                                                                      "train-labels-idx1-ubyte",
                                                                      "t10k-images-idx3-ubyte")}},
            "train-images-idx3-ubyte is none of fashion-mnist's"),
    }
    for number, (sources, message) in enumerate(cases.values()):
        with pytest.raises(DataError, match=message):
            identify_dataset(mixed_folder(tmp_path / f"case{number}", sources))


def test_a_plain_file_beside_a_different_gz_of_its_name_is_refused(synthetic_dir, tmp_path):
    import gzip
    import shutil

    from xbackprop.datasets import identify_dataset

    folder = shutil.copytree(synthetic_dir, tmp_path / "d")
    plain = gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (folder / "t10k-labels-idx1-ubyte").write_bytes(plain)
    assert identify_dataset(folder) is None  # the same data twice is fine
    (folder / "t10k-labels-idx1-ubyte").write_bytes(plain[:-1] + bytes([(plain[-1] + 1) % 10]))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte and t10k-labels-idx1-ubyte.gz hold different data"):
        identify_dataset(folder)


def test_an_idx_file_is_read_no_further_than_the_images_asked_for(tmp_path):
    """A 1 MB file whose header promises 1,000,000 images: --limit 1 reads one."""
    import gzip
    import struct

    from xbackprop.datasets import read_idx, read_images

    path = tmp_path / "big-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">BBBB3I", 0, 0, 8, 3, 1_000_000, 28, 28) + bytes(28 * 28 * 3))
    assert read_idx(path, ndim=3, first=2).shape == (2, 28, 28)
    labels, pixels = read_images(path, 28, limit=3, dtype=np.float32)
    assert labels == [f"{path.name}[{i}]" for i in range(3)] and pixels.dtype == np.float32
    with pytest.raises(Exception, match="header says shape"):
        read_idx(path, ndim=3)  # the whole file is still checked when all of it is asked for
