"""Datasets on the host: MNIST and Fashion-MNIST (IDX files) and scikit-learn's 8x8 digits.

IDX files are looked up in ``--data-dir``, then ``$XBACKPROP_DATA/<dataset>/``, then
the system folder (Debian's Fashion-MNIST), then the user cache, and are otherwise
downloaded from public mirrors into the cache: each file goes to a staging folder,
is checked against a known SHA-256 (of the compressed or of the decompressed
bytes, since re-compressed copies exist) and only then renamed into the cache, so a
partial or corrupt download is never where it would be trusted. Every file is
parsed with its header validated. Arrays here are host NumPy arrays; the trainer
moves them to the device once. Nothing is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import math
import os
import socket
import struct
import tempfile
import threading
import time
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .backend import host_rng
from .io import replace_atomically

__all__ = [
    "DATASETS",
    "DataError",
    "DataUnavailableError",
    "Dataset",
    "IDX_FILES",
    "read_idx",
    "read_images",
    "find_dataset_dir",
    "identify_dataset",
    "check_idx_size",
    "load_split",
    "load_dataset",
    "load_mnist",
    "download_idx",
    "default_cache_dir",
]

#: Environment variable naming a folder with one sub-folder per dataset.
DATA_ENV = "XBACKPROP_DATA"

#: The four files of an IDX dataset, by split: (images, labels), without ``.gz``.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Where distributions install datasets (Debian's ``dataset-fashion-mnist``).
SYSTEM_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}

# IDX type codes (third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


#: Dataset names accepted by :func:`load_dataset`.
DATASETS = ("mnist", "fashion-mnist", "digits")

#: Names of the classes of the datasets whose labels are not their own names.
CLASS_NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
}

MIRRORS = {
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

# Known SHA-256 of each file: "gz" of the canonical download, "raw" of the
# decompressed IDX bytes. A file is accepted when either matches.
CHECKSUMS = {
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

#: The most bytes an IDX file's payload may hold (MNIST's training images hold 47 MB): a header
#: that promises more is refused before anything is decompressed.
MAX_IDX_BYTES = 1 << 30
#: The most bytes a download may bring; a mirror that sends more is cut off.
MAX_DOWNLOAD_BYTES = 64 << 20
#: Seconds one downloaded file may take in all (Fashion-MNIST's largest, 26 MB, at 1 Mbit/s takes 3.5 minutes).
DOWNLOAD_DEADLINE = 600.0
#: A download that brings under STALL_RATE bytes a second over STALL_SECONDS is given up (not waited out).
STALL_SECONDS = 30.0
STALL_RATE = 1024.0
#: The most classes a dataset's labels may imply when it declares none (``--classes`` raises it).
MAX_CLASSES = 1000
#: Classes of the known datasets.
DECLARED_CLASSES = {"mnist": 10, "fashion-mnist": 10, "digits": 10}

#: Environment variable that overrides the download cache folder.
CACHE_ENV = "XBACKPROP_CACHE"
#: The dataset :func:`load_mnist` serves when none is named: ``fashion-mnist`` runs the book's scripts unedited
#: where only Fashion-MNIST is at hand.
DATASET_ENV = "XBACKPROP_DATASET"
#: Environment variable naming base URLs (separated by spaces) to download from instead of the published
#: mirrors, e.g. a mirror inside an institution; files are still checked against the published SHA-256.
MIRRORS_ENV = "XBACKPROP_MIRRORS"


class DataError(ValueError):
    """A data file is missing, truncated, corrupt or inconsistent; the message names the file."""


class DataUnavailableError(DataError):
    """A dataset is neither on disk nor downloadable; the message lists where it was looked for."""


@dataclass(frozen=True)
class Dataset:
    """A dataset on the host.

    ``x_train`` ``(N, H, W)`` and ``x_test`` ``(M, H, W)`` hold raw pixel values
    (uint8) in ``[0, max_value]``; ``t_train`` ``(N,)`` and ``t_test`` ``(M,)`` hold
    integer class labels (uint8). ``source`` says where the data came from.
    """

    name: str
    x_train: np.ndarray
    t_train: np.ndarray
    x_test: np.ndarray
    t_test: np.ndarray
    max_value: int
    source: str
    classes: int | None = None

    @property
    def num_features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def num_classes(self) -> int:
        """The declared number of classes, else one more than the largest label (at most :data:`MAX_CLASSES`)."""
        if self.classes is not None:
            return self.classes
        largest = int(max(self.t_train.max(initial=0), self.t_test.max(initial=0)))
        if largest >= MAX_CLASSES:
            raise DataError(f"{self.name}: labels go up to {largest}; if the data really has {largest + 1} "
                            "classes, declare them (--classes)")
        return largest + 1

    def check_labels(self) -> None:
        """Raise :class:`DataError` unless every label lies in ``[0, num_classes)``."""
        for split, labels in (("training", self.t_train), ("test", self.t_test)):
            if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise DataError(f"{self.name}: {split} labels run from {int(labels.min())} to {int(labels.max())}, "
                                f"outside the {self.num_classes} classes [0, {self.num_classes})")


def read_idx(
    path: str | os.PathLike[str], *, ndim: int | None = None, max_bytes: int | None = None, first: int | None = None
) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed) into a NumPy array of its native type.

    Checks the magic number, the rank (``ndim`` when given) and that the payload
    holds exactly the product of the dimensions, reading (and decompressing) no more
    than the header justifies, and nothing at all when that exceeds ``max_bytes``
    (default :data:`MAX_IDX_BYTES`). With ``first``, only the first ``first`` items
    along the first axis are read (the rest of the file is not looked at). Raises
    :class:`DataError` naming the file otherwise.
    """
    path = Path(path)
    limit = MAX_IDX_BYTES if max_bytes is None else max_bytes
    try:
        with _open_idx(path) as f:
            shape, dtype = _read_header(f, path, ndim)
            if first is not None and shape:
                shape = (min(shape[0], first), *shape[1:])
            expected = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
            if expected > limit:
                raise DataError(f"{path}: header says shape {shape} ({expected:,} bytes), more than the "
                                f"{limit:,} bytes an IDX file may hold here")
            payload = f.read(expected + (first is None))  # one byte more than promised tells a longer file
            if len(payload) > expected:
                held = f"more than {expected + _count_rest(f, _EXCESS_READ):,} bytes"
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(payload) < expected:
        held = f"{len(payload)} bytes"
    if len(payload) != expected:
        raise DataError(f"{path}: header says shape {shape} ({expected} bytes) but the file holds {held}")
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def idx_shape(path: str | os.PathLike[str], *, ndim: int | None = None) -> tuple[int, ...]:
    """The shape an IDX file's header declares, read from the header alone."""
    path = Path(path)
    try:
        with _open_idx(path) as f:
            return _read_header(f, path, ndim)[0]
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def check_idx_size(path: str | os.PathLike[str], *, ndim: int | None = None) -> tuple[int, ...]:
    """The shape an IDX file's header declares, once the file is seen to hold exactly that many bytes (streamed
    through, never held: a file that promises more than it has, or has more, is a :class:`DataError`)."""
    path = Path(path)
    try:
        with _open_idx(path) as f:
            shape, dtype = _read_header(f, path, ndim)
            expected = math.prod(shape) * dtype.itemsize
            held = _count_rest(f, expected + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if held != expected:
        said = f"more than {expected:,}" if held > expected else f"{held:,}"
        raise DataError(f"{path}: header says shape {shape} ({expected:,} bytes) but the file holds {said} bytes")
    return shape


def _open_idx(path: Path) -> Any:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_header(f: Any, path: Path, ndim: int | None) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and item type an IDX header declares; ``f`` is left at the first item."""
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {magic.hex() or 'empty'})")
    rank = magic[3]
    if ndim is not None and rank != ndim:
        raise DataError(f"{path}: expected {ndim} dimensions, the header says {rank}")
    dims = f.read(4 * rank)
    if len(dims) < 4 * rank:
        raise DataError(f"{path}: truncated header")
    return struct.unpack(f">{rank}I", dims), np.dtype(_IDX_DTYPES[magic[2]])


_EXCESS_READ = 64 << 20  # how far past its promise a file is read, to tell corrupt data from extra data


def _count_rest(f: Any, limit: int) -> int:
    """Bytes left in ``f`` (read and dropped in blocks), up to ``limit``: the rest of a gzip stream is
    decompressed and its checksum checked, so a corrupt stream raises here rather than passing as longer."""
    count = 0
    while count < limit:
        block = f.read(min(1 << 20, limit - count))
        if not block:
            break
        count += len(block)
    return count


#: How :func:`read_images` treats a photo's polarity: invert when its border is light, always, or never.
INVERT_CHOICES = ("auto", "yes", "no")


def read_images(path: str | os.PathLike[str], side: int, *, invert: str = "auto", limit: int | None = None,
                dtype: Any = np.float64, prepare: str = "mnist") -> tuple[list[str], np.ndarray]:
    """Images to classify: a label per image and rows ``(n, side * side)`` of ``dtype`` in ``[0, 1]``.

    An IDX file gives its first ``limit`` images (all with ``None``; they must be
    ``side`` x ``side``), cut before they are converted, so a file of many images costs
    the memory of the ones asked for. A PNG, JPEG or TIFF (needs Pillow) is turned
    grey (transparency, 16-bit and float images included), inverted when
    ``invert="yes"``, or ``"auto"`` and its border is light (MNIST draws light strokes on
    black), and prepared as ``prepare`` says (:data:`PREPARE_CHOICES`: by default as
    MNIST's digits were). Raises :class:`DataError` naming the file.
    """
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {INVERT_CHOICES}, got {invert!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if "idx" in path.name:
        images = read_idx(path, ndim=3, first=limit)
        if len(images) == 0:
            raise DataError(f"{path}: holds no images")
        if images.shape[1] * images.shape[2] != side * side:
            raise DataError(f"{path}: images of {images.shape[1]}x{images.shape[2]}, the network takes {side}x{side}")
        if not np.isfinite(images).all():
            raise DataError(f"{path}: holds NaN or infinite pixels")
        scale = 255.0 if images.dtype == np.uint8 else max(float(images.max(initial=0)), 1.0)
        labels = [f"{path.name}[{i}]" for i in range(len(images))]
        return labels, images.reshape(len(images), -1).astype(dtype) / np.dtype(dtype).type(scale)
    pixels = _prepared(_grey_image(path), side, invert, prepare)
    return [str(path)], pixels.reshape(1, -1).astype(dtype)


def save_grey_png(pixels: np.ndarray, path: str | os.PathLike[str], scale: int = 10) -> None:
    """Write grey levels in ``[0, 1]`` as a PNG, each pixel a ``scale`` x ``scale`` square (what a net sees)."""
    from PIL import Image

    image = Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode="L")
    with replace_atomically(path) as temporary:
        image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST).save(temporary, "PNG")


#: How photos and drawings are made to look like the data: "mnist" crops the ink, fits it in 20x20 and
#: centres it by its centre of mass in 28x28 (as MNIST's digits were made); "fashion" crops it, fits it in
#: the whole 28x28 and centres its box (as Fashion-MNIST's pictures were); "none" only scales the image.
PREPARE_CHOICES = ("mnist", "fashion", "none")
#: Opaque pixels darker than this on average, on a transparent ground, are strokes of ink (see _grey_levels).
NEAR_BLACK = 0.15
#: The most pixels an image file may declare (Pillow's own guard is about 179 million, far above any drawing).
MAX_IMAGE_PIXELS = 50_000_000


def _grey_image(path: Path) -> np.ndarray:
    """A PNG, JPEG, TIFF ... as float64 grey levels in ``[0, 1]``, whatever its mode.

    Transparent pixels are composited onto the background that contrasts with the
    opaque ones (a drawing exported from a canvas is strokes on nothing); 16-bit images
    are scaled by 65,535 and 32-bit integer or float images by their own range, not
    clipped to 255. A file that declares more than :data:`MAX_IMAGE_PIXELS` is refused
    before its pixels are decoded.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError(f"{path}: reading PNG or JPEG needs Pillow: pip install 'xbackprop[images]'") from None
    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: the size is checked here, in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened:
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(f"{path}: declares {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS:,} "
                                "an image may hold here (a decompression bomb?)")
            return _grey_levels(opened)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: refused as a decompression bomb ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not an image Pillow can read ({exc})") from None


def _grey_levels(image: Any) -> np.ndarray:
    """Grey levels in ``[0, 1]`` of an open Pillow image (see :func:`_grey_image`)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image, dtype=np.float64) / 65535.0
    if image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{image.filename}: holds NaN or infinite pixels")
        low, high = float(values.min()), float(values.max())
        return (values - low) / (high - low) if high > low else np.zeros_like(values)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
    grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114])  # ITU-R 601, as Pillow's "L"
    alpha = rgba[..., 3]
    opaque = alpha > 0.5
    ink = float(grey[opaque].mean()) if opaque.any() else 0.0
    # Near-black strokes on nothing are ink on paper (put them on white; the inversion then makes them light
    # on dark); anything lighter is a picture cut out of its dark ground (put it back on black).
    background = 1.0 if ink < NEAR_BLACK else 0.0
    return alpha * grey + (1.0 - alpha) * background


def _prepared(pixels: np.ndarray, side: int, invert: str, prepare: str) -> np.ndarray:
    """Light-on-dark grey levels ``(side, side)`` as the net expects them (see :data:`PREPARE_CHOICES`)."""
    if prepare not in PREPARE_CHOICES:
        raise ValueError(f"prepare must be one of {PREPARE_CHOICES}, got {prepare!r}")
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if invert == "yes" or (invert == "auto" and border.mean() > 0.5):
        pixels = 1.0 - pixels
    if prepare == "none":
        return _resized(pixels, side, side)
    pixels = _without_ground(pixels)
    rows, columns = np.nonzero(pixels > 0.1 * pixels.max()) if pixels.max() > 0 else ((), ())
    if len(rows) == 0:
        return np.zeros((side, side))
    ink = pixels[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
    box = max(1, round(side * 20 / 28)) if prepare == "mnist" else side  # MNIST fits each digit in 20x20 of 28x28
    scale = box / max(ink.shape)
    fitted = _resized(ink, max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale)))
    canvas = np.zeros((side, side))
    total = fitted.sum()
    centre = (np.array(fitted.shape) - 1) / 2 if total == 0 or prepare != "mnist" else np.array(
        [(fitted.sum(axis=1) * np.arange(fitted.shape[0])).sum(), (fitted.sum(axis=0) * np.arange(fitted.shape[1])).sum()]
    ) / total
    top, left = (np.round((side - 1) / 2 - centre)).astype(int)
    top = min(max(top, 0), side - fitted.shape[0])
    left = min(max(left, 0), side - fitted.shape[1])
    canvas[top : top + fitted.shape[0], left : left + fitted.shape[1]] = fitted
    return canvas


def _without_ground(pixels: np.ndarray) -> np.ndarray:
    """Light-on-dark ``pixels`` with the ground taken off: the border's median level plus its noise (1.5 times
    the border's largest deviation, so the interior's rarer extremes stay under it too) becomes 0, the
    brightest pixel 1. A photo's light-grey or noisy paper, once inverted, is a dark grey the datasets' black
    grounds never have; left in, the net sees a grey blur and the crop takes the whole frame."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    ground = float(np.median(border))
    floor = ground + 1.5 * float(np.abs(border - ground).max())
    top = float(pixels.max())
    if top <= floor:
        return np.zeros_like(pixels)
    return np.clip((pixels - floor) / (top - floor), 0.0, 1.0)


def _resized(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """``pixels`` resampled to ``height`` x ``width`` (Lanczos), values kept in ``[0, 1]``."""
    from PIL import Image

    image = Image.fromarray(pixels.astype(np.float32), mode="F").resize((width, height), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _search_dirs(name: str) -> list[Path]:
    """Where dataset ``name`` is looked for when no folder is given: ``$XBACKPROP_DATA/<name>/``, then the
    system folder (Debian's ``/usr/share/datasets/fashion-mnist``)."""
    folders = [Path(os.environ[DATA_ENV]) / name] if os.environ.get(DATA_ENV) else []
    if name in SYSTEM_DIRS:
        folders.append(SYSTEM_DIRS[name])
    return folders


def _first_holding(folders: Sequence[Path], stems: Sequence[str]) -> Path | None:
    """The first of ``folders`` that holds every one of ``stems`` (plain or ``.gz``)."""
    for folder in folders:
        if all(_find_file(folder, stem) for stem in stems):
            return folder
    return None


def dataset_files(name: str, data_dir: str | os.PathLike[str] | None = None,
                  cache_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every file :func:`load_dataset` may read for ``name`` (or write, downloading): the four IDX files, plain
    and ``.gz``, in ``data_dir``, else in every folder it searches and in the cache. An output planned against
    these can never overwrite a dataset, wherever that was found. None for the digits (scikit-learn's)."""
    if name == "digits" and data_dir is None:
        return []
    if data_dir is not None:
        folders = [Path(data_dir)]
    else:
        folders = [*_search_dirs(name), Path(cache_dir) if cache_dir is not None else default_cache_dir() / name]
    return [folder / f"{stem}{suffix}" for folder in folders for stem in _stems() for suffix in ("", ".gz")]


def find_dataset_dir(name: str, data_dir: str | os.PathLike[str] | None = None, split: str = "test") -> Path | None:
    """The first folder holding ``split``'s two IDX files of dataset ``name``, or ``None``.

    Order: ``data_dir`` itself, then :func:`load_dataset`'s search order (``$XBACKPROP_DATA/<name>/``,
    the system folder); the download cache is not searched.
    """
    explicit = [] if data_dir is None else [Path(data_dir)]
    return _first_holding(explicit + _search_dirs(name), IDX_FILES[split])


def identify_dataset(folder: str | os.PathLike[str]) -> str | None:
    """Which known dataset an IDX folder holds (``"mnist"``, ``"fashion-mnist"``), or ``None`` for data xbackprop
    does not know.

    Decided by the SHA-256 of all four files (compressed or not), so a folder named anything is
    recognised and an unknown one is not mistaken for MNIST. A folder whose files are not one known
    dataset's, each in its place (Fashion-MNIST's training images among MNIST's files, train and test
    swapped, one known file beside unknown ones), or that holds a plain file and a different ``.gz`` of
    the same name, is a :class:`DataError` saying which files.
    """
    folder = Path(folder)
    known: dict[str, tuple[str, str] | None] = {}
    for stem in _stems():
        paths = [path for path in (folder / stem, folder / f"{stem}.gz") if path.is_file()]
        if len(paths) == 2 and not _same_data(*paths):
            raise DataError(f"{folder}: {stem} and {stem}.gz hold different data; keep the one you mean")
        if paths:
            known[stem] = _known_as(paths[0])
    recognised = {stem: kind for stem, kind in known.items() if kind is not None}
    if not recognised:
        return None
    names = {name for name, _ in recognised.values()}
    wrong = [f"{stem} is {name}'s {held}" for stem, (name, held) in recognised.items() if held != stem]
    wrong += [f"{stem} is none of {'/'.join(sorted(names))}'s" for stem, kind in known.items() if kind is None]
    if len(names) > 1:
        wrong = [f"{stem} is {name}'s" for stem, (name, _) in recognised.items()] + wrong
    if wrong:
        raise DataError(f"{folder}: its IDX files are not one dataset's, each in its place: {'; '.join(wrong)}")
    return names.pop()


_RECOGNISED: dict[tuple[str, int, int], tuple[str, str] | None] = {}


def _known_as(path: Path) -> tuple[str, str] | None:
    """``(dataset, stem)`` whose published SHA-256 the file matches, or ``None`` (remembered per file state)."""
    state = path.stat()
    key = (str(path.resolve()), state.st_size, state.st_mtime_ns)
    if key not in _RECOGNISED:
        try:
            digests = _digests(path)
        except OSError:
            digests = set()
        _RECOGNISED[key] = next(((name, stem) for name, files in CHECKSUMS.items() for stem, sums in files.items()
                                 if digests & set(sums.values())), None)
    return _RECOGNISED[key]


def _same_data(plain: Path, compressed: Path) -> bool:
    """Whether ``compressed`` decompresses to ``plain``'s bytes (by SHA-256)."""
    try:
        return bool(_digests(plain) & _digests(compressed))
    except OSError:
        return False


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


def _stems(split: str | None = None) -> tuple[str, ...]:
    splits = IDX_FILES.values() if split is None else (IDX_FILES[split],)
    return tuple(stem for pair in splits for stem in pair)


def default_cache_dir() -> Path:
    """``$XBACKPROP_CACHE``, else the platform's user cache folder for xbackprop."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    import pooch

    return Path(pooch.os_cache("xbackprop"))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digests(path: Path, max_idx_bytes: int = MAX_IDX_BYTES) -> set[str]:
    """SHA-256 of the file's bytes and, for gzip data, of its decompressed bytes (streamed, capped)."""
    whole, raw = hashlib.sha256(), hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            whole.update(block)
    digests = {whole.hexdigest()}
    try:
        with gzip.open(path, "rb") as f:
            size = 0
            for block in iter(lambda: f.read(1 << 20), b""):
                size += len(block)
                if size > max_idx_bytes:
                    raise DataError(f"{path.name}: decompresses to more than {max_idx_bytes:,} bytes")
                raw.update(block)
        digests.add(raw.hexdigest())
    except (OSError, EOFError, zlib.error):
        pass  # not gzip data: only the file's own digest can match
    return digests


def _verify(path: Path, expected: dict[str, str], max_idx_bytes: int = MAX_IDX_BYTES) -> None:
    """Raise DataError unless the file's compressed or decompressed bytes match a known SHA-256."""
    try:
        digests = _digests(path, max_idx_bytes)
    except OSError as exc:
        raise DataError(f"{path.name}: cannot read ({exc})") from None
    if not digests & set(expected.values()):
        raise DataError(f"{path.name}: SHA-256 does not match the published data")


class _CappedWriter:
    """A file that refuses to grow past ``limit`` bytes or to keep being written after ``deadline`` seconds
    (a mirror that sends forever, or a byte at a time just inside every read timeout, is cut off)."""

    def __init__(self, file: Any, limit: int, deadline: float, progress: Any = None) -> None:
        self.file, self.limit, self.written, self.progress = file, limit, 0, progress
        self.deadline, self.ends = deadline, time.monotonic() + deadline

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if self.written > self.limit:
            raise DataError(f"sent more than {self.limit:,} bytes")
        if time.monotonic() > self.ends:
            raise DataError(f"took more than {self.deadline:g} s ({self.written:,} bytes so far)")
        if self.progress is not None:
            self.progress.update(len(data))
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


class _CappedDownloader:
    """A pooch downloader: an HTTP GET whose body goes through a :class:`_CappedWriter`, and whose connection
    is shut when the deadline passes or the transfer stalls, under ``min_rate`` bytes a second over the last
    ``stall_after`` seconds (a mirror that trickles a byte just inside every read timeout never lets a blocked
    read return on its own)."""

    CHUNK = 1 << 10  # small reads, so a slow but steady mirror shows its progress to the stall check

    def __init__(self, limit: int, deadline: float, *, progressbar: bool = False,
                 timeout: float | tuple[float, float] = 30.0, stall_after: float = STALL_SECONDS,
                 min_rate: float = STALL_RATE) -> None:
        self.limit, self.deadline, self.progressbar, self.timeout = limit, deadline, progressbar, timeout
        self.stall_after, self.min_rate = stall_after, min_rate

    def __call__(self, url: str, output_file: str, pooch_obj: Any, check_only: bool = False) -> Any:
        import requests

        with requests.get(url, stream=True, timeout=self.timeout) as response:
            response.raise_for_status()
            if check_only:
                return True
            why: list[str] = []  # the watchdog's reason for shutting the connection
            done = threading.Event()
            bar = None
            if self.progressbar:
                from tqdm.auto import tqdm

                total = int(response.headers.get("Content-Length", 0)) or None
                bar = tqdm(total=total, unit="B", unit_scale=True, leave=False, dynamic_ncols=True)
            with open(output_file, "wb") as f:
                writer = _CappedWriter(f, self.limit, self.deadline, bar)
                watchdog = threading.Thread(target=self._watch, args=(response, writer, done, why), daemon=True)
                watchdog.start()
                try:
                    for chunk in response.iter_content(chunk_size=self.CHUNK):
                        writer.write(chunk)
                except Exception:
                    if why:
                        raise DataError(why[0]) from None
                    raise
                finally:
                    done.set()
                    if bar is not None:
                        bar.close()
            if why:  # the shut connection may also read as a short, clean end
                raise DataError(why[0])
        return None

    def _watch(self, response: Any, writer: _CappedWriter, done: threading.Event, why: list[str]) -> None:
        """Shut the connection at the deadline, or when the last ``stall_after`` seconds brought too little."""
        started = time.monotonic()
        samples = [(started, 0)]
        while not done.wait(min(1.0, self.stall_after / 4)):
            now = time.monotonic()
            samples.append((now, writer.written))
            while len(samples) > 1 and samples[1][0] <= now - self.stall_after:
                samples.pop(0)
            if now - started > self.deadline:
                why.append(f"took more than {self.deadline:g} s ({writer.written:,} bytes so far)")
            elif now - samples[0][0] >= self.stall_after and \
                    writer.written - samples[0][1] < self.min_rate * self.stall_after:
                why.append(f"stalled: under {self.min_rate / 1024:g} kB/s for {self.stall_after:g} s "
                           f"({writer.written:,} bytes so far)")
            if why:
                try:  # the socket under http.client's response: neither requests nor urllib3 exposes it mid-read
                    response.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)
                except (AttributeError, OSError):
                    response.close()
                return


def _remove_stale_staging(folder: Path, older_than_s: float = 3600.0) -> None:
    """Delete staging folders that a killed download left behind (an hour old: no download runs that long)."""
    import shutil

    for staging in folder.glob(".staging-*"):
        try:
            if time.time() - staging.stat().st_mtime > older_than_s:
                shutil.rmtree(staging, ignore_errors=True)
        except OSError:
            continue


def _reason(exc: Exception) -> str:
    """A few words on why a download failed."""
    import requests

    if isinstance(exc, DataError):
        return str(exc)
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection broken mid-transfer"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        if "Read timed out" in text:
            return "stalled mid-transfer (read timed out)"
        return "host not found" if ("NameResolution" in text or "resolve" in text) else "cannot connect"
    return f"{type(exc).__name__}: {exc}"[:120]


def download_idx(
    folder: str | os.PathLike[str],
    files: dict[str, dict[str, str]],
    mirrors: Sequence[str],
    *,
    timeout: float | tuple[float, float] = 30.0,
    progressbar: bool = True,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    max_idx_bytes: int = MAX_IDX_BYTES,
    deadline: float = DOWNLOAD_DEADLINE,
    stall_after: float = STALL_SECONDS,
) -> None:
    """Download ``{stem: checksums}`` as ``stem.gz`` into ``folder``, trying each mirror in turn.

    Each file is fetched (with ``pooch``) into a staging folder beside ``folder``,
    verified, then atomically renamed into place; failures leave nothing behind.
    ``timeout`` bounds the connection and every read, in seconds (or a
    ``(connect, read)`` pair), and ``deadline`` the whole file: a mirror still sending
    after it gives up within ``deadline`` plus one read timeout, and one that brings under 1 kB/s over
    ``stall_after`` seconds gives up then. A mirror that sends more
    than ``max_bytes``, or a file that decompresses to more than ``max_idx_bytes``, is
    cut off. Raises
    :class:`DataUnavailableError` naming every mirror's failure when a file
    cannot be had.
    """
    import pooch

    pooch.get_logger().setLevel(logging.WARNING)
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-")
        probe.close()
    except OSError as exc:
        raise DataUnavailableError(f"cache folder {folder} is not writable ({exc.strerror or exc})") from None
    _remove_stale_staging(folder)
    for stem, expected in files.items():
        target = folder / f"{stem}.gz"
        if target.is_file():
            continue
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{stem}.gz"
            with tempfile.TemporaryDirectory(dir=folder, prefix=".staging-") as staging:
                try:
                    downloader = _CappedDownloader(max_bytes, deadline, progressbar=progressbar, timeout=timeout,
                                                   stall_after=stall_after)
                    fetched = Path(pooch.retrieve(url, None, fname=target.name, path=staging, downloader=downloader))
                    _verify(fetched, expected, max_idx_bytes)
                except Exception as exc:
                    failures.append(f"{urlsplit(url).netloc}: {_reason(exc)}")
                    continue
                os.replace(fetched, target)
                break
        else:
            raise DataUnavailableError(f"download of {stem}.gz failed ({'; '.join(failures)})")


def _mirrors(name: str) -> Sequence[str]:
    """``$XBACKPROP_MIRRORS`` when set, else the dataset's published mirrors."""
    chosen = os.environ.get(MIRRORS_ENV, "").split()
    return chosen or MIRRORS[name]


def _with_classes(dataset: Dataset, classes: int | None) -> Dataset:
    if classes is None:
        return dataset
    dataset = dataclasses.replace(dataset, classes=classes)
    dataset.check_labels()
    return dataset


def _load_idx_dataset(name: str, folder: Path, source: str, classes: int | None = None) -> Dataset:
    x_train, t_train = load_split(folder, "train")
    x_test, t_test = load_split(folder, "test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{folder}: training images are {x_train.shape[1]}x{x_train.shape[2]}, "
                        f"test images {x_test.shape[1]}x{x_test.shape[2]}")
    declared = DECLARED_CLASSES.get(name) if classes is None else classes
    dataset = Dataset(name, x_train, t_train, x_test, t_test, 255, source, declared)
    dataset.check_labels()
    return dataset


def _load_digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataUnavailableError("the digits dataset needs scikit-learn (pip install scikit-learn)") from None
    digits = load_digits()
    images = digits.images.astype(np.uint8)  # 8x8 values in [0, 16]
    labels = digits.target.astype(np.uint8)
    order = host_rng(0).permutation(len(labels))  # a fixed split, the same everywhere
    n_test = len(labels) // 5
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", images[train], labels[train], images[test], labels[test], 16, "scikit-learn", 10)


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
    if name == "digits":
        return _with_classes(_load_digits(), classes)
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
