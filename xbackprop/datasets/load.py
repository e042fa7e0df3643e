"""Loading a dataset: from a folder, the cache or a download; the book's load_mnist."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..functions import checked_labels
from .catalog import CATALOG, CHECKSUMS, DATASETS, IDX_FILES
from .dataset import DataError, Dataset, DataUnavailableError
from .download import _mirrors, _verify, download_idx
from .idx import read_idx
from .locate import DATA_ENV, _find_file, _first_holding, _search_dirs, _stems, default_cache_dir, identify_dataset

#: The dataset :func:`load_mnist` serves when none is named: ``fashion-mnist`` runs the book's scripts unedited
#: where only Fashion-MNIST is at hand.
DATASET_ENV = "XBACKPROP_DATASET"


def load_split(folder: str | os.PathLike[str], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, H, W)`` uint8 and labels ``(N,)`` uint8 of one split from an IDX folder."""
    folder = Path(folder)
    images_stem, labels_stem = IDX_FILES[split]
    paths = []
    for stem in (images_stem, labels_stem):
        path = _find_file(folder, stem)
        if path is None:
            raise DataError(f"{folder / stem}(.gz): file not found")
        paths.append(path)
    images = read_idx(paths[0], ndim=3)
    labels = read_idx(paths[1], ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{paths[1]}: {labels.shape[0]} labels for {images.shape[0]} images in {paths[0].name}")
    if images.shape[0] == 0 or images.shape[1] * images.shape[2] == 0:
        raise DataError(f"{paths[0]}: holds no pixels (shape {images.shape})")
    if images.dtype != np.uint8:
        raise DataError(f"{paths[0]}: pixels must be unsigned bytes (IDX type 0x08), not {images.dtype}")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{paths[1]}: labels must be integers, not {labels.dtype}")
    return images, labels


def _with_classes(dataset: Dataset, classes: int | None) -> Dataset:
    if classes is None:
        return dataset
    dataset = dataclasses.replace(dataset, classes=classes)
    _check_labels(dataset)
    return dataset


def _load_idx_dataset(name: str, folder: Path, source: str, classes: int | None = None) -> Dataset:
    x_train, t_train = load_split(folder, "train")
    x_test, t_test = load_split(folder, "test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{folder}: training images are {x_train.shape[1]}x{x_train.shape[2]}, "
                        f"test images {x_test.shape[1]}x{x_test.shape[2]}")
    declared = CATALOG[name].classes if classes is None and name in CATALOG else classes
    dataset = Dataset(name, x_train, t_train, x_test, t_test, 255, source, declared)
    _check_labels(dataset)
    return dataset


def _check_labels(dataset: Dataset) -> None:
    """:class:`DataError` unless every label lies in ``[0, num_classes)``."""
    for split, labels in (("training", dataset.t_train), ("test", dataset.t_test)):
        try:
            checked_labels(labels, labels.shape[0], dataset.num_classes, who=f"{dataset.name}: {split}")
        except ValueError as exc:
            raise DataError(str(exc)) from None


def load_dataset(
    name: str = "mnist",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float | tuple[float, float] = 30.0,
    progressbar: bool = True,
    checksums: dict[str, dict[str, str]] | None = None,
    classes: int | None = None,
) -> Dataset:
    """Load ``"mnist"``, ``"fashion-mnist"`` or ``"digits"`` as a :class:`Dataset`.

    An explicit ``data_dir`` must hold the four IDX files. Otherwise the files are
    looked up in ``$XBACKPROP_DATA/<name>/``, the system folder, the cache
    (``cache_dir``, default :func:`default_cache_dir`), and finally downloaded
    into the cache when ``download`` (from ``mirrors``, default ``$XBACKPROP_MIRRORS`` or the
    published ones, verified against ``checksums``, default the published ones). Raises
    :class:`DataUnavailableError` when the data cannot be had and :class:`DataError` for corrupt files.
    """
    if name not in DATASETS and data_dir is None:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if classes is not None and classes < 2:
        raise DataError(f"a dataset needs at least 2 classes, not {classes}")
    if name in CATALOG and not CATALOG[name].on_disk:
        return _with_classes(CATALOG[name].load(), classes)
    if data_dir is not None:
        folder = Path(data_dir)
        missing = [stem for stem in _stems() if _find_file(folder, stem) is None]
        if missing:
            raise DataUnavailableError(f"{folder}: no {', '.join(missing)} (.gz) for {name}")
        return _load_idx_dataset(name, folder, str(folder), classes)

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / name
    looked = [*_search_dirs(name), cache]
    expected = checksums or CHECKSUMS[name]
    _drop_corrupt_cache_files(cache, expected)
    found = _first_holding(looked, _stems())
    if found is not None:
        held = identify_dataset(found)  # by checksum: Fashion-MNIST filed under mnist/ is not MNIST
        if held is not None and held != name:
            raise DataError(f"{found} holds {held}, not {name}: move it to a folder named {held}/, or ask for {held}")
        return _load_idx_dataset(name, found, str(found), classes)
    if not download:
        raise DataUnavailableError(f"{name} not found in {', '.join(map(str, looked))}")
    try:
        download_idx(
            cache,
            {stem: expected[stem] for stem in _stems() if _find_file(cache, stem) is None},
            _mirrors(name) if mirrors is None else mirrors,
            timeout=timeout,
            progressbar=progressbar,
        )
    except DataUnavailableError as exc:
        raise DataUnavailableError(f"{name} not found in {', '.join(map(str, looked))}, and {exc}") from None
    return _load_idx_dataset(name, cache, f"{cache} (downloaded)", classes)


def _drop_corrupt_cache_files(cache: Path, expected: dict[str, dict[str, str]]) -> None:
    """Delete cached files that no longer match their published SHA-256, so they are fetched again.

    The cache is xbackprop's own: whatever is there was verified once, and a file that
    changed since (a disk error, an edit) must not be trained on.
    """
    for stem in _stems():
        path = _find_file(cache, stem)
        if path is None:
            continue
        try:
            _verify(path, expected[stem])
        except DataError:
            logging.getLogger(__name__).warning("%s no longer matches its SHA-256; fetching it again", path)
            try:
                path.unlink(missing_ok=True)  # another process repairing the same cache may have been first
            except OSError as exc:
                raise DataError(f"{path}: no longer matches its SHA-256 and cannot be removed ({exc})") from None


def load_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    dataset: str | None = None,
    **kwargs,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The book's ``load_mnist``: ``(x_train, t_train), (x_test, t_test)`` as host arrays.

    ``normalize`` scales pixels to float32 in ``[0, 1]``; ``flatten`` gives rows
    of 784; ``one_hot_label`` gives ``(N, 10)`` float32 labels. ``dataset`` defaults to
    ``$XBACKPROP_DATASET``, else ``"mnist"``: ``XBACKPROP_DATASET=fashion-mnist python
    train_neuralnet.py`` runs the book's script unedited on Fashion-MNIST. Other keyword
    arguments go to :func:`load_dataset`; data that cannot be had raises
    :class:`DataUnavailableError` saying how to get it.
    """
    if dataset is None:
        dataset = os.environ.get(DATASET_ENV, "").strip() or "mnist"
        if dataset not in DATASETS:
            raise DataError(f"{DATASET_ENV}={dataset!r} is not a dataset; use one of {', '.join(DATASETS)}")
    try:
        data = load_dataset(dataset, **kwargs)
    except DataUnavailableError as exc:
        # the 28x28 ones only: the book's scripts build 784-input nets
        others = ", ".join(f"{DATASET_ENV}={other}" for other in ("mnist", "fashion-mnist") if other != dataset)
        raise DataUnavailableError(
            f"{exc}; set {DATA_ENV} to a folder with {dataset}/ in it, pass data_dir=..., go online once to "
            f"download it into {default_cache_dir() / dataset}, or use other data ({others})") from None

    def images(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32) / data.max_value if normalize else x
        return x.reshape(len(x), -1) if flatten else x[:, np.newaxis]

    def labels(t: np.ndarray) -> np.ndarray:
        return np.eye(data.num_classes, dtype=np.float32)[t] if one_hot_label else t

    return (images(data.x_train), labels(data.t_train)), (images(data.x_test), labels(data.t_test))
