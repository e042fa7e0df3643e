"""Datasets on the host: MNIST and Fashion-MNIST (IDX files) and scikit-learn's 8x8 digits.

IDX files are looked up in ``--data-dir``, then ``$XBACKPROP_DATA/<dataset>/``, then
the system folder (Debian's Fashion-MNIST), then the user cache, and are otherwise
downloaded from public mirrors into the cache: each file goes to a staging folder,
is checked against a known SHA-256 (of the compressed or of the decompressed
bytes, since re-compressed copies exist) and only then renamed into the cache, so a
partial or corrupt download is never where it would be trusted. Every file is
parsed with its header validated. Arrays here are host NumPy arrays; the trainer
moves them to the device once. Nothing is ever unpickled.

``catalog`` holds one record per dataset; ``idx`` reads IDX files; ``images`` reads and prepares images for
``predict``; ``locate`` finds and identifies data on disk; ``download`` fetches it; ``load`` puts it together.
"""

from __future__ import annotations

from .catalog import CATALOG, CLASS_NAMES, DATASETS, IDX_FILES, DatasetRecord
from .dataset import DataError, Dataset, DataUnavailableError
from .download import download_idx
from .idx import check_idx_size, idx_shape, read_idx
from .images import INVERT_CHOICES, PREPARE_CHOICES, read_images, save_grey_png
from .load import load_dataset, load_mnist, load_split
from .locate import DATA_ENV, dataset_files, default_cache_dir, find_dataset_dir, identify_dataset

__all__ = [
    "CATALOG",
    "CLASS_NAMES",
    "DATA_ENV",
    "DATASETS",
    "DataError",
    "DataUnavailableError",
    "Dataset",
    "DatasetRecord",
    "IDX_FILES",
    "INVERT_CHOICES",
    "PREPARE_CHOICES",
    "check_idx_size",
    "dataset_files",
    "default_cache_dir",
    "download_idx",
    "find_dataset_dir",
    "identify_dataset",
    "idx_shape",
    "load_dataset",
    "load_mnist",
    "load_split",
    "read_idx",
    "read_images",
    "save_grey_png",
]
