"""Images for predict: IDX image files and photos, prepared to look like a dataset's images."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..files import replace_atomically
from .dataset import DataError
from .idx import read_idx

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
