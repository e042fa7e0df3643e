"""python -m xbackprop.train: the book's chapter 5 MNIST training on any backend.

Defaults reproduce the book: a 784-50-10 TwoLayerNet, SGD with lr 0.1, batch 100,
10,000 iterations, train and test accuracy after every epoch. ``XP=cupy`` (or
``--backend cupy``) runs on a GPU and falls back to NumPy where CuPy cannot run.
``--course-exercise`` runs the course exercise built on the chapter (784-40-10,
1,000 iterations, accuracies every 10, one run per learning rate 0.01, 0.1, 1, 10).
User mistakes end with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import __version__
from .backend import (
    BACKENDS,
    BackendUnavailableError,
    backend_name,
    describe_device,
    enable_float64,
    get_namespace,
    resolve_device,
    resolve_dtype,
)
from .datasets import (
    DATASETS,
    DataError,
    Dataset,
    DataUnavailableError,
    default_cache_dir,
    identify_dataset,
    load_dataset,
)
from .distributed import DistributedSync, launched_by_mpi, launcher_rank, mpi_context, staging_of
from .io import load_params, read_saved, replace_atomically, save_params
from .nets import ACTIVATIONS, NAMED_INITS, MultiLayerNet
from .optimizers import OPTIMIZERS
from .trainer import (
    DIVERGENCE_POLICIES,
    GRADIENT_METHODS,
    TRAIN_ACCURACY_SOURCES,
    TrainResult,
    default_eval_interval,
    epochs_to_iters,
    to_device,
    train,
)

PROG = "python -m xbackprop.train"
BOOK_SGD_LR = 0.1  # chapter 5's learning rate; the other optimizers keep chapter 6's defaults
#: Above this many parameters a numerical gradient is slow enough to warn about (the digits net has 3,760).
NUMERICAL_WARN_P = 5_000
#: Lines of accuracies a run prints by default, at most (about); the history keeps every evaluation.
PRINTED_EVALUATIONS = 20

#: The course exercise: 784-40-10, SGD, 1,000 iterations, accuracies every 10 on the current
#: minibatch and the test set, one run per learning rate, diverging runs kept to the end.
COURSE_EXERCISE = {
    "hidden": [40],
    "iters": 1000,
    "batch_size": 100,
    "eval_interval": 10,
    "train_acc": "batch",
    "lr_sweep": [0.01, 0.1, 1.0, 10.0],
    "divergence": "continue",
}


class UsageError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(message)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _hidden_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of widths, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return sizes


def _weight_init(text: str) -> float | str:
    if text.lower() in NAMED_INITS:
        return text.lower()
    return _positive_float(text)


def _learning_rates(text: str) -> list[float]:
    return [_positive_float(part) for part in text.split(",")]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="The book's chapter 5 MNIST training on any backend, and the course exercise.")
    add = parser.add_argument
    add("--version", action="version", version=f"xbackprop {__version__}")
    add("--backend", choices=BACKENDS, help="array backend (overrides $XP; default numpy)")
    add("--device", help="device, e.g. cpu, cuda:0, gpu:0 (default: the backend's)")
    add("--dataset", choices=DATASETS, help="dataset (default mnist, falling back to digits when offline)")
    add("--data-dir", help="folder holding the four *-idx?-ubyte(.gz) files")
    add("--classes", type=_positive_int, metavar="C",
        help="number of classes of --data-dir's labels (default: 10 for MNIST and Fashion-MNIST, else from the labels)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--iters", type=_non_negative_int, help="minibatch steps (default 10000)")
    length.add_argument("--epochs", type=_positive_float, help="passes over the training set instead of --iters")
    add("--batch-size", type=_positive_int, default=100, help="minibatch size (default 100)")
    add("--eval-interval", type=_positive_int, metavar="N",
        help="evaluate accuracies every N iterations (default: every epoch, or about 20 times a run at most)")
    add("--train-acc", choices=TRAIN_ACCURACY_SOURCES, default="full",
        help="training accuracy over the full training set or the current minibatch (default full)")
    add("--divergence", choices=DIVERGENCE_POLICIES, default="stop",
        help="on a loss that is not finite or exceeds 10x the first: stop, or continue and mark it (default stop)")
    add("--course-exercise", action="store_true",
        help="the course exercise: " + ", ".join(f"--{k.replace('_', '-')} {_flag_text(v)}"
                                                  for k, v in COURSE_EXERCISE.items()) + " (each can be overridden)")
    add("--lr", type=_positive_float, help=f"learning rate (default {BOOK_SGD_LR} for sgd, the book's for others)")
    add("--hidden", type=_hidden_sizes, help="hidden widths, comma-separated (default 50, or --load's)")
    add("--activation", choices=tuple(ACTIVATIONS), help="hidden activation (default relu, or --load's)")
    add("--weight-init-std", type=_weight_init, default=0.01, help="a number, he or xavier (default 0.01)")
    add("--optimizer", choices=tuple(OPTIMIZERS), default="sgd")
    add("--dtype", choices=("float32", "float64"),
        help="float32 by default; float64 with a numerical --gradient (central differences need it)")
    add("--seed", type=_non_negative_int, default=0, help="seed of weights and minibatch draws (default 0)")
    add("--json", metavar="PATH", help="write the run's figures and history as JSON")
    add("--plot", metavar="PATH",
        help="write accuracy and loss curves, one column per run, as PNG, SVG or PDF (needs matplotlib)")
    add("--save", metavar="PATH", help="save the trained parameters (.npz)")
    add("--load", metavar="PATH",
        help="start from saved parameters (.npz); with --iters 0, evaluate a saved model")
    add("--lr-sweep", type=_learning_rates, metavar="LRS", help="train once per learning rate, e.g. 0.01,0.1,1,10")
    add("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    add("--gradient", choices=GRADIENT_METHODS, default="backprop",
        help="backprop, or central differences: the book's loop or batched (2P forward passes a step: small nets)")
    add("--no-compile", action="store_true",
        help="run every step eagerly, op by op (for debugging; JAX otherwise compiles blocks of steps)")
    add("--distributed", action="store_true",
        help="data-parallel over MPI ranks (automatic when mpiexec starts several); needs xbackprop[distributed]")
    return parser


def _flag_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as a namespace; ``--course-exercise`` supplies defaults that explicit flags override."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dtype is None:  # float32 central differences with h = 1e-4 are accurate to about 1e-3
        args.dtype = "float32" if args.gradient == "backprop" else "float64"
    if args.course_exercise:
        parser.set_defaults(**{k: v for k, v in COURSE_EXERCISE.items() if k != "lr_sweep"})
        dtype = args.dtype
        args = parser.parse_args(argv)
        args.dtype = args.dtype or dtype
        if args.lr is None and args.lr_sweep is None:  # an explicit --lr means one run
            args.lr_sweep = COURSE_EXERCISE["lr_sweep"]
    return args


def _dataset_name(args: argparse.Namespace) -> str:
    """``--dataset``, or what ``--data-dir`` holds; a mismatch between the two is refused."""
    if args.data_dir is None:
        return args.dataset or "mnist"
    found = identify_dataset(args.data_dir)
    if args.dataset is not None and found is not None and found != args.dataset:
        raise UsageError(f"--data-dir {args.data_dir} holds {found}, not {args.dataset}")
    return args.dataset or found or Path(args.data_dir).resolve().name


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse output paths that could not be written, before any training."""
    for flag in ("json", "plot", "save"):
        path = getattr(args, flag)
        if path is None:
            continue
        target = Path(path)
        if target.is_dir():
            raise UsageError(f"--{flag} {path}: is a folder; give a file name")
        if target.exists() and not target.is_file():
            raise UsageError(f"--{flag} {path}: exists and is not a regular file")
        if not target.parent.is_dir():
            raise UsageError(f"--{flag} {path}: folder {target.parent} does not exist")
        if not os.access(target.parent, os.W_OK | os.X_OK):
            raise UsageError(f"--{flag} {path}: folder {target.parent} is not writable")
    if args.plot:
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib: pip install 'xbackprop[plot]'")
        from matplotlib.backend_bases import FigureCanvasBase

        suffix = Path(args.plot).suffix.lstrip(".").lower()
        formats = FigureCanvasBase.get_supported_filetypes()
        if suffix not in formats:
            raise UsageError(f"--plot {args.plot}: unknown figure format {suffix!r}; use .png, .svg or .pdf")


def _check_size(sizes: list[int], args: argparse.Namespace, n_train: int) -> None:
    """Refuse a net or a batch that could not fit in this machine's memory, before allocating it."""
    if args.batch_size > n_train:
        raise UsageError(f"--batch-size {args.batch_size} exceeds the {n_train} training images")
    parameters = sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
    itemsize = 4 if args.dtype == "float32" else 8
    # parameters, gradients and up to two optimizer states; activations of a batch for each layer
    needed = itemsize * (4 * parameters + 3 * args.batch_size * sum(sizes))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    if memory and needed > memory:
        raise UsageError(f"a {'-'.join(map(str, sizes))} net at batch {args.batch_size} needs about "
                         f"{needed / 2**30:,.1f} GiB, more than this machine's {memory / 2**30:,.1f} GiB")


def _architecture(args: argparse.Namespace) -> tuple[list[int], str]:
    """Hidden widths and activation: the flags, else what ``--load``'s file says, else 50 and relu."""
    hidden, activation = args.hidden, args.activation
    if args.load and (hidden is None or activation is None):
        try:
            saved = read_saved(args.load)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if hidden is None and saved.sizes is not None:
            hidden = saved.sizes[1:-1]
        if activation is None:
            activation = saved.activation
    return hidden or [50], activation or "relu"


def _load_data(args: argparse.Namespace, say: Any = print) -> Dataset:
    """The requested dataset; an implicit MNIST that cannot be had falls back to digits."""
    name = _dataset_name(args)
    try:
        return load_dataset(name, data_dir=args.data_dir, progressbar=_interactive(args), timeout=(10, 60),
                            classes=args.classes)
    except DataUnavailableError as exc:
        remedies = (
            f"set XBACKPROP_DATA to a folder with {name}/ in it, pass --data-dir DIR, go online once to "
            f"download it into {default_cache_dir() / name}, or use --dataset digits"
        )
        if args.dataset is None and args.data_dir is None:
            if importlib.util.find_spec("sklearn") is None:
                raise UsageError(f"{exc}; {remedies} (needs scikit-learn)") from None
            say(f"{PROG}: {exc}; falling back to the digits dataset (--dataset to choose)", file=sys.stderr)
            return load_dataset("digits", classes=args.classes)
        raise UsageError(f"{exc}; {remedies}") from None


def _interactive(args: argparse.Namespace) -> bool:
    """Progress bars only for a person watching: not with --quiet, not into a redirected log."""
    return not args.quiet and sys.stderr.isatty()


def _summary(result: TrainResult) -> str:
    ending = ""
    if result.diverged_at:
        ending = f"diverged at iteration {result.diverged_at} (loss {result.losses[result.diverged_at - 1]:.4g})"
        ending += "; stopped. " if result.steps_done == result.diverged_at else "; trained on. "
    return (
        f"{ending}test acc {result.final_test_acc:.4f}, train acc {result.final_train_acc:.4f} after "
        f"{result.steps_done} iterations in {result.seconds:.1f} s ({result.samples_per_s:,.0f} samples/s, "
        f"{1e3 * result.seconds / max(result.steps_done, 1):.3g} ms per iteration)"
    )


def _run_record(result: TrainResult, lr: float) -> dict[str, Any]:
    return {
        "lr": lr,
        "iters": result.steps_done,
        "final_train_acc": result.final_train_acc,
        "final_test_acc": result.final_test_acc,
        "seconds": result.seconds,
        "samples_per_s": result.samples_per_s,
        "diverged_at": result.diverged_at,
        "history": result.history,
        "losses": result.losses,
    }


def _mpi_context(args: argparse.Namespace) -> Any:
    """The MPI context when ``--distributed`` or launched by ``mpiexec`` on several ranks, else None."""
    if not (args.distributed or launched_by_mpi()):
        return None
    try:
        return mpi_context()
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None


def _setup(args: argparse.Namespace, say: Any) -> tuple[Any, Any, Any, Dataset, Any]:
    """Backend, device, dtype, dataset and its device copy, or UsageError/DataError/BackendUnavailableError."""
    _check_outputs(args)
    if args.lr_sweep and (args.save or args.load or args.lr):
        raise UsageError("--lr-sweep trains fresh nets: it does not combine with --lr, --save or --load")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            xp = get_namespace(args.backend)
        except ValueError as exc:  # only XP can name an unknown backend: --backend has choices
            raise UsageError(f"XP={os.environ.get('XP', '')!r}: {exc}") from None
    for warning in caught:  # the CuPy fallback, in one line
        say(f"{PROG}: warning: {warning.message}", file=sys.stderr)
    if args.dtype == "float64":  # asked for on the command line: JAX's process-wide switch is ours to flip
        enable_float64(xp)
    try:
        device = resolve_device(xp, args.device)
    except (ValueError, RuntimeError, IndexError) as exc:
        raise UsageError(f"--device {args.device}: {exc}") from None
    dtype = resolve_dtype(xp, args.dtype)
    dataset = _load_data(args, say)
    return xp, device, dtype, dataset, to_device(dataset, xp, device=device, dtype=dtype)


def run(args: argparse.Namespace) -> int:
    context = _mpi_context(args)
    is_root = context is None or context.is_root

    def say(*values: Any, **kwargs: Any) -> None:
        if is_root:
            print(*values, **kwargs)

    error = None
    try:
        xp, device, dtype, dataset, data = _setup(args, say)
        hidden, activation = _architecture(args)
        if context is not None and args.batch_size < context.size:
            raise UsageError(f"--batch-size {args.batch_size} is smaller than the {context.size} MPI ranks")
    except (UsageError, DataError, BackendUnavailableError) as exc:
        error = exc
    except Exception as exc:  # on one rank of several, anything must reach the others, not hang them
        if context is None:
            raise
        error = UsageError(f"{type(exc).__name__}: {exc}")
    if context is not None:  # every rank stops together, with the failing rank's message
        error = context.agree(error)
        if error is None:  # a rank with other data would build another net: the first Allreduce would fail
            try:
                context.agree_on("the net's layer sizes", [dataset.num_features, *hidden, dataset.num_classes])
            except RuntimeError as exc:
                error = exc
    if error is not None:
        raise error if isinstance(error, UsageError) else UsageError(str(error))

    n_train = data.x_train.shape[0]
    iters = args.iters if args.iters is not None else (
        epochs_to_iters(args.epochs, n_train, args.batch_size) if args.epochs else 10_000
    )
    eval_interval = args.eval_interval or default_eval_interval(iters, n_train, args.batch_size)
    sizes = [dataset.num_features, *hidden, dataset.num_classes]
    _check_size(sizes, args, n_train)
    parameters = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    if args.gradient != "backprop" and parameters > NUMERICAL_WARN_P:
        say(f"{PROG}: warning: --gradient {args.gradient} runs {2 * parameters:,} forward passes a step "
            f"(2P, P = {parameters:,}); numerical gradients are for small nets, e.g. --dataset digits",
            file=sys.stderr)
    default_lr = BOOK_SGD_LR if args.optimizer == "sgd" else OPTIMIZERS[args.optimizer]().lr
    rates = args.lr_sweep or [args.lr or default_lr]

    device_text = describe_device(xp, device)
    parallel = "" if context is None else f", data-parallel over {context.describe()}, {staging_of(context, xp)}"
    say(
        f"xbackprop {__version__}: backend {backend_name(xp)}, device {device_text}, {args.dtype}, "
        f"dataset {dataset.name} ({n_train} train / {data.x_test.shape[0]} test, {dataset.num_features} features, "
        f"{dataset.num_classes} classes, from {dataset.source}), net {'-'.join(map(str, sizes))} {activation}, "
        f"{args.optimizer} lr {', '.join(f'{r:g}' for r in rates)}, batch {args.batch_size}, {iters} iterations, "
        f"accuracies every {eval_interval}{' on the minibatch and test set' if args.train_acc == 'batch' else ''}"
        f"{parallel}",
        flush=True,
    )

    runs: list[tuple[float, TrainResult]] = []
    for lr in rates:
        net = MultiLayerNet(
            sizes[0], sizes[1:-1], sizes[-1], activation=activation, weight_init_std=args.weight_init_std,
            xp=xp, device=device, dtype=dtype, seed=args.seed,
        )
        if args.load:
            try:
                load_params(args.load, net)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        optimizer = OPTIMIZERS[args.optimizer](lr=lr)
        sync = None if context is None else DistributedSync(context, net.params)
        try:
            result = _train_one(net, optimizer, data, iters, eval_interval, args,
                                label=f"lr {lr:g}" if args.lr_sweep else None, sync=sync, show=is_root)
        except Exception as exc:
            if context is None:
                raise
            context.abort(f"{PROG}: error on rank {context.rank}: {type(exc).__name__}: {exc}")
        runs.append((lr, result))
        say(("" if not args.lr_sweep else f"lr {lr:g}: ") + _summary(result), flush=True)
        if args.save and is_root:
            with _writing("--save", args.save):
                save_params(args.save, net, dataset=dataset.name)

    if not is_root:
        return 0
    if args.lr_sweep:
        source = "minibatch acc" if args.train_acc == "batch" else "train acc"
        print(f"\n| lr | {source} | test acc | seconds | diverged |\n| ---: | ---: | ---: | ---: | --- |")
        for lr, result in runs:
            diverged = f"at iteration {result.diverged_at}" if result.diverged_at else "no"
            print(f"| {lr:g} | {result.final_train_acc:.4f} | {result.final_test_acc:.4f} | "
                  f"{result.seconds:.1f} | {diverged} |")
    if args.json:
        record = {
            "backend": backend_name(xp),
            "device": device_text,
            "dtype": args.dtype,
            "dataset": dataset.name,
            "sizes": sizes,
            "activation": activation,
            "optimizer": args.optimizer,
            "batch_size": args.batch_size,
            "eval_interval": eval_interval,
            "train_acc": args.train_acc,
            "divergence": args.divergence,
            "gradient": args.gradient,
            "seed": args.seed,
            **_run_record(runs[0][1], runs[0][0]),
        }
        if args.lr_sweep:
            record["lr_sweep"] = [_run_record(result, lr) for lr, result in runs]
        with _writing("--json", args.json), replace_atomically(args.json) as temporary, open(temporary, "w") as f:
            json.dump(_finite(record), f, indent=1, allow_nan=False)
    if args.plot:
        from .plotting import plot_results

        title = f"{dataset.name}, {'-'.join(map(str, sizes))}, {args.optimizer}, {backend_name(xp)}"
        with _writing("--plot", args.plot):
            plot_results(args.plot, [(f"lr {lr:g}", result) for lr, result in runs], title=title)
    return 1 if (not args.lr_sweep and runs[0][1].diverged_at) else 0


@contextlib.contextmanager
def _writing(flag: str, path: str) -> Iterator[None]:
    """Turn a failed write (full disk, permissions gone) into a one-line error naming the flag."""
    try:
        yield
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror or exc}") from None


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None``, so the JSON is standard JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _train_one(
    net: Any, optimizer: Any, data: Any, iters: int, eval_interval: int, args: argparse.Namespace,
    label: str | None, sync: Any = None, show: bool = True,
) -> TrainResult:
    progress = None
    quiet = args.quiet or not show
    if not quiet and _interactive(args):
        from tqdm.auto import tqdm

        progress = tqdm(total=iters, desc=label or "train", unit="it", leave=False, dynamic_ncols=True)
    # Every evaluation is kept in the history; about PRINTED_EVALUATIONS of them are printed.
    evaluations = math.ceil(iters / eval_interval) if iters else 1
    print_every = eval_interval * math.ceil(evaluations / PRINTED_EVALUATIONS)
    book_style = args.eval_interval is None and args.train_acc == "full"

    def report(row: dict[str, float]) -> None:
        if quiet or ((row["iter"] - 1) % print_every and row["iter"] != iters):
            return
        if book_style:  # the book's line
            line = f"train acc, test acc | {row['train_acc']:.4f}, {row['test_acc']:.4f}"
        else:
            source = "minibatch" if args.train_acc == "batch" else "train"
            line = f"iter {row['iter']:>{len(str(iters))}}: {source} acc, test acc | " \
                   f"{row['train_acc']:.4f}, {row['test_acc']:.4f}"
        if progress is not None:
            progress.write(line)
        else:
            print(line, flush=True)

    try:
        return train(net, optimizer, data, iters=iters, batch_size=args.batch_size, seed=args.seed,
                     eval_interval=eval_interval, train_acc_source=args.train_acc, divergence=args.divergence,
                     on_epoch=report, progress=progress, sync=sync, compile=not args.no_compile,
                     gradient=args.gradient)
    finally:
        if progress is not None:
            progress.close()


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except (UsageError, DataError, BackendUnavailableError) as exc:
        message = str(exc)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    if launcher_rank() == 0:  # under mpiexec every rank fails alike: one line is enough
        one_line = message.replace("\r", "\\r").replace("\n", "\\n")  # a path may hold a newline
        print(f"{PROG}: error: {one_line}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
