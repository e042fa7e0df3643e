"""Chapter 7's layers, the book's ``Convolution`` and ``Pooling``, on any Array API namespace.

Both turn windows into rows with :func:`~xbackprop.util.im2col`, so a convolution is one matrix
product and max pooling one reduction; their backward passes add the windows back with
:func:`~xbackprop.util.col2im` (sums of disjoint slices: no scatter, no integer-array assignment).
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device

from ._namespace import namespace_of
from .hooks import Layer, dot, entries
from .util import col2im, conv_output_size, im2col

__all__ = ["Convolution", "Pooling"]


class Convolution(Layer):
    """``out[n, f] = sum over c of W[f, c] (*) x[n, c] + b[f]`` (a cross-correlation, as the book's).

    ``W``: ``(FN, C, FH, FW)``, ``b``: ``(FN,)``; ``x``: ``(N, C, H, W)``; ``out``: ``(N, FN, OH, OW)`` with
    ``OH = (H + 2 pad - FH) // stride + 1`` (likewise ``OW``). Caches ``x``, ``col`` (``im2col(x)``,
    ``(N*OH*OW, C*FH*FW)``) and ``col_W`` (``(C*FH*FW, FN)``); ``backward`` sets ``dW`` and ``db`` (also in
    ``grads``) and returns ``dx`` shaped like ``x``. ``params`` is ``{"W": W, "b": b}``.
    """

    W, b = entries("params", "W", "b")
    dW, db = entries("grads", "W", "b")

    def __init__(self, W: Any, b: Any, stride: int = 1, pad: int = 0) -> None:
        if not hasattr(W, "ndim") or W.ndim != 4 or not hasattr(b, "ndim") or tuple(b.shape) != (W.shape[0],):
            raise ValueError(f"Convolution: W must be (FN, C, FH, FW) and b (FN,), got "
                             f"{getattr(W, 'shape', W)} and {getattr(b, 'shape', b)}")
        self.params = {"W": W, "b": b}
        self.grads: dict[str, Any] = {}
        self.stride, self.pad = stride, pad
        self.x = self.col = self.col_W = None

    def forward(self, x: Any) -> Any:
        xp = namespace_of(x)
        fn, c, fh, fw = self.W.shape
        if x.ndim != 4 or x.shape[1] != c:
            raise ValueError(f"Convolution: input must be (N, {c}, H, W) for W of shape {tuple(self.W.shape)}, "
                             f"got {tuple(x.shape)}")
        n, _, h, w = x.shape
        out_h, out_w = conv_output_size(h, fh, self.stride, self.pad), conv_output_size(w, fw, self.stride, self.pad)
        self.x, self.col = x, im2col(x, fh, fw, self.stride, self.pad)
        self.col_W = xp.reshape(self.W, (fn, -1)).T
        out = dot(self.col, self.col_W) + self.b
        out = xp.permute_dims(xp.reshape(out, (n, out_h, out_w, fn)), (0, 3, 1, 2))
        return out

    def backward(self, dout: Any) -> Any:
        xp = namespace_of(dout)
        fn, c, fh, fw = self.W.shape
        dout = xp.reshape(xp.permute_dims(dout, (0, 2, 3, 1)), (-1, fn))
        self.db = xp.sum(dout, axis=0)
        self.dW = xp.reshape(dot(self.col.T, dout).T, (fn, c, fh, fw))
        dx = col2im(dot(dout, self.col_W.T), tuple(self.x.shape), fh, fw, self.stride, self.pad)
        return dx


class Pooling(Layer):
    """Max pooling over ``pool_h`` x ``pool_w`` windows: ``x`` ``(N, C, H, W)`` to ``(N, C, OH, OW)``.

    Caches ``x`` and ``arg_max`` (the position of each window's maximum, ``(N*OH*OW*C,)``). Where a window's
    maximum is tied, the first of the tied inputs in the window (row by row) gets the whole gradient, as the
    book's ``np.argmax`` decides; ``backward`` builds the gradient of each window by comparison with
    ``arg_max``, not by integer-array assignment.
    """

    def __init__(self, pool_h: int, pool_w: int, stride: int = 2, pad: int = 0) -> None:
        self.pool_h, self.pool_w, self.stride, self.pad = pool_h, pool_w, stride, pad
        self.x = self.arg_max = None

    @property
    def mask(self) -> Any:
        """Which input won each window in the last pass, as ``arg_max`` (``None`` before one): a max switching
        winners is a kink, as ReLU's mask tells, so gradient checks look at it again from one side."""
        return self.arg_max

    def forward(self, x: Any) -> Any:
        xp = namespace_of(x)
        if x.ndim != 4:
            raise ValueError(f"Pooling: input must be (N, C, H, W), got {tuple(x.shape)}")
        n, c, h, w = x.shape
        out_h = conv_output_size(h, self.pool_h, self.stride, self.pad)
        out_w = conv_output_size(w, self.pool_w, self.stride, self.pad)
        col = xp.reshape(im2col(x, self.pool_h, self.pool_w, self.stride, self.pad), (-1, self.pool_h * self.pool_w))
        self.x, self.arg_max = x, xp.argmax(col, axis=1)
        out = xp.permute_dims(xp.reshape(xp.max(col, axis=1), (n, out_h, out_w, c)), (0, 3, 1, 2))
        return out

    def backward(self, dout: Any) -> Any:
        xp = namespace_of(dout)
        size = self.pool_h * self.pool_w
        flat = xp.reshape(xp.permute_dims(dout, (0, 2, 3, 1)), (-1, 1))
        position = xp.arange(size, dtype=self.arg_max.dtype, device=device(dout))
        dmax = xp.where(position == self.arg_max[:, None], flat, xp.zeros_like(flat))
        c = self.x.shape[1]
        dcol = xp.reshape(dmax, (flat.shape[0] // c, c * size))
        dx = col2im(dcol, tuple(self.x.shape), self.pool_h, self.pool_w, self.stride, self.pad)
        return dx

