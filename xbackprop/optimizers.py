"""The book's chapter 6 optimizers, on any Array API namespace.

Each optimizer writes its rule once, as a pure ``step(grads, state) -> (steps, state)``
that says how far each parameter moves. Two ways to use it:

- ``update(params, grads)``, the book's: ``params[key] -= step`` for every parameter,
  in place where the arrays are writable (no new parameter array per step); for
  immutable ones (JAX) Python falls back to ``params[key] = params[key] - step``,
  replacing the dict entry. The optimizer keeps its state between calls.
- ``apply(params, grads, state) -> (params, state)``, pure: new arrays, nothing
  modified, the state passed in and out (``init(params)`` makes the first one), so a
  whole training step can be compiled (``jax.jit``) or captured.

The gradients are never modified. State arrays live on the parameters' device.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device, is_lazy_array

from .functions import namespace_of

__all__ = ["Optimizer", "SGD", "Momentum", "AdaGrad", "Adam", "OPTIMIZERS"]

State = dict[str, Any]


def _zeros_like(params: dict[str, Any]) -> dict[str, Any]:
    """Optimizer state: a zero array shaped, typed and placed like each parameter."""
    return {key: namespace_of(value).zeros_like(value) for key, value in params.items()}


def _check_keys(params: dict[str, Any], grads: dict[str, Any]) -> None:
    """``ValueError`` naming the keys where ``params`` and ``grads`` differ or their shapes do, ``TypeError`` for
    a value that is no array (a KeyError, AttributeError or broadcast error deep inside otherwise)."""
    if params.keys() != grads.keys():
        missing, extra = sorted(set(params) - set(grads)), sorted(set(grads) - set(params))
        said = [f"grads lack {', '.join(missing)}"] if missing else []
        said += [f"grads hold {', '.join(extra)}, which params do not"] if extra else []
        raise ValueError(f"{'; '.join(said)}: an optimizer moves each parameter by its own gradient")
    for key, value in params.items():
        for table, array in (("params", value), ("grads", grads[key])):
            if not hasattr(array, "shape"):
                raise TypeError(f"{table}[{key!r}] is a {type(array).__name__}, not an array")
        if tuple(value.shape) != tuple(grads[key].shape):
            raise ValueError(f"grads[{key!r}] has shape {tuple(grads[key].shape)}, params[{key!r}] "
                             f"{tuple(value.shape)}")


class Optimizer:
    """The two ways to take a step; subclasses define ``init`` and ``step``."""

    lr: float

    def __init__(self) -> None:
        self.state: State | None = None

    def constant(self, value: float, like: Any) -> Any:
        """``value`` as a 0-D array of ``like``'s dtype on its device, made once and kept (``value`` is a
        hyperparameter such as ``self.lr``), or ``value`` itself where ``like`` is traced (``jax.jit``).

        Multiplying by a kept 0-D array creates one array per parameter and step where a
        Python number creates two on some backends (the number is promoted first), and on a
        GPU it is never copied to the device again. A changed ``self.lr`` makes a new one.
        """
        kept = self.__dict__.setdefault("_constants", {})  # also for subclasses that skip __init__
        kind = ("lazy", type(like))  # a tracer's type differs from a concrete array's; asked once per type
        if kind not in kept:  # asked of a 0-D array, which array-api-compat reads without indexing (see backend.rows)
            kept[kind] = is_lazy_array(namespace_of(like).sum(like))
        if kept[kind]:
            return value
        where = getattr(like, "device", None)  # the standard's attribute: cheaper than asking array-api-compat
        if where is None or callable(where):
            where = device(like)
        # Devices are compared, never hashed: CuPy's cannot be (cupy.cuda.Device has no __hash__).
        made_on = kept.setdefault((value, like.dtype), [])
        for place, made in made_on:
            if place == where:
                return made
        made = namespace_of(like).asarray(value, dtype=like.dtype, device=where)
        made_on.append((where, made))
        return made

    def init(self, params: dict[str, Any]) -> State:
        """The state before the first step."""
        return {}

    def step(self, grads: dict[str, Any], state: State) -> tuple[dict[str, Any], State]:
        """How far each parameter moves (subtracted from it), and the next state. Pure."""
        raise NotImplementedError

    def update(self, params: dict[str, Any], grads: dict[str, Any]) -> None:
        """The book's ``update``: move ``params`` (in place where possible) and keep the state."""
        _check_keys(params, grads)
        if self.state is None:
            self.state = self.init(params)
        steps, self.state = self.step(grads, self.state)
        for key in params:
            params[key] -= steps[key]

    def apply(self, params: dict[str, Any], grads: dict[str, Any], state: State) -> tuple[dict[str, Any], State]:
        """New parameters and state after one step; nothing passed in is modified."""
        _check_keys(params, grads)
        steps, state = self.step(grads, state)
        return {key: params[key] - steps[key] for key in params}, state


class SGD(Optimizer):
    """``W -= lr * dW``. Default ``lr=0.01`` as in the book."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__()
        self.lr = lr

    def step(self, grads: dict[str, Any], state: State) -> tuple[dict[str, Any], State]:
        return {key: self.constant(self.lr, g) * g for key, g in grads.items()}, state


class Momentum(Optimizer):
    """``v = momentum * v - lr * dW; W += v``."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__()
        self.lr = lr
        self.momentum = momentum

    def init(self, params: dict[str, Any]) -> State:
        return {"v": _zeros_like(params)}

    def step(self, grads: dict[str, Any], state: State) -> tuple[dict[str, Any], State]:
        v = {key: self.momentum * state["v"][key] - self.lr * g for key, g in grads.items()}
        return {key: -value for key, value in v.items()}, {"v": v}


class AdaGrad(Optimizer):
    """``h += dW * dW; W -= lr * dW / (sqrt(h) + 1e-7)``."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__()
        self.lr = lr

    def init(self, params: dict[str, Any]) -> State:
        return {"h": _zeros_like(params)}

    def step(self, grads: dict[str, Any], state: State) -> tuple[dict[str, Any], State]:
        h = {key: state["h"][key] + g * g for key, g in grads.items()}
        steps = {key: self.lr * g / (namespace_of(g).sqrt(h[key]) + 1e-7) for key, g in grads.items()}
        return steps, {"h": h}


class Adam(Optimizer):
    """Adam (Kingma & Ba) with the book's bias-corrected step size and ``eps = 1e-7``.

    The step count lives in the state as a 0-D array of the parameters' dtype, so a
    compiled step can carry it.
    """

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999) -> None:
        super().__init__()
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2

    def init(self, params: dict[str, Any]) -> State:
        first = next(iter(params.values()))
        count = namespace_of(first).zeros((), dtype=first.dtype, device=device(first))
        return {"iter": count, "m": _zeros_like(params), "v": _zeros_like(params)}

    def step(self, grads: dict[str, Any], state: State) -> tuple[dict[str, Any], State]:
        count = state["iter"] + 1
        xp = namespace_of(count)
        lr_t = self.lr * xp.sqrt(1.0 - self.beta2**count) / (1.0 - self.beta1**count)
        m = {key: state["m"][key] + (1 - self.beta1) * (g - state["m"][key]) for key, g in grads.items()}
        v = {key: state["v"][key] + (1 - self.beta2) * (g**2 - state["v"][key]) for key, g in grads.items()}
        steps = {key: lr_t * m[key] / (xp.sqrt(v[key]) + 1e-7) for key in grads}
        return steps, {"iter": count, "m": m, "v": v}


#: Optimizer classes by the CLI's names.
OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adagrad": AdaGrad, "adam": Adam}
