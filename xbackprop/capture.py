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
  buffer must agree (float32 to 1e-5 relative, float64 to 1e-12); a disagreement keeps the
  eager results;
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

__all__ = ["Capturer", "ReplayCapturer", "CapturedSteps", "CaptureMismatch", "GRAPH_LENGTHS", "tolerance"]

#: Block lengths captured, longest first: any block is a handful of launches of these.
GRAPH_LENGTHS = (64, 8, 1)


class Capturer(Protocol):
    """Records the device work of ``fn()`` once and returns a function that replays it."""

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


def tolerance(dtype: Any, xp: Any) -> float:
    """Relative tolerance of the first-launch check: 1e-5 in float32, 1e-12 in float64."""
    return 1e-12 if dtype == xp.float64 else 1e-5


class CapturedSteps:
    """K training steps per launch of a captured graph; same interface as the trainer's other steppers.

    Call with the device data and ``indices`` ``(K, batch)`` (K any length); returns the K
    losses ``(K,)``. ``make_eager`` builds the eager stepper used after a fallback;
    ``step`` is the pure training step (``trainer.make_train_step``).
    """

    runs_blocks = True

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

    def _fall_back(self, reason: str) -> None:
        warnings.warn(f"captured training steps fell back to eager ones: {reason}", RuntimeWarning, stacklevel=3)
        self.fallback_reason = reason
        self.graphs.clear()
        self.optimizer.state = self.state
        self.eager = self.make_eager()

    def _launch(self, length: int, x_all: Any, t_all: Any, indices: Any) -> Any:
        graph = self.graphs.get(length)
        if graph is None:
            graph = self.graphs[length] = self._capture(length, x_all, t_all, indices.shape[1])
        if tuple(indices.shape) != tuple(graph.index.shape):
            raise ValueError(f"a block of shape {tuple(indices.shape)} for a graph of {tuple(graph.index.shape)}")
        graph.index[...] = indices  # refilled in place, on the current stream, before the launch
        before = self._snapshot()  # a few device copies per block: a failed launch leaves the state as it was
        try:
            graph.launch()
        except BaseException:
            self._restore(before)
            raise
        losses = _copy(self.xp, graph.losses)
        if not graph.checked:
            try:
                self._check_against_eager(before, x_all, t_all, indices, losses)
            except CaptureMismatch:
                raise  # the eager results are in place
            except BaseException:
                self._restore(before)  # an unchecked launch never counts
                raise
            graph.checked = True
        return losses

    def _capture(self, length: int, x_all: Any, t_all: Any, batch: int) -> _Graph:
        xp = self.xp
        index = xp.zeros((length, batch), dtype=xp.int64, device=device(x_all))
        losses = xp.zeros((length,), dtype=self.params[next(iter(self.params))].dtype, device=device(x_all))

        def steps() -> None:
            params, carried = self.params, (self.state, self.buffers)
            block_losses = []
            for k in range(length):
                params, carried, loss = self.step(params, carried, x_all, t_all, index[k, :])
                block_losses.append(loss)
            _write(self.params, params)
            _write(self.state, carried[0])
            _write(self.buffers, carried[1])
            losses[...] = xp.stack(block_losses)

        before = self._snapshot()
        try:
            launch = self.capturer.capture(steps)
        finally:
            self._restore(before)  # a capturer's warm-up runs must not count as training
        return _Graph(index, losses, launch)

    def _snapshot(self) -> tuple[Any, Any, Any]:
        xp = self.xp
        return ({k: _copy(xp, v) for k, v in self.params.items()}, _tree_map(lambda v: _copy(xp, v), self.state),
                {k: _copy(xp, v) for k, v in self.buffers.items()})

    def _restore(self, saved: tuple[Any, Any, Any]) -> None:
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
        for name, want in expected.items():
            if not _close(xp, got[name], want):
                _write(self.params, params)
                _write(self.state, carried[0])
                _write(self.buffers, carried[1])
                raise CaptureMismatch(f"the first launch of the {indices.shape[0]}-step graph differs from eager "
                                      f"steps in {name} (beyond {tolerance(want.dtype, xp):g} relative)",
                                      expected["loss"])


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


def _close(xp: Any, got: Any, want: Any) -> bool:
    """Every element within :func:`tolerance` relative of the eager value (absolute near zero), NaN where it is."""
    if tuple(got.shape) != tuple(want.shape):
        return False
    if not xp.isdtype(want.dtype, "real floating"):
        return bool(xp.all(got == want))
    rtol = tolerance(want.dtype, xp)
    scale = float(xp.max(xp.abs(want))) if math.prod(want.shape) else 0.0
    both_nan = xp.isnan(got) & xp.isnan(want)
    near = xp.abs(got - want) <= rtol * xp.abs(want) + rtol * scale * 1e-3
    return bool(xp.all(near | both_nan))
