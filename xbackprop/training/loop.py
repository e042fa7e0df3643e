"""Minibatch training as in the book's ``train_neuralnet.py``, kept on the device.

The dataset is moved to the device once. Minibatch indices are drawn on the host
with NumPy's ``Generator`` one epoch at a time, copied to the device in one go,
and the rows are gathered there with ``xp.take``. Losses stay on the device and
are read back only every ``log_interval`` steps (to update the progress bar and
to stop a run whose loss is no longer finite) and at each epoch's evaluation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import device

from ..backend import host_rng, joined, rows, to_numpy
from ..functions import namespace_of
from .device_data import DeviceData, _check_labels, training_targets
from .result import TrainResult
from .steps import GRADIENT_METHODS, _closing, _shard, make_count, make_steps

#: Where the training accuracy of an evaluation comes from: the whole training set, or the current minibatch.
TRAIN_ACCURACY_SOURCES = ("full", "batch")
#: How an epoch's minibatch rows are drawn: independently with replacement (the book's ``np.random.choice``), or
#: a fresh shuffle of the training set each epoch, every row once (PyTorch's ``DataLoader(shuffle=True)``).
SAMPLINGS = ("replacement", "shuffle")


#: What a diverging run does: stop at the first bad loss, or go on so the whole curve can be seen.
DIVERGENCE_POLICIES = ("stop", "continue")


#: Evaluations a run makes by default, at most (about): one per epoch unless epochs are many.
DEFAULT_EVALUATIONS = 20


def _check_choices(**chosen: str) -> None:
    choices = {"train_acc_source": TRAIN_ACCURACY_SOURCES, "divergence": DIVERGENCE_POLICIES, "sampling": SAMPLINGS,
               "gradient": GRADIENT_METHODS}
    for name, value in chosen.items():
        if value not in choices[name]:
            raise ValueError(f"{name} must be one of {choices[name]}, got {value!r}")


@dataclass(frozen=True)
class Schedule:
    """How long a run trains and how often it looks: ``iters`` minibatch steps of ``batch_size`` rows drawn
    from ``seed`` as ``sampling`` says (:data:`SAMPLINGS`; the book's ``"replacement"`` by default); losses
    read back every ``log_interval`` steps; accuracies evaluated every ``eval_interval`` steps (``None``:
    :func:`default_eval_interval`, every epoch as the book does unless that makes more than about 20
    evaluations), ``eval_batch_size`` rows at a time, the training accuracy over the whole training set
    (``train_acc_source="full"``) or the current minibatch (``"batch"``, as courses plot it).

    A loss that is not finite or exceeds ``divergence_factor`` times the first step's marks the run diverged
    (with the exact log-softmax a too-large learning rate shows as a blow-up, not the NaN of the book's
    ``log(y + 1e-7)``); ``divergence="stop"`` ends the run there, ``"continue"`` trains on so the diverging
    curves can be seen.
    """

    iters: int = 10_000
    batch_size: int = 100
    seed: int | None = None
    log_interval: int = 100
    eval_interval: int | None = None
    eval_batch_size: int = 10_000
    train_acc_source: str = "full"
    divergence_factor: float = 10.0
    divergence: str = "stop"
    sampling: str = "replacement"

    def __post_init__(self) -> None:
        _check_choices(train_acc_source=self.train_acc_source, divergence=self.divergence, sampling=self.sampling)
        if self.eval_interval is not None and self.eval_interval < 1:
            raise ValueError(f"eval_interval must be a positive number of steps, got {self.eval_interval}")


def train(
    net: Any, optimizer: Any, data: DeviceData, schedule: Schedule = Schedule(), *,
    on_evaluation: Callable[[dict[str, float]], None] | None = None, progress: Any = None, ranks: Any = None,
    compile: bool = True, gradient: str = "backprop", capturer: Any = None,
) -> TrainResult:
    """Train ``net`` with ``optimizer`` on ``data`` as ``schedule`` says (see :class:`Schedule`).

    Accuracies are evaluated after the first step, then every ``schedule.eval_interval`` steps and after the
    last; each evaluation is appended to ``history`` and passed to ``on_evaluation``; both are taken with the
    parameters after the step. ``progress`` is a tqdm-like bar (``update``, ``set_postfix``) or ``None``.

    ``ranks`` (a :class:`xbackprop.training.distributed.DistributedSync`, the MPI all-reduce) makes this one rank of
    synchronous data-parallel training (see :class:`~xbackprop.training.steps.EagerSteps`). ``compile=True``
    runs blocks of whole steps compiled where the backend can (JAX) or replayed from captured graphs
    (:class:`~xbackprop.training.captured.CapturedSteps`, CuPy and torch on CUDA, or ``capturer``), else step by step;
    ``compile=False`` runs every backend eagerly, for debugging. Either way the optimizer's ``state`` is left
    where the run ended. ``gradient`` is one of :data:`~xbackprop.training.steps.GRADIENT_METHODS`: numerical
    gradients cost 2P forward passes a step (small nets only).
    """
    _check_choices(gradient=gradient)
    xp, n_train, rng = namespace_of(data.x_train), data.x_train.shape[0], host_rng(schedule.seed)
    batch_size, iters = schedule.batch_size, schedule.iters
    iter_per_epoch = max(n_train // batch_size, 1)
    eval_interval = schedule.eval_interval or default_eval_interval(iters, n_train, batch_size)
    _check_labels(data, net.sizes[-1])  # once here, so the steps skip it
    steps = make_steps(net, optimizer, xp, batch_size=batch_size, ranks=ranks, compile=compile, gradient=gradient,
                       capturer=capturer)
    targets = training_targets(data, net.sizes[-1])
    result = TrainResult(batch_size=batch_size, train_acc_source=schedule.train_acc_source)
    unread = _UnreadLosses(schedule.divergence_factor, stop=schedule.divergence == "stop")

    count = make_count(net, xp) if compile else None  # JAX: every chunk of an evaluation one compiled program

    def evaluate(step: int) -> None:  # after step `step`; "batch" scores that step's minibatch
        batch = schedule.train_acc_source == "batch" and step > 0
        train_rows = _minibatches(epoch, (step - 1) % iter_per_epoch, 1, block=False) if batch else None
        _evaluate(net, data, result, step, schedule.eval_batch_size, on_evaluation, ranks, train_rows, count)

    i, start = 0, time.perf_counter()  # steps taken, and since when
    # The losses are checked for overflow here; NumPy's own warnings would only repeat it, once per operation.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), _closing(steps):
        while i < iters:
            if i % iter_per_epoch == 0:  # one host draw and one copy per epoch
                epoch = xp.asarray(epoch_rows(rng, n_train, iter_per_epoch, batch_size, schedule.sampling),
                                   device=device(data.x_train))
            row = i % iter_per_epoch
            n = _steps_until_event(i, iters, iter_per_epoch, eval_interval, schedule.log_interval - unread.count) \
                if steps.runs_blocks else 1
            unread.add(steps(data.x_train, targets, _minibatches(epoch, row, n, block=steps.runs_blocks)), n)
            i += n
            evaluating = (i - 1) % eval_interval == 0 or i == iters
            if (unread.count >= schedule.log_interval or evaluating) and not unread.read_into(result, progress):
                break
            if evaluating:
                evaluate(i)
        steps.finish()
    if not result.history or result.history[-1]["iter"] != result.steps_done:  # stopped early, or iters=0
        evaluate(result.steps_done)
    result.seconds = time.perf_counter() - start
    return result




def epoch_rows(rng: np.random.Generator, n_train: int, iters: int, batch_size: int, sampling: str) -> np.ndarray:
    """An epoch's minibatch rows ``(iters, batch_size)``, int64, drawn on the host from ``rng`` as ``sampling`` says
    (:data:`SAMPLINGS`). A shuffle shorter than the epoch (a set smaller than a batch) is followed by more."""
    if sampling == "replacement":
        return rng.integers(0, n_train, size=(iters, batch_size))
    needed = iters * batch_size
    shuffles = [rng.permutation(n_train) for _ in range(-(-needed // n_train))]
    return np.concatenate(shuffles)[:needed].reshape(iters, batch_size)


def _minibatches(epoch: Any, row: int, n: int, *, block: bool) -> Any:
    """Rows ``row`` to ``row + n`` of an epoch's table of minibatch rows ``(iters, batch)`` (read with
    :func:`~xbackprop.backend.rows`): ``(n, batch)`` for a block of steps, else one step's ``(batch,)``."""
    xp = namespace_of(epoch)
    taken = rows(epoch, row, row + n, xp=xp)
    return taken if block else xp.reshape(taken, (-1,))


def _steps_until_event(i: int, iters: int, iter_per_epoch: int, eval_interval: int, room: int) -> int:
    """Steps from step ``i`` up to the next evaluation, epoch end, loss read-back or the end of the run."""
    next_eval = -(-i // eval_interval) * eval_interval  # the first evaluated step at or after i
    epoch_end = (i // iter_per_epoch + 1) * iter_per_epoch
    return max(min(iters, epoch_end, next_eval + 1, i + max(room, 1)) - i, 1)


class _UnreadLosses:
    """Losses still on the device (0-D per eager step, 1-D per compiled block), read back together."""

    def __init__(self, divergence_factor: float, *, stop: bool) -> None:
        self.divergence_factor, self.stop = divergence_factor, stop
        self.arrays: list[Any] = []
        self.count = 0  # steps whose losses are in arrays

    def add(self, losses: Any, steps: int) -> None:
        self.arrays.append(losses)
        self.count += steps

    def read_into(self, result: TrainResult, progress: Any) -> bool:
        """Move the losses to ``result``; record the first divergence. Returns False when training must stop."""
        losses = to_numpy(joined(self.arrays)).astype(float)
        self.arrays.clear()
        self.count = 0
        limit = self.divergence_factor * (result.losses[0] if result.losses else losses[0])
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~(np.isfinite(losses) & (losses <= limit)))
        if bad.size and result.diverged_at is None:
            result.diverged_at = result.steps_done + int(bad[0]) + 1
            if self.stop:
                losses = losses[: bad[0] + 1]
        result.losses.extend(losses.tolist())
        if progress is not None:
            progress.update(len(losses))
            with np.errstate(invalid="ignore", over="ignore"):
                progress.set_postfix(loss=f"{losses.mean():.4f}")
        return not (self.stop and bad.size)


def _accuracies(net: Any, pairs: list[tuple[Any, Any]], eval_batch_size: int, ranks: Any,
                count: Callable[..., Any] | None = None) -> list[float]:
    """Accuracy on each ``(x, t)``, with one read-back for all of them.

    With ``ranks``, each rank scores its shard of every pair and the counts are summed.
    """
    counts = []
    for x, t in pairs:
        if ranks is not None:
            shard = _shard(x.shape[0], ranks.context.rank, ranks.context.size)
            x, t = rows(x, shard.start, shard.stop), rows(t, shard.start, shard.stop)
        compiled = {} if count is None else {"count": count}  # labels checked once, before training
        counts.append(net.count_correct(x, t, batch_size=eval_batch_size, check_labels=False, **compiled))
    correct = [int(c) for c in to_numpy(joined(counts))]
    if ranks is not None:
        correct = [ranks.sum_int(c) for c in correct]
    return [c / x.shape[0] for c, (x, _) in zip(correct, pairs)]


def _evaluate(
    net: Any, data: DeviceData, result: TrainResult, step: int, eval_batch_size: int,
    on_evaluation: Callable[[dict[str, float]], None] | None, ranks: Any = None, train_rows: Any = None,
    count: Callable[..., Any] | None = None,
) -> None:
    """Append an evaluation at ``step``; ``train_rows`` (device indices) limits the training accuracy to them."""
    since = result.history[-1]["iter"] if result.history else 0
    recent = result.losses[int(since) :] or result.losses[-1:]
    if train_rows is None:
        x_train, t_train = data.x_train, data.t_train
    else:
        xp = namespace_of(data.x_train)
        x_train, t_train = xp.take(data.x_train, train_rows, axis=0), xp.take(data.t_train, train_rows, axis=0)
    with np.errstate(invalid="ignore", over="ignore"):
        mean_loss = float(np.mean(recent)) if recent else float("nan")
    row = {
        "iter": step,
        "loss": mean_loss,
    }
    row["train_acc"], row["test_acc"] = _accuracies(
        net, [(x_train, t_train), (data.x_test, data.t_test)], eval_batch_size, ranks, count
    )
    result.history.append(row)
    if on_evaluation is not None:
        on_evaluation(row)


def default_eval_interval(iters: int, n_train: int, batch_size: int) -> int:
    """Steps between evaluations: one epoch (the book's), widened so a run makes about 20 at most."""
    iter_per_epoch = max(n_train // batch_size, 1)
    return max(iter_per_epoch, math.ceil(iters / DEFAULT_EVALUATIONS))


def epochs_to_iters(epochs: float, n_train: int, batch_size: int) -> int:
    """Steps for ``epochs`` passes over ``n_train`` rows in batches of ``batch_size``."""
    return max(math.ceil(epochs * n_train / batch_size), 1)
