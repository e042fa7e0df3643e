"""Cases shared by ``benchmarks/`` and ``python -m xbackprop.bench``: backprop against numerical gradients.

A case is a two-layer ReLU net of a given size on one backend, with a float64 batch
of random inputs and labels. ``backprop``, ``numerical`` (the book's loop) and
``numerical_batched`` (K perturbed copies per forward pass) return the gradient
dicts; all finish their device work before returning, so they can be timed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import backend_name, describe_device, get_namespace, host_rng, synchronize, to_numpy
from .initialization import parameter_count
from .timing import blas_info
from .two_layer_net import TwoLayerNet

#: Network sizes (input, hidden, output) from tiny to the book's 784-50-10.
SIZES = {
    "tiny": (8, 8, 4),
    "small": (20, 10, 5),
    "medium": (100, 50, 10),
    "book": (784, 50, 10),
    "wide": (784, 300, 10),
}
BATCHES = (3, 100)

# The element-by-element numerical gradient costs 2P forward passes; above LARGE_P it is
# timed on the fastest backends only, and above LOOP_MAX_P not at all (minutes a run),
# so that a full run stays within minutes. The batched one is timed everywhere.
LARGE_P = 10_000
LOOP_MAX_P = 50_000
LARGE_P_BACKENDS = ("numpy", "cupy")


def loop_is_timed(parameters: int, backend: str) -> bool:
    """Whether the book's element-by-element numerical gradient of ``parameters`` is timed on ``backend``
    (the batched one always is)."""
    return parameters <= LARGE_P or (backend in LARGE_P_BACKENDS and parameters <= LOOP_MAX_P)


@dataclass
class Case:
    """A net, a batch and the two ways of computing its gradient, on one backend."""

    name: str
    sizes: tuple[int, int, int]
    batch: int
    xp: Any
    net: TwoLayerNet
    x: Any
    t: Any

    @property
    def parameters(self) -> int:
        return parameter_count(self.sizes)

    def _synced(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        grads = fn()
        synchronize(self.xp)
        return grads

    def backprop(self) -> dict[str, Any]:
        return self._synced(lambda: self.net.gradient(self.x, self.t))

    def numerical(self) -> dict[str, Any]:
        return self._synced(lambda: self.net.numerical_gradient(self.x, self.t))

    def numerical_batched(self) -> dict[str, Any]:
        return self._synced(lambda: self.net.numerical_gradient(self.x, self.t, batch="auto"))

    def forward(self) -> Any:
        loss = self.net.loss(self.x, self.t)
        synchronize(self.xp)
        return loss

    def info(self) -> dict[str, Any]:
        return {
            "P": self.parameters,
            "batch": self.batch,
            "sizes": "-".join(map(str, self.sizes)),
            "backend": backend_name(self.xp),
            "device": describe_device(self.xp),
            "dtype": "float64",
            "blas": blas_info(),
        }


def make_case(name: str, batch: int, backend: str = "numpy", seed: int = 0) -> Case:
    """The case ``name`` (a key of :data:`SIZES`) with ``batch`` rows on ``backend``, in float64."""
    sizes = SIZES[name]
    xp = get_namespace(backend, strict=True)
    rng = host_rng(seed)
    net = TwoLayerNet(*sizes, weight_init_std=0.1, xp=xp, dtype="float64", seed=seed)
    x_host = rng.random((batch, sizes[0]))
    net.params["b1"] = xp.asarray(_biases_clear_of_kinks(x_host @ to_numpy(net.params["W1"]), rng), dtype=xp.float64)
    net.params["b2"] = xp.asarray(rng.uniform(0.05, 0.15, sizes[2]), dtype=xp.float64)
    x = xp.asarray(x_host, dtype=xp.float64)
    t = xp.asarray(rng.integers(0, sizes[2], batch))
    return Case(name, sizes, batch, xp, net, x, t)


def _biases_clear_of_kinks(products: np.ndarray, rng: np.random.Generator, margin: float = 1e-3) -> np.ndarray:
    """Hidden biases in [0.05, 0.15) that keep every pre-activation ``products + b`` at least ``margin`` from 0.

    A pre-activation within the step h of ReLU's kink makes one element's central
    difference no derivative at all (a relative error of percents, in the loop and the
    batched method alike); the cases compare methods, not kinks.
    """
    biases = rng.uniform(0.05, 0.15, products.shape[1])
    for unit in range(products.shape[1]):
        for _ in range(100):
            if np.abs(products[:, unit] + biases[unit]).min() >= margin:
                break
            biases[unit] = rng.uniform(0.05, 0.15)
    return biases
