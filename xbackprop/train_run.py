"""Running the planned training and writing what it asked for: the header, the runs, the JSON, the plot,
the saved net and the report folder.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .backend import (
    backend_name,
    describe_device,
)
from .cli import (
    UsageError,
    one_line,
)
from .datasets import (
    CLASS_NAMES,
)
from .io import load_params, save_params
from .memory import check_fits, measured_peak
from .nets import build_net
from .optimizers import OPTIMIZERS
from .show.filters import first_filters
from .show.report_folder import write_report
from .train_plan import PROG, RunPlan, TrainConfig, _interactive
from .training import (
    Schedule,
    TrainResult,
    train,
)
from .training.distributed import (
    DistributedSync,
    MPIContext,
    staging_of,
)
from .training.log import EvaluationPrinter, printed_every, run_record, summary_line, sweep_table, write_json


def header(config: TrainConfig, plan: RunPlan, context: MPIContext | None) -> str:
    """The run's first line: versions, backend, device, data, net, optimizer and schedule."""
    dataset, data = plan.dataset, plan.data
    parallel = ("" if context is None
                else f", data-parallel over {context.describe()}, {staging_of(context, plan.xp).value}")
    return (
        f"xbackprop {__version__}: backend {backend_name(plan.xp)}, device {describe_device(plan.xp, plan.device)}, "
        f"{config.dtype}, dataset {dataset.name} ({data.x_train.shape[0]} train / {data.x_test.shape[0]} test, "
        f"{dataset.num_features} features, {dataset.num_classes} classes, from {dataset.source}), "
        f"net {plan.architecture.describe()}, {config.optimizer} lr "
        f"{', '.join(f'{r:g}' for r in plan.rates)}, batch {config.batch_size}"
        f"{' (each epoch a shuffle)' if config.sampling == 'shuffle' else ''}, {plan.iters} iterations, "
        f"accuracies every {plan.eval_interval}"
        f"{' on the minibatch and test set' if config.train_acc == 'batch' else ''}{_printed(plan)}{parallel}"
    )


def _printed(plan: RunPlan) -> str:
    """How often the accuracies are printed, where that is not every evaluation."""
    every = printed_every(plan.iters, plan.eval_interval)
    return "" if every == plan.eval_interval else f" (printed every {every}; --json and --plot keep them all)"


def train_runs(
    config: TrainConfig, plan: RunPlan, context: MPIContext | None, print_root: Callable[..., None],
    nets: list[Any] | None = None,
) -> list[tuple[float, TrainResult]]:
    """Train one fresh (or ``--load``-ed) net per learning rate; print each run's summary; ``--save`` the net.
    The trained nets are appended to ``nets`` when given, each with its first-layer filters before training (a
    conv net's, for the report; ``None`` for others)."""
    if plan.architecture.net != "multi-layer-net":  # the fully connected net's need is estimated in the plan
        _check_step_memory(plan, config.batch_size)
    runs = []
    for lr in plan.rates:
        try:
            net = build_net(plan.architecture, config.weight_init_std, xp=plan.xp, device=plan.device,
                            dtype=plan.dtype, seed=config.seed)
        except ValueError as exc:  # the library names its argument; the command names the flag
            raise UsageError(str(exc).replace("weight_init_std", "--weight-init-std", 1)) from None
        if config.load:
            try:
                load_params(config.load, net)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        filters_before = first_filters(net)
        # the running statistics of batch normalization are averaged with the gradients (see EagerSteps)
        averaged = {key: value for key, value in net.buffers.items() if value.dtype == net.dtype}
        ranks = None if context is None else DistributedSync(context, {**net.params, **averaged})
        label = f"lr {lr:g}" if config.lr_sweep else None
        try:
            result = _train_net(net, OPTIMIZERS[config.optimizer](lr=lr), config, plan, label, ranks,
                                show=context is None or context.is_root)
        except Exception as exc:
            if context is None:
                raise
            context.abort(f"{PROG}: error on rank {context.rank}: {type(exc).__name__}: {exc}")
        runs.append((lr, result))
        if nets is not None:
            nets.append((net, filters_before))
        print_root(("" if not config.lr_sweep else f"lr {lr:g}: ") + summary_line(result), flush=True)
        if config.save and (context is None or context.is_root):
            with _writing("--save", config.save):
                save_params(config.save, net, dataset=plan.dataset.name)
            print(one_line(f"wrote {config.save}: the {plan.architecture.describe()} net "
                           f"trained on {plan.dataset.name}"), file=sys.stderr)
    return runs


def _check_step_memory(plan: RunPlan, batch_size: int) -> None:
    """A conv net's training step, measured on the host at one and two images and scaled to the batch (its
    im2col copies dominate), against the memory this process may use, before any training."""
    twin = build_net(plan.architecture, xp="numpy", dtype="float32", seed=0)

    def step(rows: int) -> None:
        twin.loss_and_gradient(np.zeros((rows, plan.sizes[0]), np.float32), np.zeros(rows, np.int64))

    itemsize = 8 if str(plan.dtype).endswith("float64") else 4
    peak = measured_peak(step, batch_size)
    if peak is None:  # the caller traces memory itself: its tracing is left alone, the step unmeasured
        return
    try:
        check_fits(peak * itemsize // 4, f"a {plan.architecture.describe()} step at --batch-size {batch_size}")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _train_net(
    net: Any, optimizer: Any, config: TrainConfig, plan: RunPlan, label: str | None, ranks: Any, show: bool
) -> TrainResult:
    """One call of :func:`~xbackprop.training.train` with a progress bar and the evaluation lines, as asked."""
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
        schedule = Schedule(iters=plan.iters, batch_size=config.batch_size, seed=config.seed, log_interval=log_interval,
                            eval_interval=plan.eval_interval, train_acc_source=config.train_acc,
                            divergence=config.divergence, sampling=config.sampling)
        return train(net, optimizer, plan.data, schedule, on_evaluation=None if quiet else printer, progress=progress,
                     ranks=ranks, compile=config.compile, gradient=config.gradient)
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
            **plan.architecture.as_json(),
            "optimizer": config.optimizer,
            "batch_size": config.batch_size,
            "eval_interval": plan.eval_interval,
            "train_acc": config.train_acc,
            "sampling": config.sampling,
            "divergence": config.divergence,
            "gradient": config.gradient,
            "seed": config.seed,
        }, sweep=bool(config.lr_sweep))
        with _writing("--json", config.json):
            write_json(config.json, record)
    if config.plot:
        from .show.curves import plot_results

        title = (f"Accuracy and loss while training: {plan.dataset.name}, {plan.architecture.describe()}, "
                 f"{config.optimizer}, batch {config.batch_size}, "
                 f"{runs[0][1].steps_done} "
                 f"iterations, {config.dtype}, {backend_name(plan.xp)}")
        with _writing("--plot", config.plot):
            plot_results(config.plot, [(f"lr {lr:g}", result) for lr, result in runs], title=title)


def _write_learned(config: TrainConfig, plan: RunPlan, result: TrainResult, net: Any, filters_before: Any) -> None:
    """``--report DIR``: what the trained net learned, on the test set (a conv net's filters before and after)."""
    title = (f"{plan.dataset.name}, {plan.architecture.describe()}, {config.optimizer} lr "
             f"{plan.rates[-1]:g}, batch {config.batch_size}, {result.steps_done} iterations, {config.dtype}")
    with _writing("--report", config.report):
        evaluation = write_report(config.report, net, plan.data.x_test, plan.data.t_test,
                                  names=CLASS_NAMES.get(plan.dataset.name), runs=[("", result)], title=title,
                                  source=f"{plan.dataset.name}'s test set", filters_before=filters_before)
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
