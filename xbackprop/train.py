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
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from . import __version__
from .backend import (
    BACKENDS,
    FLOAT_DTYPES,
    BackendUnavailableError,
    backend_name,
    describe_device,
    enable_float64,
    get_namespace,
    resolve_device,
    resolve_dtype,
    thread_limit,
)
from .cli import (
    EXIT_INTERRUPTED,
    Parser,
    Terminated,
    UsageError,
    command_threads,
    non_negative_float,
    non_negative_int,
    one_line,
    positive_float,
    positive_int,
    ratio,
    run_command,
)
from .datasets import (
    CLASS_NAMES,
    DATASETS,
    DataError,
    Dataset,
    DataUnavailableError,
    dataset_files,
    default_cache_dir,
    identify_dataset,
    load_dataset,
)
from .distributed import (
    DistributedSync,
    MPIContext,
    first_to_say,
    launched_by_mpi,
    launcher_rank,
    mpi_context,
    staging_of,
)
from .io import load_params, plan_outputs, read_saved, save_params
from .learned import report_paths, write_report
from .memory import check_fits
from .nets import ACTIVATIONS, NAMED_INITS, MultiLayerNet, parameter_count
from .optimizers import OPTIMIZERS
from .report import EvaluationPrinter, printed_every, run_record, summary_line, sweep_table, write_json
from .trainer import (
    DIVERGENCE_POLICIES,
    GRADIENT_METHODS,
    TRAIN_ACCURACY_SOURCES,
    DeviceData,
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

#: The most iterations a run may ask for (the book's run is 10,000).
MAX_ITERS = 10**12
#: What ``--help`` ends with.
HELP_EXAMPLES = (
    "python -m xbackprop.train                                   # the book's 784-50-10 on MNIST",
    "python -m xbackprop.train --dataset fashion-mnist --hidden 100,100 --batchnorm --save model.npz",
    "python -m xbackprop.train --course-exercise --plot course.png",
    "python -m xbackprop.train --iters 0 --load model.npz        # evaluate a saved model",
    "XP=cupy python -m xbackprop.train                           # on a GPU (NumPy where CuPy cannot run)",
)

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
    return positive_float(text)


def _learning_rates(text: str) -> list[float]:
    return [positive_float(part) for part in text.split(",")]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(PROG, "The book's chapter 5 MNIST training on any backend, and the course exercise.", HELP_EXAMPLES)
    add = parser.add_argument
    add("--version", action="version", version=f"xbackprop {__version__}")
    add("--backend", choices=BACKENDS, help="array backend (overrides $XP; default numpy)")
    add("--device", help="device, e.g. cpu, cuda:0, gpu:0 (default: the backend's)")
    add("--dataset", choices=DATASETS, help="dataset (default mnist, falling back to digits when offline)")
    add("--data-dir", help="folder holding the four *-idx?-ubyte(.gz) files")
    add("--classes", type=positive_int, metavar="C",
        help="number of classes of --data-dir's labels (default: 10 for MNIST and Fashion-MNIST, else from the labels)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--iters", type=non_negative_int, help="minibatch steps (default 10000)")
    length.add_argument("--epochs", type=positive_float, help="passes over the training set instead of --iters")
    add("--batch-size", type=positive_int, help="minibatch size (default %(default)s)")
    add("--eval-interval", type=positive_int, metavar="N",
        help="evaluate accuracies every N iterations (default: every epoch, or about 20 times a run at most)")
    add("--train-acc", choices=TRAIN_ACCURACY_SOURCES,
        help="training accuracy over the full training set or the current minibatch (default %(default)s)")
    add("--divergence", choices=DIVERGENCE_POLICIES,
        help="on a loss that is not finite or exceeds 10x the first: stop, or continue and mark it (default %(default)s)")
    add("--course-exercise", action="store_true",
        help="the course exercise: " + ", ".join(f"--{k.replace('_', '-')} {_flag_text(v)}"
                                                  for k, v in COURSE_EXERCISE.items()) + " (each can be overridden)")
    add("--lr", type=positive_float, help=f"learning rate (default {BOOK_SGD_LR} for sgd, the book's for others)")
    add("--hidden", type=_hidden_sizes, help="hidden widths, comma-separated (default 50, or --load's)")
    add("--activation", choices=tuple(ACTIVATIONS), help="hidden activation (default relu, or --load's)")
    add("--weight-init-std", type=_weight_init, help="a number, he or xavier (default %(default)s)")
    add("--optimizer", choices=tuple(OPTIMIZERS))
    add("--batchnorm", action="store_true",
        help="batch normalization between every hidden Affine and its activation (chapter 6), or --load's")
    add("--dropout", type=ratio, metavar="RATIO",
        help="dropout of RATIO of the hidden units in training (chapter 6), or --load's")
    add("--weight-decay", type=non_negative_float, metavar="LAMBDA",
        help="L2 weight decay 0.5 * LAMBDA * sum(W**2) (chapter 6; default %(default)s)")
    add("--dtype", choices=FLOAT_DTYPES,
        help="float32 by default; float64 with a numerical --gradient (central differences need it)")
    add("--seed", type=non_negative_int, help="seed of weights and minibatch draws (default %(default)s)")
    add("--json", metavar="PATH", help="write the run's figures and history as JSON")
    add("--plot", metavar="PATH",
        help="write accuracy and loss curves, one column per run, as PNG, SVG or PDF (needs matplotlib)")
    add("--save", metavar="PATH", help="save the trained parameters (.npz)")
    add("--report", metavar="DIR",
        help="write what was learned into DIR: curves, confusion matrix, the most confident mistakes, accuracy per "
        "class and summary.md (needs matplotlib)")
    add("--load", metavar="PATH",
        help="start from saved parameters (.npz); with --iters 0, evaluate a saved model")
    add("--lr-sweep", type=_learning_rates, metavar="LRS", help="train once per learning rate, e.g. 0.01,0.1,1,10")
    add("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    add("--threads", type=non_negative_int, metavar="N",
        help="threads of the CPU libraries (BLAS, OpenMP, torch) per process; default 1, the faster on a shared "
        "machine, unless OMP_NUM_THREADS, OPENBLAS_NUM_THREADS or MKL_NUM_THREADS is set; 0: the libraries' own")
    add("--gradient", choices=GRADIENT_METHODS,
        help="backprop, or central differences: the book's loop or batched (2P forward passes a step: small nets)")
    add("--no-compile", dest="compile", action="store_false",
        help="run every step eagerly, op by op (for debugging; JAX otherwise compiles blocks of steps)")
    add("--distributed", action="store_true",
        help="data-parallel over MPI ranks (automatic when mpiexec starts several); needs xbackprop[distributed]")
    # Each default has one definition, TrainConfig's; the dtype's depends on --gradient (see parse_args).
    parser.set_defaults(**{field.name: field.default for field in fields(TrainConfig) if field.name != "dtype"})
    return parser


def _flag_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class TrainConfig:
    """What the command line asks for: one field per flag (``compile`` is ``not --no-compile``)."""

    backend: str | None = None
    device: str | None = None
    dataset: str | None = None
    data_dir: str | None = None
    classes: int | None = None
    iters: int | None = None
    epochs: float | None = None
    batch_size: int = 100
    eval_interval: int | None = None
    train_acc: str = "full"
    divergence: str = "stop"
    course_exercise: bool = False
    lr: float | None = None
    hidden: list[int] | None = None
    activation: str | None = None
    weight_init_std: float | str = 0.01
    optimizer: str = "sgd"
    dtype: str = "float32"
    seed: int = 0
    json: str | None = None
    plot: str | None = None
    report: str | None = None
    save: str | None = None
    load: str | None = None
    lr_sweep: list[float] | None = None
    quiet: bool = False
    threads: int | None = None
    gradient: str = "backprop"
    compile: bool = True
    distributed: bool = False
    batchnorm: bool = False
    dropout: float | None = None
    weight_decay: float = 0.0

    @property
    def outputs(self) -> dict[str, str]:
        """The output flags given, ``{"json": path, ...}``."""
        return {flag: path for flag in ("json", "plot", "save") if (path := getattr(self, flag)) is not None}


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """The command line as a :class:`TrainConfig`; ``--course-exercise`` supplies defaults that explicit flags
    override."""
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
    return TrainConfig(**{field.name: getattr(args, field.name) for field in fields(TrainConfig)})


@dataclass(frozen=True)
class RunPlan:
    """Everything settled before training: the namespace, device and dtype, the data on the host and on the
    device, the layer sizes and activation, iterations, evaluation interval and learning rates."""

    xp: Any
    device: Any
    dtype: Any
    dataset: Dataset
    data: DeviceData
    sizes: list[int]
    activation: str
    iters: int
    eval_interval: int
    rates: list[float]
    batchnorm: bool = False
    dropout: float | None = None

    @property
    def parameters(self) -> int:
        return parameter_count(self.sizes)


def _dataset_name(config: TrainConfig) -> str:
    """``--dataset``, or what ``--data-dir`` holds, or the dataset ``--load``'s file was trained on; a mismatch
    between them is refused, and so is a ``--data-dir`` that is not a folder."""
    saved = _saved_dataset(config)
    if config.dataset is not None and saved is not None and saved != config.dataset:
        raise UsageError(f"--load {config.load} was trained on {saved}, not --dataset {config.dataset}")
    if config.data_dir is None:
        return config.dataset or saved or "mnist"
    if (config.dataset or saved) == "digits":
        raise UsageError(f"--data-dir {config.data_dir}: the digits come with scikit-learn, not from a folder")
    if not Path(config.data_dir).is_dir():
        raise UsageError(f"--data-dir {config.data_dir}: no such folder")
    found = identify_dataset(config.data_dir)
    if saved is not None and found is not None and found != saved:
        raise UsageError(f"--data-dir {config.data_dir} holds {found}, but --load {config.load} was trained on {saved}")
    if config.dataset is not None and found is not None and found != config.dataset:
        raise UsageError(f"--data-dir {config.data_dir} holds {found}, not {config.dataset}")
    return config.dataset or found or Path(config.data_dir).resolve().name


def _saved_dataset(config: TrainConfig) -> str | None:
    """The dataset named in ``--load``'s file, if any."""
    if not config.load:
        return None
    try:
        return read_saved(config.load).dataset
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _check_outputs(config: TrainConfig) -> None:
    """Refuse output paths that could not be written, or that name the same file as another output or an
    input, before any training."""
    inputs = [("--load", config.load)] if config.load else []
    if config.data_dir and Path(config.data_dir).is_dir():
        inputs += [("--data-dir", path) for path in Path(config.data_dir).iterdir()]
    data_flag = "--data-dir" if config.data_dir else "--dataset"
    inputs += [(data_flag, path) for path in dataset_files(_dataset_name(config), config.data_dir)]
    try:
        plan_outputs({f"--{flag}": path for flag, path in config.outputs.items()}, inputs,
                     updates=[("--save", "--load")])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if config.report is not None:
        if config.lr_sweep:
            raise UsageError("--report describes one run: drop --lr-sweep, or train the rate you want to see")
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--report needs matplotlib: pip install 'xbackprop[plot]'")
        try:
            planned = [("--" + flag, path) for flag, path in config.outputs.items()]
            report_paths(config.report, curves=True, inputs=inputs + planned)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if config.plot:
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib: pip install 'xbackprop[plot]'")
        from matplotlib.backend_bases import FigureCanvasBase

        suffix = Path(config.plot).suffix.lstrip(".").lower()
        if suffix not in FigureCanvasBase.get_supported_filetypes():
            raise UsageError(f"--plot {config.plot}: unknown figure format {suffix!r}; use .png, .svg or .pdf")


def _check_size(plan: RunPlan, batch_size: int) -> None:
    """Refuse a net or a batch that could not fit in this process's memory, before allocating it."""
    n_train = plan.data.x_train.shape[0]
    if batch_size > n_train:
        raise UsageError(f"--batch-size {batch_size} exceeds the {n_train} training images")
    itemsize = 4 if plan.dtype == plan.xp.float32 else 8
    # parameters, gradients and up to two optimizer states; activations of a batch for each layer
    needed = itemsize * (4 * plan.parameters + 3 * batch_size * sum(plan.sizes))
    try:
        check_fits(needed, f"a {'-'.join(map(str, plan.sizes))} net at batch {batch_size}")
    except ValueError as exc:
        raise UsageError(f"--hidden, --batch-size: {exc}; give smaller ones") from None


def _check_data_size(dataset: Dataset, dtype: Any, xp: Any) -> None:
    """Refuse data whose pixels in ``dtype`` (beside their uint8 originals) could not fit, before converting them."""
    pixels = dataset.x_train.size + dataset.x_test.size
    itemsize = 4 if dtype == xp.float32 else 8
    try:
        check_fits(pixels * (itemsize + 1), f"{dataset.name}'s {pixels:,} pixels in {getattr(dtype, '__name__', dtype)}")
    except ValueError as exc:
        raise UsageError(f"--dataset/--data-dir, --dtype: {exc}") from None


def _architecture(config: TrainConfig) -> tuple[list[int], str, bool, float | None]:
    """Hidden widths, activation, batch normalization and dropout ratio: the flags, else what ``--load``'s
    file says, else 50, relu, none and none."""
    hidden, activation = config.hidden, config.activation
    batchnorm, dropout = config.batchnorm, config.dropout
    if config.load:
        try:
            saved = read_saved(config.load)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if hidden is None and saved.sizes is not None:
            hidden = saved.sizes[1:-1]
        if activation is None:
            activation = saved.activation
        batchnorm = batchnorm or saved.batchnorm
        dropout = saved.dropout_ratio if dropout is None else dropout
    return hidden or [50], activation or "relu", batchnorm, dropout


def _load_data(config: TrainConfig, print_root: Callable[..., None]) -> Dataset:
    """The requested dataset; an implicit MNIST that cannot be had falls back to digits."""
    name = _dataset_name(config)
    try:
        return load_dataset(name, data_dir=config.data_dir, progressbar=_interactive(config), timeout=(10, 60),
                            classes=config.classes)
    except DataUnavailableError as exc:
        remedies = (
            f"set XBACKPROP_DATA to a folder with {name}/ in it, pass --data-dir DIR, go online once to "
            f"download it into {default_cache_dir() / name}, or use --dataset digits"
        )
        if config.dataset is None and config.data_dir is None and _saved_dataset(config) is None:
            if importlib.util.find_spec("sklearn") is None:
                raise UsageError(f"{exc}; {remedies} (needs scikit-learn)") from None
            print_root(f"{PROG}: {exc}; falling back to the digits dataset (--dataset to choose)", file=sys.stderr)
            return load_dataset("digits", classes=config.classes)
        raise UsageError(f"{exc}; {remedies}") from None


def _interactive(config: TrainConfig) -> bool:
    """Progress bars only for a person watching: not with --quiet, not into a redirected log."""
    return not config.quiet and sys.stderr.isatty()


def _mpi_context(config: TrainConfig) -> MPIContext | None:
    """The MPI context when ``--distributed`` or launched by ``mpiexec`` on several ranks, else None."""
    if not (config.distributed or launched_by_mpi()):
        return None
    try:
        return mpi_context()
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None


def _namespace(config: TrainConfig, print_root: Callable[..., None]) -> tuple[Any, Any, Any]:
    """The backend's namespace, device and dtype; the CuPy fallback is reported in one line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            xp = get_namespace(config.backend)
        except ValueError as exc:  # only XP can name an unknown backend: --backend has choices
            raise UsageError(f"XP={os.environ.get('XP', '')!r}: {exc}") from None
    for warning in caught:
        print_root(f"{PROG}: warning: {warning.message}", file=sys.stderr)
    if config.dtype == "float64":  # asked for on the command line: JAX's process-wide switch is ours to flip
        enable_float64(xp)
    try:
        device = resolve_device(xp, config.device)
    except (ValueError, RuntimeError, IndexError) as exc:
        raise UsageError(f"--device {config.device}: {exc}") from None
    return xp, device, resolve_dtype(xp, config.dtype)


def _plan(config: TrainConfig, context: MPIContext | None, print_root: Callable[..., None]) -> RunPlan:
    """Check the outputs, pick the backend, load the data and settle the run's arithmetic, on this rank."""
    _check_outputs(config)
    if config.lr_sweep and (config.save or config.load or config.lr):
        raise UsageError("--lr-sweep trains fresh nets: it does not combine with --lr, --save or --load")
    xp, device, dtype = _namespace(config, print_root)
    dataset = _load_data(config, print_root)
    _check_data_size(dataset, dtype, xp)
    data = to_device(dataset, xp, device=device, dtype=dtype)
    hidden, activation, batchnorm, dropout = _architecture(config)
    if context is not None and config.batch_size < context.size:
        raise UsageError(f"--batch-size {config.batch_size} is smaller than the {context.size} MPI ranks")
    n_train = data.x_train.shape[0]
    if config.iters is not None:
        iters = config.iters
    elif config.epochs and config.epochs * n_train / config.batch_size > MAX_ITERS:
        raise UsageError(f"--epochs {config.epochs:g}: more than {MAX_ITERS:,} iterations")
    else:
        iters = epochs_to_iters(config.epochs, n_train, config.batch_size) if config.epochs else 10_000
    if iters > MAX_ITERS:
        raise UsageError(f"--iters {iters}: more than {MAX_ITERS:,} iterations")
    default_lr = BOOK_SGD_LR if config.optimizer == "sgd" else OPTIMIZERS[config.optimizer]().lr
    plan = RunPlan(
        xp, device, dtype, dataset, data, [dataset.num_features, *hidden, dataset.num_classes], activation, iters,
        config.eval_interval or default_eval_interval(iters, n_train, config.batch_size),
        config.lr_sweep or [config.lr or default_lr], batchnorm, dropout,
    )
    _check_size(plan, config.batch_size)
    return plan


def plan_run(config: TrainConfig, context: MPIContext | None, print_root: Callable[..., None]) -> RunPlan:
    """:func:`_plan` on every rank; under MPI a failure on any rank stops all of them with its message."""
    error: Exception | None = None
    plan = None
    try:
        plan = _plan(config, context, print_root)
    except (UsageError, DataError, BackendUnavailableError) as exc:
        error = exc
    except Exception as exc:  # on one rank of several, anything must reach the others, not hang them
        if context is None:
            raise
        error = UsageError(f"{type(exc).__name__}: {exc}")
    if context is not None:
        error = context.agree(error)
        if error is None:  # a rank with other data would build another net: the first Allreduce would fail
            try:
                context.agree_on("the net's layer sizes", plan.sizes)
            except RuntimeError as exc:
                error = exc
    if error is not None:
        raise error if isinstance(error, UsageError) else UsageError(str(error))
    return plan


def header(config: TrainConfig, plan: RunPlan, context: MPIContext | None) -> str:
    """The run's first line: versions, backend, device, data, net, optimizer and schedule."""
    dataset, data = plan.dataset, plan.data
    parallel = "" if context is None else f", data-parallel over {context.describe()}, {staging_of(context, plan.xp).value}"
    return (
        f"xbackprop {__version__}: backend {backend_name(plan.xp)}, device {describe_device(plan.xp, plan.device)}, "
        f"{config.dtype}, dataset {dataset.name} ({data.x_train.shape[0]} train / {data.x_test.shape[0]} test, "
        f"{dataset.num_features} features, {dataset.num_classes} classes, from {dataset.source}), "
        f"net {'-'.join(map(str, plan.sizes))} {plan.activation}{_extensions(config, plan)}, {config.optimizer} lr "
        f"{', '.join(f'{r:g}' for r in plan.rates)}, batch {config.batch_size}, {plan.iters} iterations, "
        f"accuracies every {plan.eval_interval}"
        f"{' on the minibatch and test set' if config.train_acc == 'batch' else ''}{_printed(plan)}{parallel}"
    )


def _printed(plan: RunPlan) -> str:
    """How often the accuracies are printed, where that is not every evaluation."""
    every = printed_every(plan.iters, plan.eval_interval)
    return "" if every == plan.eval_interval else f" (printed every {every}; --json and --plot keep them all)"


def _extensions(config: TrainConfig, plan: RunPlan) -> str:
    """Chapter 6's additions to the net, as the first line names them (empty without any)."""
    parts = (["batchnorm"] if plan.batchnorm else []) + ([f"dropout {plan.dropout:g}"] if plan.dropout is not None
                                                          else [])
    if config.weight_decay:
        parts.append(f"weight decay {config.weight_decay:g}")
    return "".join(f" + {part}" for part in parts)


def train_runs(
    config: TrainConfig, plan: RunPlan, context: MPIContext | None, print_root: Callable[..., None],
    nets: list[Any] | None = None,
) -> list[tuple[float, TrainResult]]:
    """Train one fresh (or ``--load``-ed) net per learning rate; print each run's summary; ``--save`` the net.
    The trained nets are appended to ``nets`` when given."""
    runs = []
    for lr in plan.rates:
        try:
            net = MultiLayerNet(
                plan.sizes[0], plan.sizes[1:-1], plan.sizes[-1], activation=plan.activation,
                weight_init_std=config.weight_init_std, weight_decay_lambda=config.weight_decay,
                use_dropout=plan.dropout is not None, dropout_ratio=0.5 if plan.dropout is None else plan.dropout,
                use_batchnorm=plan.batchnorm, xp=plan.xp, device=plan.device, dtype=plan.dtype,
                seed=config.seed,
            )
        except ValueError as exc:  # the library names its argument; the command names the flag
            raise UsageError(str(exc).replace("weight_init_std", "--weight-init-std", 1)) from None
        if config.load:
            try:
                load_params(config.load, net)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        # the running statistics of batch normalization are averaged with the gradients (see EagerSteps)
        averaged = {key: value for key, value in net.buffers.items() if value.dtype == net.dtype}
        sync = None if context is None else DistributedSync(context, {**net.params, **averaged})
        label = f"lr {lr:g}" if config.lr_sweep else None
        try:
            result = _train_net(net, OPTIMIZERS[config.optimizer](lr=lr), config, plan, label, sync,
                                show=context is None or context.is_root)
        except Exception as exc:
            if context is None:
                raise
            context.abort(f"{PROG}: error on rank {context.rank}: {type(exc).__name__}: {exc}")
        runs.append((lr, result))
        if nets is not None:
            nets.append(net)
        print_root(("" if not config.lr_sweep else f"lr {lr:g}: ") + summary_line(result), flush=True)
        if config.save and (context is None or context.is_root):
            with _writing("--save", config.save):
                save_params(config.save, net, dataset=plan.dataset.name)
            print(one_line(f"wrote {config.save}: the {'-'.join(map(str, plan.sizes))} {plan.activation} net "
                           f"trained on {plan.dataset.name}"), file=sys.stderr)
    return runs


def _train_net(
    net: Any, optimizer: Any, config: TrainConfig, plan: RunPlan, label: str | None, sync: Any, show: bool
) -> TrainResult:
    """One call of :func:`~xbackprop.trainer.train` with a progress bar and the evaluation lines, as asked."""
    quiet = config.quiet or not show
    progress = None
    if not quiet and _interactive(config):
        from tqdm.auto import tqdm

        progress = tqdm(total=plan.iters, desc=label or "train", unit="it", leave=False, dynamic_ncols=True)
    printer = EvaluationPrinter(
        plan.iters, plan.eval_interval, config.train_acc,
        book_style=config.eval_interval is None and config.train_acc == "full", progress=progress,
    )
    try:
        # numerical gradients take seconds a step: the bar (and its estimate) moves at every step
        log_interval = 1 if config.gradient != "backprop" else 100
        return train(net, optimizer, plan.data, iters=plan.iters, batch_size=config.batch_size, seed=config.seed,
                     log_interval=log_interval, eval_interval=plan.eval_interval, train_acc_source=config.train_acc,
                     divergence=config.divergence, on_epoch=None if quiet else printer, progress=progress,
                     sync=sync, compile=config.compile, gradient=config.gradient)
    finally:
        if progress is not None:
            progress.close()


def write_reports(config: TrainConfig, plan: RunPlan, runs: list[tuple[float, TrainResult]]) -> None:
    """The reports asked for after training: the sweep's table on stdout, ``--json`` and ``--plot``."""
    if config.lr_sweep:
        print("\n" + sweep_table(runs, config.train_acc))
    if config.json:
        record = run_record(runs, {
            "backend": backend_name(plan.xp),
            "device": describe_device(plan.xp, plan.device),
            "dtype": config.dtype,
            "dataset": plan.dataset.name,
            "sizes": plan.sizes,
            "activation": plan.activation,
            "batchnorm": plan.batchnorm,
            "dropout": plan.dropout,
            "weight_decay": config.weight_decay,
            "optimizer": config.optimizer,
            "batch_size": config.batch_size,
            "eval_interval": plan.eval_interval,
            "train_acc": config.train_acc,
            "divergence": config.divergence,
            "gradient": config.gradient,
            "seed": config.seed,
        }, sweep=bool(config.lr_sweep))
        with _writing("--json", config.json):
            write_json(config.json, record)
    if config.plot:
        from .plotting import plot_results

        title = (f"Accuracy and loss while training: {plan.dataset.name}, {'-'.join(map(str, plan.sizes))} "
                 f"{plan.activation}, {config.optimizer}, batch {config.batch_size}, {runs[0][1].steps_done} "
                 f"iterations, {config.dtype}, {backend_name(plan.xp)}")
        with _writing("--plot", config.plot):
            plot_results(config.plot, [(f"lr {lr:g}", result) for lr, result in runs], title=title)


def run(config: TrainConfig) -> int:
    """Plan, train, report. Returns the exit status: 1 when a single run diverged, else 0.

    Under MPI a Ctrl-C or termination on any rank ends every rank (``MPI_Abort``), once this rank's
    temporary files are gone: another rank may be waiting inside a collective, where no signal reaches
    Python, and would wait for ever."""
    context = _mpi_context(config)
    try:
        return _run(config, context)
    except (KeyboardInterrupt, Terminated) as exc:
        if context is None or context.size < 2:
            raise
        said = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"terminated by {exc}"
        code = EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else 128 + exc.signum
        context.abort(f"{PROG}: {said}" if first_to_say("ending") else "", code)  # rank 0 may be inside a collective


def _run(config: TrainConfig, context: MPIContext | None) -> int:
    is_root = context is None or context.is_root

    def print_root(*values: Any, **kwargs: Any) -> None:
        """``print`` on the root rank only (every rank computes the same lines)."""
        if is_root:
            print(*values, **kwargs)

    plan = plan_run(config, context, print_root)
    if config.gradient != "backprop" and plan.parameters > NUMERICAL_WARN_P:
        print_root(f"{PROG}: warning: --gradient {config.gradient} runs {2 * plan.parameters:,} forward passes a "
                   f"step (2P, P = {plan.parameters:,}); numerical gradients are for small nets, e.g. --dataset "
                   "digits", file=sys.stderr)
    print_root(header(config, plan, context), flush=True)
    nets: list[Any] = []
    with thread_limit(_threads(config)):
        runs = train_runs(config, plan, context, print_root, nets)
        if not is_root:
            return 0
        write_reports(config, plan, runs)
        if config.report is not None:
            _write_learned(config, plan, runs[-1][1], nets[-1])
    return 1 if (not config.lr_sweep and runs[0][1].diverged_at) else 0


def _threads(config: TrainConfig) -> int | None:
    """Threads per process for the CPU libraries (see :func:`xbackprop.cli.command_threads`)."""
    return command_threads(config.threads)


def _write_learned(config: TrainConfig, plan: RunPlan, result: TrainResult, net: Any) -> None:
    """``--report DIR``: what the trained net learned, on the test set."""
    title = (f"{plan.dataset.name}, {'-'.join(map(str, plan.sizes))} {plan.activation}, {config.optimizer} lr "
             f"{plan.rates[-1]:g}, batch {config.batch_size}, {result.steps_done} iterations, {config.dtype}")
    with _writing("--report", config.report):
        evaluation = write_report(config.report, net, plan.data.x_test, plan.data.t_test,
                                  names=CLASS_NAMES.get(plan.dataset.name), runs=[("", result)], title=title,
                                  source=f"{plan.dataset.name}'s test set")
    mistakes = len(evaluation.truth) - round(evaluation.accuracy * len(evaluation.truth))
    print(one_line(f"wrote {Path(config.report) / 'summary.md'}: test accuracy {evaluation.accuracy:.4f}, "
                   f"{mistakes} mistakes"), file=sys.stderr)


@contextlib.contextmanager
def _writing(flag: str, path: str) -> Iterator[None]:
    """Turn a failed write (full disk, permissions gone) into a one-line error naming the flag."""
    try:
        yield
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror or exc}") from None


def main(argv: list[str] | None = None) -> int:
    """The command; every ending is one line and an exit status (see :mod:`xbackprop.cli`)."""
    # under mpiexec every rank fails alike: one line is enough
    return run_command(lambda args: run(parse_args(args)), PROG, argv, announce=lambda: launcher_rank() == 0)


if __name__ == "__main__":
    sys.exit(main())
