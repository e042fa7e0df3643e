"""``python -m xbackprop.gradcheck``: the book's gradient check of a 784-50-10 TwoLayerNet.

Exits 0 when every mean |backprop - numerical| is at most 1e-6. Uses the first 3 MNIST test images when they can be found (``--data-dir`` or
``$XBACKPROP_DATA/mnist``), otherwise 3 synthetic images, and says which.
"""

from __future__ import annotations

import argparse
import sys

from .backend import BACKENDS, BackendUnavailableError, backend_name, from_host, get_namespace, host_rng
from .datasets import find_dataset_dir, load_split
from .gradient import gradient_check
from .nets import TwoLayerNet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xbackprop.gradcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, help="array backend (default: $XP or numpy)")
    parser.add_argument("--data-dir", help="folder with the MNIST IDX files")
    parser.add_argument("--batch", type=int, default=3, help="number of images (default 3, as in the book)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be at least 1")

    try:
        xp = get_namespace(args.backend)
        folder = find_dataset_dir("mnist", args.data_dir, split="test")
        if folder is not None:
            images, labels = load_split(folder, "test")
            images, labels = images[: args.batch], labels[: args.batch]
            source = f"the first {args.batch} MNIST test images from {folder}"
        else:
            rng = host_rng(args.seed)
            images = rng.integers(0, 256, size=(args.batch, 28, 28), dtype="uint8")
            labels = rng.integers(0, 10, size=args.batch, dtype="uint8")
            source = f"{args.batch} synthetic 28x28 images (MNIST not found: set XBACKPROP_DATA or --data-dir)"
    except (ValueError, BackendUnavailableError) as exc:  # DataError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2

    x = from_host(images.reshape(len(images), -1) / 255.0, xp, dtype=xp.float64)
    t = from_host(labels, xp)
    net = TwoLayerNet(784, 50, 10, xp=xp, dtype="float64", seed=args.seed)
    print(f"gradient check of TwoLayerNet(784, 50, 10) on {backend_name(xp)}, float64, with {source}")
    result = gradient_check(net, x, t)
    # The book's criterion; a ReLU kink within h of a pre-activation can spoil one element's relative error.
    return 0 if max(result.mean_abs_diff.values()) <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
