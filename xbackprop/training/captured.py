"""Blocks of training steps replayed from a captured graph (CUDA graphs on CuPy and torch), never silently wrong.

The machinery here knows no array library: it keeps the training state in *static*
arrays (the parameters, the optimizer's state and the net's buffers, which the net
itself then holds), captures K steps once per block length through a backend's
:class:`Capturer` (see ``backend.capturer_for``), and launches them:

- an index buffer per block length is refilled in place with the block's minibatch rows
  (on the current stream, so it is ordered before the launch), the graph launched, and the
  K losses copied out of a static loss buffer before the next launch can overwrite them;
- a block of any length is split into the few captured lengths (:data:`GRAPH_LENGTHS`);
- the first launch of every graph is checked: the same K steps run eagerly on copies
  of the state from before the launch, and every loss, parameter, optimizer state and
  buffer must agree (see :func:`agrees`: within rounding, so that a graph whose matrix
  products round differently passes while a skipped, doubled or stale step fails); a
  disagreement keeps the eager results;
- hyperparameters are frozen into a graph (a Python number becomes a constant there), so
  they are fingerprinted at capture: a changed learning rate or weight decay captures again;
- any failure, in capture, in a launch or in the check, falls back to eager steps with one
  warning saying why, and training goes on from the last good state.

A *capturer* only has to record ``fn`` (which reads and writes the static arrays and
nothing else) and return a function that replays it; :class:`ReplayCapturer` does that
by calling ``fn`` again, which is how the machinery is tested without a GPU.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, Protocol

from array_api_compat import device

__all__ = ["Capturer", "ReplayCapturer", "CapturedSteps", "CaptureMismatch", "GRAPH_LENGTHS", "agrees"]

#: Block lengths captured, longest first: any block is a handful of launches of these.
GRAPH_LENGTHS = (64, 8, 1)


class Capturer(Protocol):
    """Records the device work of ``fn()`` once and returns a function that replays it. A capturer that holds
    resources also has ``close()``, which :meth:`CapturedSteps.close` calls once the run is over."""

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]: ...


class ReplayCapturer:
    """The stand-in for a GPU: "replaying" calls ``fn`` again over the same static arrays.

    It exercises everything a graph relies on (static buffers, in-place refills and
    copies, loss read-back, block splitting, checks and fallback) on any backend.
    """

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        return fn


class CaptureMismatch(RuntimeError):
    """A graph's first launch disagreed with the same steps run eagerly."""


class CapturedSteps:
    """K training steps per launch of a captured graph; same interface as the trainer's other steppers.

    Call with the device data and ``indices`` ``(K, batch)`` (K any length); returns the K
    losses ``(K,)``. ``make_eager`` builds the eager stepper used after a fallback;
    ``step`` is the pure training step (``trainer.make_train_step``).
    """

    runs_blocks = True
    kind = "captured"

    def __init__(self, net: Any, optimizer: Any, xp: Any, capturer: Capturer, step: Callable[..., Any],
                 make_eager: Callable[[], Any], *, lengths: tuple[int, ...] = GRAPH_LENGTHS) -> None:
        self.net, self.optimizer, self.xp, self.capturer = net, optimizer, xp, capturer
        self.step, self.make_eager, self.lengths = step, make_eager, tuple(sorted(lengths, reverse=True))
        if self.lengths[-1] != 1:
            raise ValueError(f"graph lengths must include 1 to cover any block, got {lengths}")
        state = optimizer.state or optimizer.init(net.params)
        # The static arrays: copies that only the graphs and the in-place refills below ever write.
        self.params = {key: _copy(xp, value) for key, value in net.params.items()}
        self.state = _tree_map(lambda value: _copy(xp, value), state)
        self.buffers = {key: _copy(xp, value) for key, value in net.buffers.items()}
        net.params.update(self.params)  # evaluation reads the statics; nothing else writes them
        net.buffers.update(self.buffers)
        self.graphs: dict[int, _Graph] = {}
        self.fingerprint = hyperparameters(net, optimizer)
        self.eager: Any = None
        self.fallback_reason: str | None = None

    def __call__(self, x_all: Any, t_all: Any, indices: Any) -> Any:
        xp = self.xp
        losses = []
        done = 0
        while done < indices.shape[0] and self.eager is None:
            length = next(n for n in self.lengths if n <= indices.shape[0] - done)
            try:
                if hyperparameters(self.net, self.optimizer) != self.fingerprint:
                    self.graphs.clear()  # frozen values changed: capture again
                    self.fingerprint = hyperparameters(self.net, self.optimizer)
                losses.append(self._launch(length, x_all, t_all, indices[done : done + length, :]))
                done += length
            except CaptureMismatch as exc:  # the eager results were kept: the block is done
                losses.append(exc.args[1])
                done += length
                self._fall_back(exc.args[0])
            except Exception as exc:  # capture or launch failed: statics as before the block (see _launch)
                self._fall_back(f"{type(exc).__name__}: {exc}")
        for row in range(done, indices.shape[0]):
            losses.append(xp.reshape(self.eager(x_all, t_all, indices[row, :]), (1,)))
        return xp.concat(losses) if len(losses) > 1 else losses[0]

    def finish(self) -> None:
        """The optimizer's state where the run ended (the parameters and buffers are the net's already)."""
        if self.eager is None:
            self.optimizer.state = self.state
        else:
            self.eager.finish()

    def close(self) -> None:
        """Give back the graphs and what the capturer holds (on CuPy: a cuBLAS handle, a stream, memory)."""
        self.graphs.clear()
        release = getattr(self.capturer, "close", None)
        if release is not None:
            release()

    def _fall_back(self, reason: str) -> None:
        warnings.warn(f"captured training steps fell back to eager ones: {reason}", RuntimeWarning, stacklevel=3)
        self.fallback_reason = reason
        self.close()
        self.optimizer.state = self.state
        self.eager = self.make_eager()

    def _launch(self, length: int, x_all: Any, t_all: Any, indices: Any) -> Any:
        graph = self.graphs.get(length)
        if graph is None:
            graph = self.graphs[length] = self._capture(length, x_all, t_all, indices.shape[1])
        if tuple(indices.shape) != tuple(graph.index.shape):
            raise ValueError(f"a block of shape {tuple(indices.shape)} for a graph of {tuple(graph.index.shape)}")
        graph.index[...] = indices  # refilled in place, on the current stream, before the launch
        before = self.snapshot()  # a few device copies per block: a failed launch leaves the state as it was
        try:
            graph.launch()
        except BaseException:
            self.restore(before)
            raise
        losses = _copy(self.xp, graph.losses)
        if not graph.checked:
            try:
                self._check_against_eager(before, x_all, t_all, indices, losses)
            except CaptureMismatch:
                raise  # the eager results are in place
            except BaseException:
                self.restore(before)  # an unchecked launch never counts
                raise
            graph.checked = True
        return losses

    def _capture(self, length: int, x_all: Any, t_all: Any, batch: int) -> _Graph:
        xp = self.xp
        index = xp.zeros((length, batch), dtype=xp.int64, device=device(x_all))
        losses = xp.zeros((length,), dtype=self.params[next(iter(self.params))].dtype, device=device(x_all))

        def steps() -> None:
            params, carried = self.params, (self.state, self.buffers)
            for k in range(length):
                params, carried, loss = self.step(params, carried, x_all, t_all, index[k, :])
                losses[k] = loss  # one by one: CuPy stacks more than 8 arrays through a pointer table from the host
            _write(self.params, params)
            _write(self.state, carried[0])
            _write(self.buffers, carried[1])

        before = self.snapshot()
        try:
            launch = self.capturer.capture(steps)
        finally:
            self.restore(before)  # a capturer's warm-up runs must not count as training
        return _Graph(index, losses, launch)

    def snapshot(self) -> tuple[Any, Any, Any]:
        """Copies of the static parameters, optimizer state and buffers (to :meth:`restore` later)."""
        xp = self.xp
        return ({k: _copy(xp, v) for k, v in self.params.items()}, _tree_map(lambda v: _copy(xp, v), self.state),
                {k: _copy(xp, v) for k, v in self.buffers.items()})

    def restore(self, saved: tuple[Any, Any, Any]) -> None:
        """Write a :meth:`snapshot` back into the static arrays, in place."""
        _write(self.params, saved[0])
        _write(self.state, saved[1])
        _write(self.buffers, saved[2])

    def _check_against_eager(self, before: tuple[Any, Any, Any], x_all: Any, t_all: Any, indices: Any,
                             losses: Any) -> None:
        """The same steps eagerly from ``before``; on any disagreement the eager results replace the graph's and
        :class:`CaptureMismatch` carries them out."""
        xp = self.xp
        params, carried = before[0], (before[1], before[2])
        eager_losses = []
        for k in range(indices.shape[0]):
            params, carried, loss = self.step(params, carried, x_all, t_all, indices[k, :])
            eager_losses.append(loss)
        expected = {"loss": xp.stack(eager_losses), **_flat("", params), **_flat("state", carried[0]),
                    **_flat("buffer", carried[1])}
        got = {"loss": losses, **_flat("", self.params), **_flat("state", self.state), **_flat("buffer", self.buffers)}
        start = {"loss": None, **_flat("", before[0]), **_flat("state", before[1]), **_flat("buffer", before[2])}
        for name, want in expected.items():
            if not agrees(xp, got[name], want, start[name], steps=indices.shape[0]):
                _write(self.params, params)
                _write(self.state, carried[0])
                _write(self.buffers, carried[1])
                raise CaptureMismatch(f"the first launch of the {indices.shape[0]}-step graph differs from eager "
                                      f"steps in {name} (beyond rounding)", expected["loss"])


class _Graph:
    """A captured block: its static index and loss buffers, and how to launch it."""

    def __init__(self, index: Any, losses: Any, launch: Callable[[], None]) -> None:
        self.index, self.losses, self.launch = index, losses, launch
        self.checked = False


def hyperparameters(net: Any, optimizer: Any) -> tuple[Any, ...]:
    """Every number a captured graph freezes: the optimizer's public numbers and the net's weight decay."""
    numbers = sorted((key, value) for key, value in vars(optimizer).items()
                     if not key.startswith("_") and isinstance(value, (int, float)) and not isinstance(value, bool))
    return (*numbers, ("weight_decay_lambda", getattr(net, "weight_decay_lambda", 0.0)),
            ("dropout_ratio", getattr(net, "dropout_ratio", None)))


def _copy(xp: Any, value: Any) -> Any:
    return xp.asarray(value, copy=True)


def _write(static: Any, new: Any) -> None:
    """Copy ``new`` into the arrays of ``static`` in place (dicts of arrays, nested)."""
    for key, value in static.items():
        if isinstance(value, dict):
            _write(value, new[key])
        elif value is not new[key]:
            value[...] = new[key]


def _tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    return {key: _tree_map(fn, value) for key, value in tree.items()} if isinstance(tree, dict) else fn(tree)


def _flat(prefix: str, tree: Any) -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else key
        flat.update(_flat(name, value) if isinstance(value, dict) else {name: value})
    return flat


def agrees(xp: Any, got: Any, want: Any, before: Any = None, *, steps: int = 1) -> bool:
    """Whether a graph's result ``got`` is the eager ``want`` up to rounding, after ``steps`` training steps.

    Another cuBLAS handle or algorithm rounds the products differently, and the difference
    grows over the steps, so elementwise tolerances near the dtype's resolution fail
    right graphs. What must fail is a wrong step: one skipped or doubled, a stale minibatch, a
    parameter not written back. So:

    - a state that moved from ``before`` (parameters, optimizer state, buffers): the
      difference's norm within a tenth of one step's share of the whole move,
      ``|got - want| <= |want - before| / (10 steps)``, plus ``4 steps eps |want|`` for the
      rounding of the values themselves; one step skipped or doubled moves it by about
      ``|want - before| / steps`` or more;
    - the losses (``before`` is ``None``): each within ``sqrt(eps)`` relative (absolute near
      zero); a stale or shifted minibatch changes a loss by far more;
    - non-finite values where, and as, the eager ones are; integer arrays exactly.
    """
    if tuple(got.shape) != tuple(want.shape):
        return False
    if not xp.isdtype(want.dtype, "real floating"):
        return bool(xp.all(got == want))
    finite = xp.isfinite(want)
    same_nonfinite = finite | (got == want) | (xp.isnan(got) & xp.isnan(want))
    if not bool(xp.all((xp.isfinite(got) == finite) & same_nonfinite)):
        return False
    eps = xp.finfo(want.dtype).eps
    diff = xp.abs(xp.where(finite, got - want, 0.0))
    if before is None:
        scale = xp.abs(xp.where(finite, want, 0.0))
        rtol = eps**0.5
        floor = rtol * 1e-3 * float(xp.max(scale)) if math.prod(want.shape) else 0.0
        return bool(xp.all(diff <= rtol * scale + floor))
    moved = xp.where(finite, want - before, 0.0)
    return _norm(xp, diff) <= _norm(xp, moved) / (10 * steps) + 4 * steps * eps * _norm(xp, xp.where(finite, want, 0.0))


def _norm(xp: Any, x: Any) -> float:
    """The Euclidean norm of all of ``x``'s elements, as a Python float (computed in float64 where it can be)."""
    wide = xp.astype(x, xp.float64) if hasattr(xp, "float64") else x
    return float(xp.sum(wide * wide)) ** 0.5
