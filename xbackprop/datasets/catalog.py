"""The datasets xbackprop knows, one :class:`DatasetRecord` each: a new dataset is one record here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dataset import Dataset, DataUnavailableError

__all__ = ["DatasetRecord", "CATALOG", "DATASETS", "CLASS_NAMES", "IDX_FILES", "CHECKSUMS"]

#: The four files of an IDX dataset, by split: (images, labels), without ``.gz``.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class DatasetRecord:
    """What xbackprop knows of one dataset.

    ``classes`` and their ``class_names`` (``None``: the digits 0-9); an IDX dataset's published ``mirrors`` and
    the SHA-256 of each of its four files (``checksums[stem]``: ``"gz"`` of the canonical download and/or
    ``"raw"`` of the decompressed bytes); ``system_dir``, where a distribution installs it; ``prepare``, how
    ``predict`` makes a photo look like its images (``"mnist"``: a digit cropped, fitted in 20x20 and centred;
    ``"fashion"``: an object cropped and fitted; ``"none"``). A dataset that is not IDX files has ``load``,
    which returns its :class:`Dataset`, and names the library it is ``provided_by``.
    """

    name: str
    classes: int
    class_names: tuple[str, ...] | None = None
    mirrors: tuple[str, ...] = ()
    checksums: dict[str, dict[str, str]] = field(default_factory=dict)
    system_dir: Path | None = None
    prepare: str = "none"
    load: Callable[[], Dataset] | None = None
    provided_by: str = ""

    @property
    def on_disk(self) -> bool:
        """Whether the dataset is IDX files, found in folders or downloaded (not made by a library)."""
        return self.load is None


def _load_digits() -> Dataset:
    """scikit-learn's 8x8 digits (values 0-16), split once, the same way everywhere: a fifth for testing."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataUnavailableError("the digits dataset needs scikit-learn (pip install scikit-learn)") from None
    digits = load_digits()
    images = digits.images.astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(labels))
    n_test = len(labels) // 5
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", images[train], labels[train], images[test], labels[test], 16, "scikit-learn", 10)


_MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}

_CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte": {"gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"},
        "train-labels-idx1-ubyte": {
            "gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "raw": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        },
        "t10k-images-idx3-ubyte": {
            "gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "raw": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        },
        "t10k-labels-idx1-ubyte": {
            "gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            "raw": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": {"raw": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"},
        "train-labels-idx1-ubyte": {"raw": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"},
        "t10k-images-idx3-ubyte": {"raw": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"},
        "t10k-labels-idx1-ubyte": {"raw": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"},
    },
}

CATALOG: dict[str, DatasetRecord] = {record.name: record for record in (
    DatasetRecord("mnist", 10, mirrors=_MIRRORS["mnist"], checksums=_CHECKSUMS["mnist"], prepare="mnist"),
    DatasetRecord("fashion-mnist", 10,
                  ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"),
                  mirrors=_MIRRORS["fashion-mnist"], checksums=_CHECKSUMS["fashion-mnist"],
                  system_dir=Path("/usr/share/datasets/fashion-mnist"), prepare="fashion"),
    DatasetRecord("digits", 10, load=_load_digits, provided_by="scikit-learn"),
)}

#: Dataset names accepted by :func:`~xbackprop.datasets.load_dataset`.
DATASETS = tuple(CATALOG)
#: Names of the classes of the datasets whose labels are not their own names.
CLASS_NAMES = {name: record.class_names for name, record in CATALOG.items() if record.class_names}
#: Every known IDX file's checksums, by dataset.
CHECKSUMS = {name: record.checksums for name, record in CATALOG.items() if record.checksums}
