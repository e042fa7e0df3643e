"""python -m xbackprop.predict: classify images with a saved network.

    python -m xbackprop.predict --load model.npz digit.png shoe.jpg
    python -m xbackprop.predict --load model.npz t10k-images-idx3-ubyte.gz --limit 5
    python -m xbackprop.predict --load model.npz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz --limit 0

Prints each image's top classes with their probabilities. PNG and JPEG files need
Pillow (``pip install 'xbackprop[images]'``): they are turned to grey, scaled to the
network's input size and, when their background is light, inverted, since MNIST
draws light strokes on black. An IDX file contributes every image it holds; an IDX
labels file right after it scores them (accuracy, per class, confusion matrix; ``--report
DIR`` draws them).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from .backend import BACKENDS, get_namespace, to_numpy
from .cli import Parser, UsageError, non_negative_int, one_line, positive_int, run_command
from .datasets import (
    CATALOG,
    CLASS_NAMES,
    INVERT_CHOICES,
    PREPARE_CHOICES,
    check_idx_size,
    idx_shape,
    read_idx,
    read_images,
    save_grey_png,
)
from .files import plan_outputs
from .functions import checked_labels, softmax
from .nets import load_net
from .show.evaluation import scores_text
from .show.report_folder import report_paths, write_report

PROG = "python -m xbackprop.predict"

def describe(probabilities: list[float], top: int, names: tuple[str, ...] | None) -> str:
    """``"7 (98.2%), 9 (1.1%), ..."``: the ``top`` most probable classes."""
    order = sorted(range(len(probabilities)), key=lambda k: -probabilities[k])[:top]
    return ", ".join(f"{names[k] if names else k} ({probabilities[k]:.1%})" for k in order)


#: What ``--help`` ends with.
HELP_EXAMPLES = (
    "python -m xbackprop.predict --load model.npz shoe.png digit.jpg",
    "python -m xbackprop.predict --load model.npz t10k-images-idx3-ubyte.gz --limit 5",
    "python -m xbackprop.predict --load model.npz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz --limit 0 "
    "--report report",
)


#: How the pictures of each dataset were made, so a photo can be made the same way.


def main(argv: list[str] | None = None) -> int:
    """The command; every ending is one line and an exit status (see :mod:`xbackprop.cli`)."""
    return run_command(_predict, PROG, argv)


def _parser() -> Parser:
    parser = Parser(PROG, "Classify images with a network saved by python -m xbackprop.train --save: top classes "
                    "and their probabilities.", HELP_EXAMPLES)
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="PNG or JPEG images, or IDX image files (each may be followed by its IDX labels file)")
    parser.add_argument("--load", required=True, metavar="PATH", help="the saved network (.npz)")
    parser.add_argument("--top", type=positive_int, default=3, help="classes shown per image (default 3)")
    parser.add_argument("--invert", choices=INVERT_CHOICES, default="auto",
                        help="turn dark strokes on light into light on dark (default: when the border is light)")
    parser.add_argument("--limit", type=non_negative_int, default=20,
                        help="images printed at most (default 20; 0: all)")
    parser.add_argument("--prepare", choices=("auto", *PREPARE_CHOICES), default="auto",
                        help="photos and drawings: crop, fit in 20x20 and centre as MNIST's digits, crop and fit "
                        "the frame as Fashion-MNIST's pictures, or only scale (default: the model's dataset's "
                        "way; none for others)")
    parser.add_argument("--show", metavar="FILE.png",
                        help="draw the first image as the net sees it (its input, enlarged) into FILE.png")
    parser.add_argument("--each", action="store_true",
                        help="with labels: print each image's classes too (without labels they are the output)")
    parser.add_argument("--report", metavar="DIR",
                        help="with labels: write the confusion matrix, the most confident mistakes and summary.md "
                        "into DIR (needs matplotlib)")
    parser.add_argument("--backend", choices=BACKENDS, help="array backend (default: $XP or numpy)")
    return parser


def _predict(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    image_files, label_files = _pair_labels(args.files)
    report = _planned_outputs(args, label_files)
    xp = get_namespace(args.backend)
    net, saved = load_net(args.load, xp=xp, dtype="float32")
    side = math.isqrt(net.sizes[0])
    if side * side != net.sizes[0]:
        raise UsageError(f"{args.load}: the network takes {net.sizes[0]} inputs, not a square image")
    limit = args.limit or None  # --limit 0: every image
    record = CATALOG.get(saved.dataset or "")
    prepare = args.prepare if args.prepare != "auto" else (record.prepare if record is not None else "none")
    read = [read_images(Path(name), side, invert=args.invert, limit=limit, dtype="float32", prepare=prepare)
            for name in image_files]
    truth = {name: _read_labels(label_files[name], len(pixels), net.sizes[-1])
             for name, (_, pixels) in zip(image_files, read) if name in label_files}
    if args.show is not None:
        save_grey_png(read[0][1][0].reshape(side, side), args.show)
        print(one_line(f"wrote {args.show}: {read[0][0][0]} as the net sees it"), file=sys.stderr)
    names = CLASS_NAMES.get(saved.dataset or "")
    if names is not None and len(names) != net.sizes[-1]:
        names = None
    _print_scores(args, net, xp, image_files, read, truth, names)
    if args.report is not None:
        scored = [(pixels, truth[name]) for name, (_, pixels) in zip(image_files, read) if name in truth]
        x = xp.concat([xp.asarray(pixels[: len(labels)], dtype=xp.float32) for pixels, labels in scored])
        t = xp.asarray([label for _, labels in scored for label in labels])
        evaluation = write_report(args.report, net, x, t, names=names, paths=report,
                                  title=f"{args.load} ({saved.dataset or 'unknown data'})",
                                  source=", ".join(Path(name).name for name in truth))
        print(one_line(f"wrote {Path(args.report) / 'summary.md'}: accuracy {evaluation.accuracy:.4f}"),
              file=sys.stderr)
    return 0


def _planned_outputs(args: Any, label_files: dict[str, str]) -> Any:
    """``--show`` and ``--report`` planned against each other and every input before any work; the report's
    paths (``None`` without ``--report``)."""
    inputs = [("FILE", name) for name in args.files] + [("--load", args.load)]
    if args.show is not None:
        if Path(args.show).suffix.lower() != ".png":
            raise UsageError(f"--show {args.show}: give a .png file name")
        plan_outputs({"--show": args.show}, inputs)
    if args.report is None:
        return None
    if not label_files:
        raise UsageError("--report needs labels: give an IDX labels file right after its images file")
    try:
        shown = [("--show", args.show)] if args.show is not None else []
        return report_paths(args.report, curves=False, inputs=inputs + shown)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _print_scores(args: Any, net: Any, xp: Any, image_files: list[str], read: list[Any], truth: dict[str, Any],
                  names: Any) -> None:
    """Each image's top classes (without labels, or with ``--each``), and each labelled file's scores."""
    total = sum(idx_shape(name, ndim=3)[0] if "idx" in Path(name).name else 1 for name in image_files)
    left = total if args.limit == 0 else args.limit
    listed = False  # whether any image's own lines were printed
    for name, (labels, pixels) in zip(image_files, read):
        if left <= 0:
            break
        shown = min(left, len(labels))
        probabilities = to_numpy(softmax(net.predict(xp.asarray(pixels[:shown], dtype=xp.float32))))
        if args.each or name not in truth:  # with labels the scores are the output; each image on request
            listed = True
            for label, row in zip(labels, probabilities.tolist()):
                print(f"{label}: {describe(row, min(args.top, len(row)), names)}")
        if name in truth:
            print(scores_text(truth[name][:shown], probabilities.argmax(axis=1).tolist(), net.sizes[-1], names,
                              Path(name).name))
        left -= shown
    printed = total if args.limit == 0 else min(args.limit, total)
    if printed < total:
        print(f"... {total - printed} more (--limit 0 {'prints' if listed else 'scores'} all)")


def _pair_labels(files: list[str]) -> tuple[list[str], dict[str, str]]:
    """The image files, and for each IDX image file the IDX labels file given right after it (one dimension)."""
    images: list[str] = []
    labels: dict[str, str] = {}
    seen: set[Path] = set()
    for name in files:
        if Path(name).resolve() in seen:
            raise UsageError(f"{name}: given twice; each file is read once")
        seen.add(Path(name).resolve())
        if "idx" in Path(name).name and Path(name).is_file():
            check_idx_size(name)  # the counts printed and scored below come from the headers
        if "idx" in Path(name).name and Path(name).is_file() and len(idx_shape(name)) == 1:
            if not images or "idx" not in Path(images[-1]).name or images[-1] in labels:
                raise UsageError(f"{name}: a labels file must follow the IDX images file it labels")
            count, images_count = idx_shape(name)[0], idx_shape(images[-1], ndim=3)[0]
            if count != images_count:  # the training labels after the test images would score every image wrong
                raise UsageError(f"{name}: {count:,} labels for {images_count:,} images in {images[-1]}: a labels "
                                 "file must be its images' own")
            labels[images[-1]] = name
        else:
            images.append(name)
    return images, labels


def _read_labels(path: str, count: int, classes: int) -> list[int]:
    """The first ``count`` labels of an IDX labels file, checked against the net's ``classes``."""
    labels = read_idx(path, ndim=1, first=count)
    if len(labels) < count:
        raise UsageError(f"{path}: {len(labels)} labels for {count} images")
    try:
        return [int(label) for label in checked_labels(labels[:count], count, classes, who=path).tolist()]
    except ValueError as exc:
        raise UsageError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
