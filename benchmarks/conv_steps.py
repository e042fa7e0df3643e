"""One SGD training step (batch draw included) of the book's SimpleConvNet (30 5x5 filters, pool, 100 hidden, 10
classes) on 28x28 images, batch 100, float32, in each implementation compared.

Every ``make_*`` returns a zero-argument callable that draws a minibatch of indices on the host, gathers the
images, computes the gradients and updates the parameters, and finishes all device work before it returns. All
start from the same weights (xbackprop's SimpleConvNet with seed 0), except the book's own code, which draws its
own. The book's code is not part of xbackprop: :func:`make_book` loads it from a checkout of
oreilly-japan/deep-learning-from-scratch named by ``XBACKPROP_BOOK`` (``None`` without one).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from xbackprop import SimpleConvNet, get_namespace
from xbackprop.backend import backend_name, resolve_device, synchronize
from xbackprop.optimizers import SGD
from xbackprop.training import make_gradient_step

LR = 0.01
BATCH = 100
#: Environment variable naming a checkout of the book's repository (its ch07/ and common/ folders).
BOOK_ENV = "XBACKPROP_BOOK"


def image_data(n: int = 10_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 images ``(n, 1, 28, 28)`` in [0, 1) and uint8 labels (the speed does not depend on them)."""
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n).astype(np.uint8)


def _net(xp: object, device: object = None) -> SimpleConvNet:
    return SimpleConvNet(xp=xp, device=device, dtype="float32", seed=0)


def make_xbackprop(backend: str, x_host: np.ndarray, t_host: np.ndarray, *,
                   device: str | None = None) -> Callable[[], None]:
    """xbackprop's SimpleConvNet and SGD through the trainer's own gradient step (one jitted program on JAX)."""
    xp = get_namespace(backend, strict=True)
    device = resolve_device(xp, device)
    x_all, t_all = xp.asarray(x_host, device=device), xp.asarray(t_host, device=device)
    net = _net(xp, device)
    gradient_step = make_gradient_step(net, xp)
    optimizer = SGD(lr=LR)
    rng = np.random.default_rng(1)

    def step() -> None:
        index = xp.asarray(rng.integers(0, x_host.shape[0], BATCH), device=device)
        grads, _, _ = gradient_step(net.params, net.buffers, x_all, t_all, index)
        optimizer.update(net.params, grads)
        synchronize(xp)

    step.backend = backend_name(xp)
    return step


def torch_simple_convnet(seed: int = 0, device: str = "cpu") -> object:
    """xbackprop's SimpleConvNet (seed ``seed``) as a PyTorch ``nn.Sequential`` of ``nn.Conv2d``, ``nn.MaxPool2d``
    and ``nn.Linear``, float32, holding the same weights: the same function from the same initialisation."""
    import torch

    init = SimpleConvNet(xp="numpy", dtype="float32", seed=seed).params
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 30, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(4320, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10)).to(device)
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(init["W1"])), model[0].bias.copy_(torch.from_numpy(init["b1"]))
        # pooling gives (N, C, H, W), flattened in that order by both
        model[4].weight.copy_(torch.from_numpy(np.ascontiguousarray(init["W2"].T)))
        model[4].bias.copy_(torch.from_numpy(init["b2"]))
        model[6].weight.copy_(torch.from_numpy(np.ascontiguousarray(init["W3"].T)))
        model[6].bias.copy_(torch.from_numpy(init["b3"]))
    return model


def make_torch_eager(x_host: np.ndarray, t_host: np.ndarray, device: str = "cpu") -> Callable[[], None]:
    """The same net in PyTorch (``nn.Conv2d``, ``nn.MaxPool2d``, ``nn.Linear``, autograd), float32, plain SGD."""
    import torch

    model = torch_simple_convnet(0, device)
    x_all = torch.from_numpy(x_host).to(device)
    t_all = torch.from_numpy(t_host.astype(np.int64)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    rng = np.random.default_rng(1)

    def step() -> None:
        index = torch.from_numpy(rng.integers(0, x_host.shape[0], BATCH)).to(device)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x_all[index]), t_all[index]).backward()
        optimizer.step()
        if device != "cpu":
            torch.cuda.synchronize()

    return step


def make_book(x_host: np.ndarray, t_host: np.ndarray) -> Callable[[], None] | None:
    """The book's own ``ch07/simple_convnet.py`` and ``common/optimizer.py`` SGD on NumPy, from the checkout
    ``XBACKPROP_BOOK`` names; ``None`` without one."""
    root = os.environ.get(BOOK_ENV)
    if not root:
        return None
    for folder in (Path(root), Path(root) / "ch07"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    np.random.seed(0)
    net = importlib.import_module("simple_convnet").SimpleConvNet()
    optimizer = importlib.import_module("common.optimizer").SGD(lr=LR)
    rng = np.random.default_rng(1)

    def step() -> None:
        batch_mask = rng.integers(0, x_host.shape[0], BATCH)
        grads = net.gradient(x_host[batch_mask], t_host[batch_mask])
        optimizer.update(net.params, grads)

    return step
