"""The book's ``common/trainer.py``: the ``Trainer`` that chapters 7 and 8 train their convolutional nets with.

It runs as the book's does, step by step from host arrays, printing ``train loss:`` each step and
``=== epoch:N, train acc:…, test acc:… ===`` each epoch, but on the net's own backend: the data are moved to
the net's device once, minibatches are drawn on the host (NumPy's ``Generator``) and gathered on the device.
``python -m xbackprop.train`` is the faster way (losses stay on the device; JAX compiles, CUDA captures).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from array_api_compat import device as array_device

from .backend import host_rng
from .functions import namespace_of
from .optimizers import OPTIMIZERS

__all__ = ["Trainer"]


class Trainer:
    """Train ``network`` on ``(x_train, t_train)`` for ``epochs``, evaluating on ``(x_test, t_test)`` each epoch.

    The book's constructor: ``mini_batch_size`` rows per step, drawn with replacement; ``optimizer`` one of
    ``"SGD"``, ``"Momentum"``, ``"AdaGrad"``, ``"Adam"`` (any case) built with ``optimizer_param``; each
    epoch's accuracies on the first ``evaluate_sample_num_per_epoch`` rows of each set (all rows when
    ``None``). After :meth:`train`: ``train_loss_list`` (one float a step), ``train_acc_list`` and
    ``test_acc_list`` (one float an epoch). ``seed`` makes the minibatch draws repeatable (the book's
    ``np.random.choice`` has none).
    """

    def __init__(self, network: Any, x_train: Any, t_train: Any, x_test: Any, t_test: Any, epochs: int = 20,
                 mini_batch_size: int = 100, optimizer: str = "SGD", optimizer_param: Mapping[str, Any] | None = None,
                 evaluate_sample_num_per_epoch: int | None = None, verbose: bool = True, *,
                 seed: int | None = None) -> None:
        name = optimizer.lower()
        if name not in OPTIMIZERS:
            raise ValueError(f"Trainer: optimizer {optimizer!r} is none of xbackprop's ({', '.join(OPTIMIZERS)})")
        self.network, self.verbose, self.epochs = network, verbose, epochs
        like = next(iter(network.params.values()))  # the data go where the parameters are (any net: the book's too)
        self.xp, self.device = namespace_of(like), array_device(like)
        self.x_train, self.x_test = (self.xp.asarray(np.asarray(x), dtype=like.dtype, device=self.device)
                                     for x in (x_train, x_test))
        self.t_train, self.t_test = (self.xp.asarray(np.asarray(t), device=self.device) for t in (t_train, t_test))
        self.batch_size = mini_batch_size
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.optimizer = OPTIMIZERS[name](**dict(optimizer_param or {"lr": 0.01}))
        self.train_size = self.x_train.shape[0]
        self.iter_per_epoch = max(self.train_size / mini_batch_size, 1)
        self.max_iter = int(epochs * self.iter_per_epoch)
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list: list[float] = []
        self.train_acc_list: list[float] = []
        self.test_acc_list: list[float] = []
        self._rng = host_rng(seed)

    def train_step(self) -> None:
        xp = self.xp
        batch_mask = xp.asarray(self._rng.integers(0, self.train_size, self.batch_size), device=self.device)
        x_batch = xp.take(self.x_train, batch_mask, axis=0)
        t_batch = xp.take(self.t_train, batch_mask, axis=0)

        grads = self.network.gradient(x_batch, t_batch)
        self.optimizer.update(self.network.params, grads)

        loss = float(self.network.loss(x_batch, t_batch))
        self.train_loss_list.append(loss)
        if self.verbose:
            print("train loss:" + str(loss))

        if self.current_iter % self.iter_per_epoch == 0:
            self.current_epoch += 1
            t = self.evaluate_sample_num_per_epoch
            train_acc = self.network.accuracy(self.x_train[:t, ...], self.t_train[:t])
            test_acc = self.network.accuracy(self.x_test[:t, ...], self.t_test[:t])
            self.train_acc_list.append(train_acc)
            self.test_acc_list.append(test_acc)
            if self.verbose:
                print(f"=== epoch:{self.current_epoch}, train acc:{train_acc}, test acc:{test_acc} ===")
        self.current_iter += 1

    def train(self) -> None:
        for _ in range(self.max_iter):
            self.train_step()

        test_acc = self.network.accuracy(self.x_test, self.t_test)
        if self.verbose:
            print("=============== Final Test Accuracy ===============")
            print("test acc:" + str(test_acc))
