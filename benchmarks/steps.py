"""One SGD training step (batch draw included) of a 784-50-10 ReLU net, in each implementation compared.

Every ``make_*`` returns a zero-argument callable that draws a minibatch of
indices on the host, gathers the rows, computes the gradients and updates the
parameters, and finishes all device work before it returns.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from xbackprop import MultiLayerNet, TwoLayerNet, get_namespace
from xbackprop.backend import backend_name, compile_steps, resolve_device, synchronize
from xbackprop.benchcases import SIZES as CASE_SIZES
from xbackprop.optimizers import SGD
from xbackprop.training import DeviceData, make_gradient_step, make_train_step, training_targets

from .handwritten import HandwrittenTwoLayerNet

SIZES = CASE_SIZES["book"]  # the book's 784-50-10
LR = 0.1


def training_data(n: int = 60_000, seed: int = 0, *, sizes: tuple[int, ...] = SIZES) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 rows in [0, 1) and uint8 labels for a net of ``sizes`` (MNIST-shaped by default; the
    speed does not depend on the values)."""
    rng = np.random.default_rng(seed)
    return rng.random((n, sizes[0]), dtype=np.float32), rng.integers(0, sizes[-1], n).astype(np.uint8)


def make_xbackprop(
    backend: str, x_host: np.ndarray, t_host: np.ndarray, batch: int = 100, *, sizes: tuple[int, ...] = SIZES,
    device: str | None = None,
) -> Callable[[], None]:
    """xbackprop's net and SGD, step by step through the trainer's own gradient step (jitted on JAX)."""
    xp = get_namespace(backend, strict=True)
    device = resolve_device(xp, device)
    x_all, t_all = xp.asarray(x_host, device=device), xp.asarray(t_host, device=device)
    t_all = training_targets(DeviceData(x_all, t_all, x_all, t_all, sizes[-1]), sizes[-1])  # one-hot, as train's
    net = MultiLayerNet(sizes[0], list(sizes[1:-1]), sizes[-1], xp=xp, device=device, dtype="float32", seed=0)
    gradient_step = make_gradient_step(net, xp)
    optimizer = SGD(lr=LR)
    rng = np.random.default_rng(1)
    n = x_host.shape[0]

    def step() -> None:
        index = xp.asarray(rng.integers(0, n, batch), device=device)
        grads, _, _ = gradient_step(net.params, net.buffers, x_all, t_all, index)
        optimizer.update(net.params, grads)
        synchronize(xp)

    step.backend = backend_name(xp)
    return step


def make_book_step(x_host: np.ndarray, t_host: np.ndarray, batch: int = 100) -> Callable[[], None]:
    """The book's ``train_neuralnet.py`` step on NumPy: ``TwoLayerNet.gradient`` (labels checked at every call,
    as the book's readers call it) and ``SGD.update``, on uint8 labels."""
    xp = get_namespace("numpy")
    x_all, t_all = xp.asarray(x_host), xp.asarray(t_host)
    net = TwoLayerNet(x_host.shape[1], 50, 10, xp=xp, dtype="float32", seed=0)
    optimizer = SGD(lr=LR)
    rng = np.random.default_rng(1)
    n = x_host.shape[0]

    def step() -> None:
        batch_mask = rng.integers(0, n, batch)
        grad = net.gradient(x_all[batch_mask], t_all[batch_mask])
        optimizer.update(net.params, grad)

    return step


def make_xbackprop_blocks(
    backend: str, x_host: np.ndarray, t_host: np.ndarray, batch: int = 100, *, sizes: tuple[int, ...] = SIZES,
    block: int = 100, device: str | None = None,
) -> Callable[[], None] | None:
    """``block`` SGD steps per call through the trainer's compiled loop (JAX's scan), or ``None`` where the
    backend does not compile loops. Time per step = time per call / ``block``."""
    xp = get_namespace(backend, strict=True)
    device = resolve_device(xp, device)
    net = MultiLayerNet(sizes[0], list(sizes[1:-1]), sizes[-1], xp=xp, device=device, dtype="float32", seed=0)
    optimizer = SGD(lr=LR)
    run = compile_steps(make_train_step(net, optimizer, xp), xp)
    if run is None:
        return None
    x_all, t_all = xp.asarray(x_host, device=device), xp.asarray(t_host, device=device)
    carry = {"params": dict(net.params), "state": (optimizer.init(net.params), {})}
    rng = np.random.default_rng(1)
    n = x_host.shape[0]

    def steps() -> None:
        indices = xp.asarray(rng.integers(0, n, (block, batch)), device=device)
        carry["params"], carry["state"], losses = run(carry["params"], carry["state"], x_all, t_all, indices)
        synchronize(xp)
        losses.block_until_ready()

    return steps


def make_handwritten(
    x_host: np.ndarray, t_host: np.ndarray, batch: int = 100, *, sizes: tuple[int, int, int] = SIZES
) -> Callable[[], None]:
    """The clean-room hand-written NumPy step (benchmarks/handwritten.py)."""
    net = HandwrittenTwoLayerNet(*sizes, seed=0)
    rng = np.random.default_rng(1)
    n = x_host.shape[0]

    def step() -> None:
        index = rng.integers(0, n, batch)
        net.step(x_host[index], t_host[index], LR)

    return step


def make_matmul_floor(x_host: np.ndarray, batch: int = 100) -> Callable[[], None]:
    """The five matrix products a step cannot avoid, float32, nothing else."""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal(SIZES[:2]).astype(np.float32)
    w2 = rng.standard_normal(SIZES[1:]).astype(np.float32)
    x = np.ascontiguousarray(x_host[:batch])
    h = np.ones((batch, SIZES[1]), np.float32)
    d = np.ones((batch, SIZES[2]), np.float32)

    def step() -> None:
        x @ w1, h @ w2, h.T @ d, d @ w2.T, x.T @ h

    return step


def make_torch_eager(x_host: np.ndarray, t_host: np.ndarray, batch: int = 100, device: str = "cpu") -> Callable[[], None]:
    """PyTorch eager with autograd, float32, plain SGD by hand."""
    import torch

    x_all = torch.from_numpy(x_host).to(device)
    t_all = torch.from_numpy(t_host.astype(np.int64)).to(device)
    init = TwoLayerNet(*SIZES, xp="numpy", dtype="float32", seed=0).params
    params = [torch.tensor(init[k], device=device, requires_grad=True) for k in ("W1", "b1", "W2", "b2")]
    rng = np.random.default_rng(1)
    n = x_host.shape[0]

    def step() -> None:
        index = torch.from_numpy(rng.integers(0, n, batch)).to(device)
        w1, b1, w2, b2 = params
        scores = torch.relu(x_all[index] @ w1 + b1) @ w2 + b2
        torch.nn.functional.cross_entropy(scores, t_all[index]).backward()
        with torch.no_grad():
            for p in params:
                p -= LR * p.grad
                p.grad = None
        if device != "cpu":
            torch.cuda.synchronize()

    return step


def make_jax_jit(x_host: np.ndarray, t_host: np.ndarray, batch: int = 100) -> Callable[[], None]:
    """JAX: one jitted function for gather, value_and_grad and the SGD update, float32."""
    import jax
    import jax.numpy as jnp

    x_all, t_all = jnp.asarray(x_host), jnp.asarray(t_host.astype(np.int32))
    init = TwoLayerNet(*SIZES, xp="numpy", dtype="float32", seed=0).params
    state = {"params": {k: jnp.asarray(v) for k, v in init.items()}}
    rng = np.random.default_rng(1)
    n = x_host.shape[0]

    def loss_fn(p, x, t):
        scores = jax.nn.relu(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(scores), t[:, None], axis=1))

    @jax.jit
    def update(p, index):
        grads = jax.grad(loss_fn)(p, x_all[index], t_all[index])
        return jax.tree_util.tree_map(lambda w, g: w - LR * g, p, grads)

    def step() -> None:
        state["params"] = update(state["params"], jnp.asarray(rng.integers(0, n, batch)))
        jax.block_until_ready(state["params"])

    return step
