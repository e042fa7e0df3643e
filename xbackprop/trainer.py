"""Minibatch training as in the book's ``train_neuralnet.py``, kept on the device.

The dataset is moved to the device once. Minibatch indices are drawn on the host
with NumPy's ``Generator`` one epoch at a time, copied to the device in one go,
and the rows are gathered there with ``xp.take``. Losses stay on the device and
are read back only every ``log_interval`` steps (to update the progress bar and
to stop a run whose loss is no longer finite) and at each epoch's evaluation.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from array_api_compat import device

from ._namespace import namespace_of
from .backend import capturer_for, compile_function, compile_steps, host_rng, to_numpy
from .capture import CapturedSteps
from .datasets import DataError, Dataset
from .functions import checked_labels, one_hot

__all__ = [
    "DeviceData",
    "TrainResult",
    "to_device",
    "training_targets",
    "train",
    "make_gradient_step",
    "make_steps",
    "EagerSteps",
    "CompiledSteps",
    "make_train_step",
    "epochs_to_iters",
    "default_eval_interval",
    "TRAIN_ACCURACY_SOURCES",
    "GRADIENT_METHODS",
    "DIVERGENCE_POLICIES",
]

#: Where the training accuracy of an evaluation comes from: the whole training set, or the current minibatch.
TRAIN_ACCURACY_SOURCES = ("full", "batch")
#: How the trainer computes gradients: backpropagation, or central differences element by element
#: (the book's loop) or K perturbed copies per forward pass (see ``LayerNet.numerical_gradient``).
GRADIENT_METHODS = ("backprop", "numerical", "numerical-batched")
#: What a diverging run does: stop at the first bad loss, or go on so the whole curve can be seen.
DIVERGENCE_POLICIES = ("stop", "continue")
#: Evaluations a run makes by default, at most (about): one per epoch unless epochs are many.
DEFAULT_EVALUATIONS = 20


@dataclass(frozen=True)
class DeviceData:
    """A dataset on the device: ``x_*`` ``(N, D)`` floats in ``[0, 1]``, ``t_*`` ``(N,)`` uint8 labels."""

    x_train: Any
    t_train: Any
    x_test: Any
    t_test: Any
    num_classes: int


def to_device(dataset: Dataset, xp: Any, *, device: Any = None, dtype: Any = None) -> DeviceData:
    """Copy a host :class:`Dataset` to ``xp`` once: pixels flattened and scaled to ``[0, 1]`` in ``dtype``."""
    dtype = xp.float32 if dtype is None else dtype

    def images(x: np.ndarray) -> Any:
        # uint8 crosses to the device (4x less traffic than floats); the scaling happens there.
        pixels = xp.asarray(np.ascontiguousarray(x.reshape(len(x), -1)), device=device)
        return xp.astype(pixels, dtype) / dataset.max_value

    def labels(t: np.ndarray) -> Any:
        return xp.asarray(np.ascontiguousarray(t), device=device)

    return DeviceData(
        images(dataset.x_train), labels(dataset.t_train), images(dataset.x_test), labels(dataset.t_test),
        dataset.num_classes,
    )


@dataclass
class TrainResult:
    """What a run did: ``history`` rows ``{iter, loss, train_acc, test_acc}`` at each evaluation,
    ``losses`` (every step's minibatch loss), ``diverged_at`` (the first step whose loss
    was not finite or blew up, or ``None``) and ``train_acc_source`` (``"full"`` or ``"batch"``)."""

    batch_size: int
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    diverged_at: int | None = None
    train_acc_source: str = "full"

    @property
    def final_train_acc(self) -> float:
        return self.history[-1]["train_acc"] if self.history else float("nan")

    @property
    def final_test_acc(self) -> float:
        return self.history[-1]["test_acc"] if self.history else float("nan")

    @property
    def steps_done(self) -> int:
        return len(self.losses)

    @property
    def samples_per_s(self) -> float:
        return self.steps_done * self.batch_size / self.seconds if self.seconds > 0 else float("nan")

    def _repr_png_(self) -> bytes | None:
        """The run's accuracy and loss curves, for Jupyter (needs matplotlib; ``None`` without it)."""
        try:
            from .plotting import png_bytes, results_figure

            return png_bytes(results_figure([(f"{self.steps_done} iterations, batch {self.batch_size}", self)]))
        except ImportError:
            return None


def train(
    net: Any, optimizer: Any, data: DeviceData, *, iters: int = 10_000, batch_size: int = 100,
    seed: int | None = None, log_interval: int = 100, eval_batch_size: int = 10_000, eval_interval: int | None = None,
    train_acc_source: str = "full", on_epoch: Callable[[dict[str, float]], None] | None = None, progress: Any = None,
    divergence_factor: float = 10.0, divergence: str = "stop", sync: Any = None, compile: bool = True,
    gradient: str = "backprop", capturer: Any = None,
) -> TrainResult:
    """Train ``net`` with ``optimizer`` for ``iters`` minibatch steps of ``batch_size`` rows.

    Accuracies are evaluated after the first step, then every ``eval_interval`` steps
    (default :func:`default_eval_interval`: every epoch, as the book does, unless that
    makes more than about 20 evaluations) and after the last; each evaluation is appended
    to ``history`` and passed to ``on_epoch``. The training accuracy is over the whole
    training set (``train_acc_source="full"``) or the current minibatch (``"batch"``, as
    courses plot it); both are taken with the parameters after the step. ``progress`` is
    a tqdm-like bar (``update``, ``set_postfix``) or ``None``.

    A loss that is not finite or exceeds ``divergence_factor`` times the first step's
    sets ``diverged_at`` (with the exact log-softmax a too-large learning rate shows as a
    blow-up, not the NaN of the book's ``log(y + 1e-7)``); ``divergence="stop"`` ends the
    run there, ``"continue"`` trains on so the diverging curves can be seen.

    ``sync`` (a :class:`xbackprop.distributed.DistributedSync`) makes this one rank of
    synchronous data-parallel training (see :class:`EagerSteps`). ``compile=True`` runs
    blocks of whole steps compiled where the backend can (:class:`CompiledSteps`, JAX) or
    replayed from captured graphs (:class:`~xbackprop.capture.CapturedSteps`, CuPy and torch
    on CUDA, or ``capturer``), else step by step; ``compile=False`` runs every backend
    eagerly, for debugging. Either way
    the optimizer's ``state`` is left where the run ended. ``gradient`` is one of
    :data:`GRADIENT_METHODS`: numerical gradients cost 2P forward passes a step (small nets only).
    """
    _check_choices(train_acc_source=train_acc_source, divergence=divergence, gradient=gradient)
    xp = namespace_of(data.x_train)
    n_train = data.x_train.shape[0]
    iter_per_epoch = max(n_train // batch_size, 1)
    if eval_interval is None:
        eval_interval = default_eval_interval(iters, n_train, batch_size)
    elif eval_interval < 1:
        raise ValueError(f"eval_interval must be a positive number of steps, got {eval_interval}")
    rng = host_rng(seed)
    _check_labels(data, net.sizes[-1])  # once here, so the steps skip it
    steps = make_steps(net, optimizer, xp, batch_size=batch_size, sync=sync, compile=compile, gradient=gradient,
                       capturer=capturer)
    targets = training_targets(data, net.sizes[-1])
    result = TrainResult(batch_size=batch_size, train_acc_source=train_acc_source)
    unread = _UnreadLosses(xp, divergence_factor, stop=divergence == "stop")
    i = 0  # steps taken
    start = time.perf_counter()
    # The losses are checked for overflow here; NumPy's own warnings would only repeat it, once per operation.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), _closing(steps):
        while i < iters:
            if i % iter_per_epoch == 0:  # one host draw and one copy per epoch
                epoch = xp.asarray(rng.integers(0, n_train, size=(iter_per_epoch, batch_size)),
                                   device=device(data.x_train))
            row = i % iter_per_epoch
            n = _steps_until_event(i, iters, iter_per_epoch, eval_interval, log_interval - unread.count) \
                if steps.runs_blocks else 1
            rows = epoch[row : row + n, :] if steps.runs_blocks else epoch[row, :]
            unread.add(steps(data.x_train, targets, rows), n)
            i += n
            evaluate = (i - 1) % eval_interval == 0 or i == iters
            if (unread.count >= log_interval or evaluate) and not unread.read_into(result, progress):
                break
            if evaluate:
                train_rows = epoch[(i - 1) % iter_per_epoch, :] if train_acc_source == "batch" else None
                _evaluate(net, data, result, i, eval_batch_size, on_epoch, sync, train_rows)
        steps.finish()
    if not result.history or result.history[-1]["iter"] != result.steps_done:  # stopped early, or iters=0
        last_batch = epoch[(result.steps_done - 1) % iter_per_epoch, :] if iters else None
        train_rows = last_batch if train_acc_source == "batch" else None
        _evaluate(net, data, result, result.steps_done, eval_batch_size, on_epoch, sync, train_rows)
    result.seconds = time.perf_counter() - start
    return result


@contextlib.contextmanager
def _closing(steps: Any) -> Iterator[None]:
    """Whatever the steps hold (a capturer's graphs, handle and memory) is given back however the run ends."""
    try:
        yield
    finally:
        close = getattr(steps, "close", None)
        if close is not None:
            close()


def training_targets(data: DeviceData, num_outputs: int) -> Any:
    """What each step gathers its labels from: one-hot rows ``(N, num_outputs)`` in the images' dtype, made
    once (as the book's ``load_mnist(one_hot_label=True)``), so no step builds them; the ``(N,)`` labels
    themselves where one-hot rows would take more memory than the images (C > D)."""
    if num_outputs > data.x_train.shape[1]:
        return data.t_train
    return one_hot(data.t_train, num_outputs, dtype=data.x_train.dtype)


def _check_choices(**chosen: str) -> None:
    choices = {"train_acc_source": TRAIN_ACCURACY_SOURCES, "divergence": DIVERGENCE_POLICIES,
               "gradient": GRADIENT_METHODS}
    for name, value in chosen.items():
        if value not in choices[name]:
            raise ValueError(f"{name} must be one of {choices[name]}, got {value!r}")


class EagerSteps:
    """One training step per call: gradients (:func:`make_gradient_step`), then the optimizer's in-place ``update``.

    Call with the device data and the minibatch's row ``index`` ``(batch,)``; returns the step's loss.
    With ``sync`` this is one rank of synchronous data-parallel training: every rank
    draws the same global batch, computes gradients on its shard of it, and applies the
    summed update; batch normalization uses each shard's own statistics, and the running
    statistics are averaged over the ranks at every step, so all ranks keep the same.
    """

    runs_blocks = False
    kind = "eager"

    def __init__(self, net: Any, optimizer: Any, xp: Any, *, batch_size: int, sync: Any = None,
                 compile: bool = True, gradient: str = "backprop") -> None:
        self.net, self.optimizer, self.sync = net, optimizer, sync
        self.gradient_step = make_gradient_step(net, xp, compile=compile, method=gradient)
        self.shard = None if sync is None else _shard(batch_size, sync.context.rank, sync.context.size)
        self.weight = 1.0 if sync is None else (self.shard.stop - self.shard.start) / batch_size

    def __call__(self, x_all: Any, t_all: Any, index: Any) -> Any:
        if self.shard is not None:
            index = index[self.shard]
        grads, loss, buffers = self.gradient_step(self.net.params, self.net.buffers, x_all, t_all, index)
        if self.sync is not None:  # the floating buffers (running statistics) are averaged with the gradients
            reduced, loss = self.sync.allreduce({**grads, **buffers}, loss, weight=self.weight)
            grads = {key: reduced[key] for key in grads}
            buffers = {key: reduced.get(key, value) for key, value in buffers.items()}
        self.net.buffers.update(buffers)
        self.optimizer.update(self.net.params, grads)
        return loss

    def finish(self) -> None:
        """Nothing to hand back: the parameters and the optimizer's state were updated in place."""


class CompiledSteps:
    """A block of training steps per call, compiled (:func:`xbackprop.backend.compile_steps`: JAX's scan).

    Call with the device data and ``indices`` ``(K, batch)``; returns the K losses. The
    optimizer's state and the net's buffers travel with the parameters; the state is
    handed back by :meth:`finish`.
    """

    runs_blocks = True
    kind = "compiled"

    def __init__(self, net: Any, optimizer: Any, run: Callable[..., Any]) -> None:
        self.net, self.optimizer, self.run = net, optimizer, run
        self.state = optimizer.state or optimizer.init(net.params)

    def __call__(self, x_all: Any, t_all: Any, indices: Any) -> Any:
        carried = (self.state, dict(self.net.buffers))
        params, (self.state, buffers), losses = self.run(dict(self.net.params), carried, x_all, t_all, indices)
        self.net.params.update(params)
        self.net.buffers.update(buffers)
        return losses

    def finish(self) -> None:
        self.optimizer.state = self.state


def make_steps(net: Any, optimizer: Any, xp: Any, *, batch_size: int, sync: Any = None, compile: bool = True,
               gradient: str = "backprop", capturer: Any = None) -> EagerSteps | CompiledSteps | CapturedSteps:
    """How the run steps, when nothing prevents compiling (``compile``, no ``sync``, backprop gradients):
    :class:`CompiledSteps` where the backend compiles loops (JAX), :class:`~xbackprop.capture.CapturedSteps`
    where it captures graphs (CuPy, torch on CUDA; ``capturer`` overrides, see ``backend.capturer_for``);
    otherwise, and always with ``compile=False``, :class:`EagerSteps`."""

    def eager() -> EagerSteps:
        return EagerSteps(net, optimizer, xp, batch_size=batch_size, sync=sync, compile=compile, gradient=gradient)

    if compile and sync is None and gradient == "backprop":
        run = compile_steps(make_train_step(net, optimizer, xp), xp)
        if run is not None:
            return CompiledSteps(net, optimizer, run)
        if capturer is None:
            try:
                capturer = capturer_for(xp, next(iter(net.params.values())))
            except ValueError:  # XBACKPROP_CAPTURE names no mode: the user's mistake, not the machine's
                raise
            except Exception as exc:  # a capturer that cannot even be set up (a cuBLAS library not found, say)
                warnings.warn(f"captured training steps are unavailable ({type(exc).__name__}: {exc}); stepping "
                              "eagerly", RuntimeWarning, stacklevel=2)
        if capturer is not None:
            return CapturedSteps(net, optimizer, xp, capturer, make_train_step(net, optimizer, xp), eager)
    return eager()


def _steps_until_event(i: int, iters: int, iter_per_epoch: int, eval_interval: int, room: int) -> int:
    """Steps from step ``i`` up to the next evaluation, epoch end, loss read-back or the end of the run."""
    next_eval = -(-i // eval_interval) * eval_interval  # the first evaluated step at or after i
    epoch_end = (i // iter_per_epoch + 1) * iter_per_epoch
    return max(min(iters, epoch_end, next_eval + 1, i + max(room, 1)) - i, 1)


def make_train_step(net: Any, optimizer: Any, xp: Any) -> Callable[..., tuple[dict[str, Any], Any, Any]]:
    """``(params, (state, buffers), x_all, t_all, index) -> (params, (state, buffers), loss)``: one whole
    training step, pure.

    Gathers the minibatch on the device, backpropagates it (moving the net's buffers,
    such as running statistics, along) and applies the optimizer's rule
    (:meth:`~xbackprop.optimizers.Optimizer.apply`); nothing passed in is modified, so
    it can be compiled (see :func:`xbackprop.backend.compile_steps`). Labels are not
    checked here (the trainer checks the dataset once).
    """

    def train_step(params: dict[str, Any], carried: Any, x_all: Any, t_all: Any, index: Any) -> tuple[Any, Any, Any]:
        state, buffers = carried
        x, t = xp.take(x_all, index, axis=0), xp.take(t_all, index, axis=0)
        loss, grads, buffers = net.loss_and_gradient(x, t, params, check_labels=False, buffers=buffers)
        params, state = optimizer.apply(params, grads, state)
        return params, (state, buffers), loss

    return train_step


def make_gradient_step(
    net: Any, xp: Any, *, compile: bool = True, method: str = "backprop"
) -> Callable[[dict[str, Any], dict[str, Any], Any, Any, Any], tuple[dict[str, Any], Any, dict[str, Any]]]:
    """``(params, buffers, x_all, t_all, index) -> (grads, loss, buffers)``: gather a minibatch on the device and
    backpropagate it (or, with ``method="numerical"`` or ``"numerical-batched"``, differentiate it numerically,
    never compiled).

    A pure function of its arguments, so backends that compile whole functions
    (JAX) run it as one program (see :func:`xbackprop.backend.compile_function`).
    Labels are not checked here (the trainer checks the dataset once).
    """

    def batch_gradient(params: dict[str, Any], buffers: dict[str, Any], x_all: Any, t_all: Any,
                       index: Any) -> tuple[dict[str, Any], Any, dict[str, Any]]:
        x, t = xp.take(x_all, index, axis=0), xp.take(t_all, index, axis=0)
        loss, grads, buffers = net.loss_and_gradient(x, t, params, check_labels=False, buffers=buffers)
        return grads, loss, buffers

    def numerical_gradient(params: dict[str, Any], buffers: dict[str, Any], x_all: Any, t_all: Any,
                           index: Any) -> tuple[dict[str, Any], Any, dict[str, Any]]:
        x, t = xp.take(x_all, index, axis=0), xp.take(t_all, index, axis=0)
        batch = "auto" if method == "numerical-batched" else None
        grads = net.numerical_gradient(x, t, params, batch=batch, buffers=buffers)
        loss, _, buffers = net.loss_and_gradient(x, t, params, check_labels=False, buffers=buffers)  # P is small
        return grads, loss, buffers

    if method != "backprop":
        return numerical_gradient
    return compile_function(batch_gradient, xp) if compile else batch_gradient


def _check_labels(data: DeviceData, num_outputs: int) -> None:
    for t in (data.t_train, data.t_test):
        try:
            checked_labels(t, t.shape[0], num_outputs, who=f"a net with {num_outputs} outputs")
        except ValueError as error:
            raise DataError(str(error)) from None


class _UnreadLosses:
    """Losses still on the device (0-D per eager step, 1-D per compiled block), read back together."""

    def __init__(self, xp: Any, divergence_factor: float, *, stop: bool) -> None:
        self.xp, self.divergence_factor, self.stop = xp, divergence_factor, stop
        self.arrays: list[Any] = []
        self.count = 0  # steps whose losses are in arrays

    def add(self, losses: Any, steps: int) -> None:
        self.arrays.append(losses)
        self.count += steps

    def read_into(self, result: TrainResult, progress: Any) -> bool:
        """Move the losses to ``result``; record the first divergence. Returns False when training must stop."""
        xp = self.xp
        losses = to_numpy(xp.concat([xp.reshape(loss, (-1,)) for loss in self.arrays])).astype(float)
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


def _shard(n: int, rank: int, size: int) -> slice:
    """Rows ``[start, stop)`` of ``n`` that rank ``rank`` of ``size`` owns (contiguous, sizes differ by at most 1)."""
    return slice(rank * n // size, (rank + 1) * n // size)


def _accuracies(net: Any, pairs: list[tuple[Any, Any]], eval_batch_size: int, sync: Any) -> list[float]:
    """Accuracy on each ``(x, t)``, with one read-back for all of them.

    With ``sync``, each rank scores its shard of every pair and the counts are summed.
    """
    xp = namespace_of(pairs[0][0])
    counts = []
    for x, t in pairs:
        if sync is not None:
            rows = _shard(x.shape[0], sync.context.rank, sync.context.size)
            x, t = x[rows, ...], t[rows]
        counts.append(net.count_correct(x, t, batch_size=eval_batch_size, check_labels=False))  # checked once
    correct = [int(c) for c in to_numpy(xp.stack(counts))]
    if sync is not None:
        correct = [sync.sum_int(c) for c in correct]
    return [c / x.shape[0] for c, (x, _) in zip(correct, pairs)]


def _evaluate(
    net: Any, data: DeviceData, result: TrainResult, step: int, eval_batch_size: int,
    on_epoch: Callable[[dict[str, float]], None] | None, sync: Any = None, train_rows: Any = None,
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
        net, [(x_train, t_train), (data.x_test, data.t_test)], eval_batch_size, sync
    )
    result.history.append(row)
    if on_epoch is not None:
        on_epoch(row)


def default_eval_interval(iters: int, n_train: int, batch_size: int) -> int:
    """Steps between evaluations: one epoch (the book's), widened so a run makes about 20 at most."""
    iter_per_epoch = max(n_train // batch_size, 1)
    return max(iter_per_epoch, math.ceil(iters / DEFAULT_EVALUATIONS))


def epochs_to_iters(epochs: float, n_train: int, batch_size: int) -> int:
    """Steps for ``epochs`` passes over ``n_train`` rows in batches of ``batch_size``."""
    return max(math.ceil(epochs * n_train / batch_size), 1)
