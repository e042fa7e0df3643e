"""A clean-room, hand-written NumPy two-layer net step: the baseline xbackprop's float32 NumPy step must match.

Written for speed, not for teaching: float32 throughout, integer labels, no input
gradient, in-place SGD, no copies that nothing needs.
"""

from __future__ import annotations

import numpy as np


class HandwrittenTwoLayerNet:
    """784-50-10 ReLU net with softmax cross-entropy, trained by plain SGD."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int, *, seed: int = 0,
                 weight_init_std: float = 0.01, dtype=np.float32) -> None:
        rng = np.random.default_rng(seed)
        self.W1 = (weight_init_std * rng.standard_normal((input_size, hidden_size))).astype(dtype)
        self.b1 = np.zeros(hidden_size, dtype)
        self.W2 = (weight_init_std * rng.standard_normal((hidden_size, output_size))).astype(dtype)
        self.b2 = np.zeros(output_size, dtype)

    def step(self, x: np.ndarray, labels: np.ndarray, lr: float) -> float:
        n = x.shape[0]
        h = x @ self.W1
        h += self.b1
        np.maximum(h, 0, out=h)
        scores = h @ self.W2
        scores += self.b2
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)          # probabilities
        rows = np.arange(n)
        loss = -np.log(scores[rows, labels]).mean()
        scores[rows, labels] -= 1
        scores /= n                                           # dscores
        dW2 = h.T @ scores
        db2 = scores.sum(axis=0)
        dh = scores @ self.W2.T
        dh *= h > 0
        dW1 = x.T @ dh
        db1 = dh.sum(axis=0)
        self.W1 -= lr * dW1
        self.b1 -= lr * db1
        self.W2 -= lr * dW2
        self.b2 -= lr * db2
        return loss
