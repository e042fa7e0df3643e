"""python -m xbackprop.predict: classify images with a saved network.

    python -m xbackprop.predict --load model.npz digit.png shoe.jpg
    python -m xbackprop.predict --load model.npz t10k-images-idx3-ubyte.gz --limit 5

Prints each image's top classes with their probabilities. PNG and JPEG files need
Pillow (``pip install 'xbackprop[images]'``): they are turned to grey, scaled to the
network's input size and, when their background is light, inverted, since MNIST
draws light strokes on black. An IDX file contributes every image it holds.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from .backend import BACKENDS, BackendUnavailableError, from_host, get_namespace, to_numpy
from .datasets import DataError, read_idx
from .functions import softmax
from .io import load_net

PROG = "python -m xbackprop.predict"

#: Names of the classes of the datasets whose labels are not their own names.
CLASS_NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
}


class InputError(Exception):
    """An input file that cannot be read as images; the message names it."""


def read_images(path: Path, side: int, invert: str) -> list[tuple[str, np.ndarray]]:
    """``[(label, pixels)]``: float64 rows of ``side * side`` values in ``[0, 1]``, light strokes on dark."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if "idx" in path.name:
        try:
            images = read_idx(path, ndim=3)
        except DataError as exc:
            raise InputError(str(exc)) from None
        if images.shape[1] * images.shape[2] != side * side:
            raise InputError(f"{path}: images of {images.shape[1]}x{images.shape[2]}, the network takes {side}x{side}")
        scale = 255.0 if images.dtype == np.uint8 else max(float(images.max()), 1.0)
        return [(f"{path.name}[{i}]", image.reshape(-1) / scale) for i, image in enumerate(images)]
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise InputError(f"{path}: reading PNG or JPEG needs Pillow: pip install 'xbackprop[images]'") from None
    try:
        with Image.open(path) as opened:
            grey = opened.convert("L").resize((side, side), Image.Resampling.LANCZOS)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not an image Pillow can read ({exc})") from None
    pixels = np.asarray(grey, dtype=np.float64) / 255.0
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if invert == "yes" or (invert == "auto" and border.mean() > 0.5):
        pixels = 1.0 - pixels
    return [(str(path), pixels.reshape(-1))]


def describe(probabilities: np.ndarray, top: int, names: tuple[str, ...] | None) -> str:
    """``"7 (98.2%), 9 (1.1%), ..."``: the ``top`` most probable classes."""
    order = np.argsort(-probabilities, kind="stable")[:top]
    return ", ".join(f"{names[k] if names else k} ({probabilities[k]:.1%})" for k in order)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Classify images with a network saved by "
                                     "python -m xbackprop.train --save: top classes and their probabilities.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="PNG or JPEG images, or IDX image files")
    parser.add_argument("--load", required=True, metavar="PATH", help="the saved network (.npz)")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image (default 3)")
    parser.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                        help="turn dark strokes on light into light on dark (default: when the border is light)")
    parser.add_argument("--limit", type=int, default=20, help="images printed at most (default 20; 0: all)")
    parser.add_argument("--backend", choices=BACKENDS, help="array backend (default: $XP or numpy)")
    args = parser.parse_args(argv)

    try:
        if args.top < 1 or args.limit < 0:
            raise InputError("--top must be at least 1 and --limit not negative")
        xp = get_namespace(args.backend)
        net, saved = load_net(args.load, xp=xp, dtype="float32")
        side = math.isqrt(net.sizes[0])
        if side * side != net.sizes[0]:
            raise InputError(f"{args.load}: the network takes {net.sizes[0]} inputs, not a square image")
        images = [item for name in args.files for item in read_images(Path(name), side, args.invert)]
    except (InputError, ValueError, BackendUnavailableError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2

    names = CLASS_NAMES.get(saved.dataset or "")
    if names is not None and len(names) != net.sizes[-1]:
        names = None
    shown = images if args.limit == 0 else images[: args.limit]
    x = from_host(np.stack([pixels for _, pixels in shown]), xp, dtype=xp.float32)
    probabilities = to_numpy(softmax(net.predict(x)))
    for (label, _), row in zip(shown, probabilities):
        print(f"{label}: {describe(row, min(args.top, len(row)), names)}")
    if len(shown) < len(images):
        print(f"... {len(images) - len(shown)} more (--limit 0 prints all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
