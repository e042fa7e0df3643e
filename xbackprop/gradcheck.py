"""python -m xbackprop.gradcheck: the book's gradient check of a 784-50-10 TwoLayerNet.

Prints the book's per-parameter mean |backprop - numerical| and a verdict: PASS
(exit 0) when backprop agrees with the central difference in every element, FAIL
(exit 1) naming the first element that does not. Elements whose central difference
straddles ReLU's kink are checked again from one side and reported apart. Uses the first 3 MNIST
test images when they can be found (``--data-dir`` or ``$XBACKPROP_DATA/mnist``),
otherwise 3 synthetic images, and says which.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .backend import BACKENDS, backend_name, enable_float64, get_namespace, host_rng, thread_limit
from .cli import Parser, UsageError, command_threads, non_negative_int, positive_int, run_command
from .datasets import find_dataset_dir, identify_dataset, load_split
from .gradient import CENTRAL_DIFFERENCE_STEP
from .gradient_check import gradient_check
from .hooks import reporting
from .two_layer_net import TwoLayerNet

#: The most synthetic images a check makes (MNIST's test split holds 10,000).
MAX_SYNTHETIC = 10_000


PROG = "python -m xbackprop.gradcheck"
#: What ``--help`` ends with.
HELP_EXAMPLES = (
    "python -m xbackprop.gradcheck                          # the first 3 MNIST test images, as the book",
    "python -m xbackprop.gradcheck --batch 100 --seed 5     # more images, other weights",
    "python -m xbackprop.gradcheck --backend torch",
)


def main(argv: list[str] | None = None) -> int:
    """The command; every ending is one line and an exit status (see :mod:`xbackprop.cli`)."""
    return run_command(_gradcheck, PROG, argv)


def _gradcheck(argv: list[str] | None) -> int:
    parser = Parser(PROG, "The book's gradient check of a 784-50-10 TwoLayerNet: backprop against central "
                    "differences, in float64, PASS when every element agrees (elements across ReLU's kink are "
                    "checked from one side).", HELP_EXAMPLES)
    parser.add_argument("--backend", choices=BACKENDS, help="array backend (default: $XP or numpy)")
    parser.add_argument("--data-dir", help="folder with the MNIST IDX files")
    parser.add_argument("--batch", type=positive_int, default=3, help="number of images (default 3, as in the book)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the weights (default 0)")
    parser.add_argument("--threads", type=non_negative_int, metavar="N",
                        help="threads of the CPU libraries; default 1 unless OMP_NUM_THREADS or the like is set; "
                        "0: the libraries' own")
    args = parser.parse_args(argv)

    xp = get_namespace(args.backend)
    enable_float64(xp)  # the check computes in float64: on JAX this command turns its switch on
    if args.data_dir is not None and find_dataset_dir("mnist", args.data_dir, split="test") != Path(args.data_dir):
        raise UsageError(f"--data-dir {args.data_dir}: no MNIST test files (t10k-images-idx3-ubyte, "
                         "t10k-labels-idx1-ubyte, .gz or not) in that folder")
    if args.data_dir is not None and (held := identify_dataset(args.data_dir)) not in (None, "mnist"):
        raise UsageError(f"--data-dir {args.data_dir}: holds {held}, not MNIST: the book's check runs on MNIST")
    folder = find_dataset_dir("mnist", args.data_dir, split="test")
    if folder is not None:
        images, labels = load_split(folder, "test")
        if args.batch > len(images):
            raise UsageError(f"--batch {args.batch}: {folder} holds {len(images)} test images")
        images, labels = images[: args.batch], labels[: args.batch]
        source = f"the first {args.batch} MNIST test images from {folder}"
    else:
        if args.batch > MAX_SYNTHETIC:
            raise UsageError(f"--batch {args.batch}: at most {MAX_SYNTHETIC} synthetic images")
        rng = host_rng(args.seed)
        images = rng.integers(0, 256, size=(args.batch, 28, 28), dtype="uint8")
        labels = rng.integers(0, 10, size=args.batch, dtype="uint8")
        source = f"{args.batch} synthetic 28x28 images (MNIST not found: set XBACKPROP_DATA or --data-dir)"

    x = xp.asarray(images.reshape(len(images), -1) / 255.0, dtype=xp.float64)
    t = xp.asarray(labels)
    net = TwoLayerNet(784, 50, 10, xp=xp, dtype="float64", seed=args.seed)
    print(f"gradient check of TwoLayerNet(784, 50, 10) on {backend_name(xp)}, float64, with {source}",
          flush=True)
    with _progress_bar(sum(math.prod(value.shape) for value in net.params.values())) as bar, reporting(bar), \
            thread_limit(command_threads(args.threads)):
        result = gradient_check(net, x, t)
    if result.kinks:
        print(f"{len(result.kinks)} element(s) straddled ReLU's kink at h = {CENTRAL_DIFFERENCE_STEP:g} (a hidden "
              "pre-activation changed sign between x - h and x + h, where the central difference is not a "
              "derivative) and were checked again with a step on one side")
    if result.passed:
        print("PASS: backprop agrees with the numerical gradient in every element")
        return 0
    first = result.disagreements[0]
    print(f"FAIL: {len(result.disagreements)} element(s) disagree, first {first}")
    return 1


@contextmanager
def _progress_bar(elements: int) -> Iterator[Any]:
    """A bar with an estimate over the numerical gradient's elements, on a terminal only (else ``None``)."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=elements, desc="numerical gradient", unit="element", leave=False, dynamic_ncols=True) as bar:
        yield bar


if __name__ == "__main__":
    sys.exit(main())
