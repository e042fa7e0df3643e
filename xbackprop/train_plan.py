"""What ``python -m xbackprop.train`` will do, decided and checked before any work: the configuration the
flags give, and the run's plan (data, net, namespace, device, steps) with every preflight check.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .architecture import NETS, Architecture, option_default
from .backend import (
    BackendUnavailableError,
    enable_float64,
    get_namespace,
    resolve_device,
    resolve_dtype,
)
from .cli import (
    UsageError,
)
from .datasets.catalog import CATALOG
from .datasets.dataset import DataError, Dataset, DataUnavailableError
from .datasets.load import load_dataset
from .datasets.locate import dataset_files, default_cache_dir, identify_dataset
from .files import plan_outputs
from .initialization import parameter_count
from .io import read_saved
from .memory import check_fits
from .optimizers import OPTIMIZERS
from .show.report_folder import report_paths
from .training.device_data import DeviceData, to_device
from .training.distributed import (
    MPIContext,
    launched_by_mpi,
    mpi_context,
)
from .training.loop import default_eval_interval, epochs_to_iters

PROG = "python -m xbackprop.train"


BOOK_SGD_LR = 0.1  # chapter 5's learning rate; the other optimizers keep chapter 6's defaults


#: Above this many parameters a numerical gradient is slow enough to warn about (the digits net has 3,760).
NUMERICAL_WARN_P = 5_000


#: The most iterations a run may ask for (the book's run is 10,000).
MAX_ITERS = 10**12


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
    sampling: str = "replacement"
    train_acc: str = "full"
    divergence: str = "stop"
    course_exercise: bool = False
    lr: float | None = None
    hidden: list[int] | None = None
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
    options: dict[str, Any] = field(default_factory=dict)  # the net's options given, by Architecture field

    @property
    def outputs(self) -> dict[str, str]:
        """The output flags given, ``{"json": path, ...}``."""
        return {flag: path for flag in ("json", "plot", "save") if (path := getattr(self, flag)) is not None}


@dataclass(frozen=True)
class RunPlan:
    """Everything settled before training: the namespace, device and dtype, the data on the host and on the
    device, the net's architecture, iterations, evaluation interval and learning rates."""

    xp: Any
    device: Any
    dtype: Any
    dataset: Dataset
    data: DeviceData
    architecture: Architecture
    iters: int
    eval_interval: int
    rates: list[float]

    @property
    def sizes(self) -> list[int]:
        return list(self.architecture.sizes)

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
    record = CATALOG.get(config.dataset or saved or "")
    if record is not None and not record.on_disk:
        raise UsageError(f"--data-dir {config.data_dir}: the {record.name} come with {record.provided_by}, "
                         "not from a folder")
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


def _architecture(config: TrainConfig, dataset: Dataset) -> Architecture:
    """The net: hidden widths and every option from the flags, else from what ``--load``'s file says, else the
    defaults (the fully connected net, 50 hidden units, relu; a conv net's hidden width is the book's)."""
    hidden, options = config.hidden, {}
    if config.load:
        try:
            saved = read_saved(config.load)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if hidden is None and saved.sizes is not None:
            hidden = saved.sizes[1:-1]
        options.update(saved.options)
    options.update({name: value for name, value in config.options.items() if value is not None})
    net = options.get("net", option_default("net"))
    sizes = (dataset.num_features, *(hidden or [NETS[net]]), dataset.num_classes)
    try:
        return Architecture(sizes, **options)
    except ValueError as exc:  # a conv net's own rules: the flag that broke one is in the message
        raise UsageError(f"--net {net}: {exc}") from None


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
    architecture = _architecture(config, dataset)
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
        xp, device, dtype, dataset, data, architecture, iters,
        config.eval_interval or default_eval_interval(iters, n_train, config.batch_size),
        config.lr_sweep or [config.lr or default_lr],
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
