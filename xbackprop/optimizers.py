"""The book's chapter 6 optimizers, on any Array API namespace.

``update(params, grads)`` changes ``params`` (a dict of arrays) for the next step
with the book's ``params[key] -= step``: writable arrays are updated in place (no
new parameter array per step), and for immutable ones (JAX) Python falls back to
``params[key] = params[key] - step``, replacing the dict entry. The gradients are
never modified. State arrays live on the parameters' device.
"""

from __future__ import annotations

from typing import Any

from ._compat import namespace_of

__all__ = ["SGD", "Momentum", "AdaGrad", "Adam", "OPTIMIZERS"]


def _zeros_like(params: dict[str, Any]) -> dict[str, Any]:
    """Optimizer state: a zero array shaped, typed and placed like each parameter."""
    return {key: namespace_of(value).zeros_like(value) for key, value in params.items()}


class SGD:
    """``W -= lr * dW``. Default ``lr=0.01`` as in the book."""

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = lr

    def update(self, params: dict[str, Any], grads: dict[str, Any]) -> None:
        for key in params:
            params[key] -= self.lr * grads[key]


class Momentum:
    """``v = momentum * v - lr * dW; W += v``."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        self.lr = lr
        self.momentum = momentum
        self.v: dict[str, Any] | None = None

    def update(self, params: dict[str, Any], grads: dict[str, Any]) -> None:
        if self.v is None:
            self.v = _zeros_like(params)
        for key in params:
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.v[key]


class AdaGrad:
    """``h += dW * dW; W -= lr * dW / (sqrt(h) + 1e-7)``."""

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = lr
        self.h: dict[str, Any] | None = None

    def update(self, params: dict[str, Any], grads: dict[str, Any]) -> None:
        if self.h is None:
            self.h = _zeros_like(params)
        for key in params:
            xp = namespace_of(grads[key])
            self.h[key] = self.h[key] + grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (xp.sqrt(self.h[key]) + 1e-7)


class Adam:
    """Adam (Kingma & Ba) with the book's bias-corrected step size and ``eps = 1e-7``."""

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999) -> None:
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m: dict[str, Any] | None = None
        self.v: dict[str, Any] | None = None

    def update(self, params: dict[str, Any], grads: dict[str, Any]) -> None:
        if self.m is None:
            self.m = _zeros_like(params)
            self.v = _zeros_like(params)
        self.iter += 1
        lr_t = self.lr * (1.0 - self.beta2**self.iter) ** 0.5 / (1.0 - self.beta1**self.iter)
        for key in params:
            xp = namespace_of(grads[key])
            self.m[key] = self.m[key] + (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] = self.v[key] + (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (xp.sqrt(self.v[key]) + 1e-7)


#: Optimizer classes by the CLI's names.
OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adagrad": AdaGrad, "adam": Adam}
