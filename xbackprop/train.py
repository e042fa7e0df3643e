"""python -m xbackprop.train: the book's chapter 5 MNIST training on any backend.

Defaults reproduce the book: a 784-50-10 TwoLayerNet, SGD with lr 0.1, batch 100,
10,000 iterations, train and test accuracy after every epoch. ``XP=cupy`` (or
``--backend cupy``) runs on a GPU and falls back to NumPy where CuPy cannot run.
``--course-exercise`` runs the course exercise built on the chapter (784-40-10,
1,000 iterations, accuracies every 10, one run per learning rate 0.01, 0.1, 1, 10).
User mistakes end with one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from . import cli
from ._version import __version__
from .architecture import OPTIONS, option_default
from .backend import (
    BACKENDS,
    FLOAT_DTYPES,
    thread_limit,
)
from .cli import (
    EXIT_INTERRUPTED,
    Parser,
    Terminated,
    command_threads,
    non_negative_int,
    positive_float,
    positive_int,
    run_command,
)
from .datasets import (
    DATASETS,
)
from .initialization import NAMED_INITS
from .optimizers import OPTIMIZERS
from .train_plan import BOOK_SGD_LR, NUMERICAL_WARN_P, PROG, TrainConfig, _mpi_context, plan_run
from .train_run import _write_learned, header, train_runs, write_reports
from .training import (
    DIVERGENCE_POLICIES,
    GRADIENT_METHODS,
    SAMPLINGS,
    TRAIN_ACCURACY_SOURCES,
)
from .training.distributed import (
    MPIContext,
    first_to_say,
    launcher_rank,
)

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
    add("--sampling", choices=SAMPLINGS,
        help="minibatch rows drawn with replacement, as the book does, or a fresh shuffle of the training set each "
             "epoch (default %(default)s)")
    add("--train-acc", choices=TRAIN_ACCURACY_SOURCES,
        help="training accuracy over the full training set or the current minibatch (default %(default)s)")
    add("--divergence", choices=DIVERGENCE_POLICIES,
        help="on a loss that is not finite or exceeds 10x the first: stop, or continue and mark it (default %(default)s)")
    add("--course-exercise", action="store_true",
        help="the course exercise: " + ", ".join(f"--{k.replace('_', '-')} {_flag_text(v)}"
                                                  for k, v in COURSE_EXERCISE.items()) + " (each can be overridden)")
    add("--lr", type=positive_float, help=f"learning rate (default {BOOK_SGD_LR} for sgd, the book's for others)")
    add("--hidden", type=_hidden_sizes, help="hidden widths, comma-separated (default 50, or --load's)")
    add("--weight-init-std", type=_weight_init, help="a number, he or xavier (default %(default)s)")
    add("--optimizer", choices=tuple(OPTIMIZERS))
    _add_architecture_flags(parser)
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
    parser.set_defaults(**{field.name: field.default for field in fields(TrainConfig)
                           if field.name not in ("dtype", "options")})
    return parser


def _add_architecture_flags(parser: argparse.ArgumentParser) -> None:
    """The net's options, one flag each, as :class:`~xbackprop.architecture.Architecture` declares them; a flag
    not given is ``None``, so a ``--load``-ed file's own option stands."""
    add = parser.add_argument
    for name, option in OPTIONS.items():
        default = option_default(name)
        said = f" (default {default}{', or --load' + chr(39) + 's' if option.saved_as else ''})" if default else (
            ", or --load's" if option.saved_as else "")
        settings = {"action": "store_true"} if isinstance(default, bool) else {
            "type": getattr(cli, option.kind) if option.kind else None, "choices": option.choices,
            "metavar": option.metavar}
        add(option.flag, dest=name, default=None, help=option.help + said, **settings)


def _flag_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


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
    options = {name: getattr(args, name) for name in OPTIONS}
    return TrainConfig(**{field.name: getattr(args, field.name) for field in fields(TrainConfig)
                          if field.name != "options"}, options=options)


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
            _write_learned(config, plan, runs[-1][1], *nets[-1])
    return 1 if (not config.lr_sweep and runs[0][1].diverged_at) else 0


def _threads(config: TrainConfig) -> int | None:
    """Threads per process for the CPU libraries (see :func:`xbackprop.cli.command_threads`)."""
    return command_threads(config.threads)


def main(argv: list[str] | None = None) -> int:
    """The command; every ending is one line and an exit status (see :mod:`xbackprop.cli`)."""
    # under mpiexec every rank fails alike: one line is enough
    return run_command(lambda args: run(parse_args(args)), PROG, argv, announce=lambda: launcher_rank() == 0)


if __name__ == "__main__":
    sys.exit(main())
