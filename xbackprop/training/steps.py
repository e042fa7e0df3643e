"""How a run steps: eagerly, as compiled blocks (JAX), or as captured graphs (CuPy, torch on CUDA)."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from ..backend import capturer_for, compile_function, compile_steps
from .captured import CapturedSteps

#: How the trainer computes gradients: backpropagation, or central differences element by element
#: (the book's loop) or K perturbed copies per forward pass (see ``LayerNet.numerical_gradient``).
GRADIENT_METHODS = ("backprop", "numerical", "numerical-batched")


@contextlib.contextmanager
def _closing(steps: Any) -> Iterator[None]:
    """Whatever the steps hold (a capturer's graphs, handle and memory) is given back however the run ends."""
    try:
        yield
    finally:
        close = getattr(steps, "close", None)
        if close is not None:
            close()


class EagerSteps:
    """One training step per call: gradients (:func:`make_gradient_step`), then the optimizer's in-place ``update``.

    Call with the device data and the minibatch's row ``index`` ``(batch,)``; returns the step's loss.
    With ``ranks`` this is one rank of synchronous data-parallel training: every rank
    draws the same global batch, computes gradients on its shard of it, and applies the
    summed update; batch normalization uses each shard's own statistics, and the running
    statistics are averaged over the ranks at every step, so all ranks keep the same.
    """

    runs_blocks = False
    kind = "eager"

    def __init__(self, net: Any, optimizer: Any, xp: Any, *, batch_size: int, ranks: Any = None,
                 compile: bool = True, gradient: str = "backprop") -> None:
        self.net, self.optimizer, self.ranks = net, optimizer, ranks
        self.gradient_step = make_gradient_step(net, xp, compile=compile, method=gradient)
        self.shard = None if ranks is None else _shard(batch_size, ranks.context.rank, ranks.context.size)
        self.weight = 1.0 if ranks is None else (self.shard.stop - self.shard.start) / batch_size

    def __call__(self, x_all: Any, t_all: Any, index: Any) -> Any:
        if self.shard is not None:
            index = index[self.shard]
        grads, loss, buffers = self.gradient_step(self.net.params, self.net.buffers, x_all, t_all, index)
        if self.ranks is not None:  # the floating buffers (running statistics) are averaged with the gradients
            reduced, loss = self.ranks.allreduce({**grads, **buffers}, loss, weight=self.weight)
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


def make_steps(net: Any, optimizer: Any, xp: Any, *, batch_size: int, ranks: Any = None, compile: bool = True,
               gradient: str = "backprop", capturer: Any = None) -> EagerSteps | CompiledSteps | CapturedSteps:
    """How the run steps, when nothing prevents compiling (``compile``, no ``ranks``, backprop gradients):
    :class:`CompiledSteps` where the backend compiles loops (JAX), :class:`~xbackprop.training.captured.CapturedSteps`
    where it captures graphs (CuPy, torch on CUDA; ``capturer`` overrides, see ``backend.capturer_for``);
    otherwise, and always with ``compile=False``, :class:`EagerSteps`."""

    def eager() -> EagerSteps:
        return EagerSteps(net, optimizer, xp, batch_size=batch_size, ranks=ranks, compile=compile, gradient=gradient)

    if compile and ranks is None and gradient == "backprop":
        run = compile_steps(leaving_layers_as_found(make_train_step(net, optimizer, xp), net), xp)
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
    if not compile:
        return batch_gradient
    kept = leaving_layers_as_found(batch_gradient, net)
    compiled = compile_function(kept, xp)
    return batch_gradient if compiled is kept else compiled  # eager backends keep the book's layer state


def make_count(net: Any, xp: Any) -> Callable[..., Any] | None:
    """``net.count_rows`` compiled where the backend compiles whole functions (JAX), for ``net.count_correct(...,
    count=)``; ``None`` elsewhere (and for a net without ``count_rows``), where the net counts eagerly."""
    if not hasattr(net, "count_rows"):
        return None
    kept = leaving_layers_as_found(net.count_rows, net)
    compiled = compile_function(kept, xp)
    return None if compiled is kept else compiled


def leaving_layers_as_found(fn: Callable[..., Any], net: Any) -> Callable[..., Any]:
    """``fn``, a function of ``net``'s passes to be compiled, run inside :meth:`~xbackprop.layer_net.LayerNet.
    layers_kept`: tracing it leaves no tracer on the layers (a net without that method is run as it is)."""

    @functools.wraps(fn)
    def kept(*args: Any) -> Any:
        with getattr(net, "layers_kept", contextlib.nullcontext)():
            return fn(*args)

    return kept


def _shard(n: int, rank: int, size: int) -> slice:
    """Rows ``[start, stop)`` of ``n`` that rank ``rank`` of ``size`` owns (contiguous, sizes differ by at most 1)."""
    return slice(rank * n // size, (rank + 1) * n // size)
