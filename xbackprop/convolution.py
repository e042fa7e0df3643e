"""Chapter 7's layers, the book's ``Convolution`` and ``Pooling``, on any Array API namespace.

Both turn windows into rows with :func:`~xbackprop.util.im2col`, so a convolution is one matrix
product and max pooling one reduction; their backward passes add the windows back with
:func:`~xbackprop.util.col2im` (sums of disjoint slices: no scatter, no integer-array assignment).
"""

from __future__ import annotations

from typing import Any

import array_api_extra as xpx
from array_api_compat import device

from ._namespace import namespace_of
from .hooks import Layer, dot, entries
from .util import col2im, conv_output_size, im2col, windows

__all__ = ["Convolution", "Pooling"]


class Convolution(Layer):
    """``out[n, f] = sum over c of W[f, c] (*) x[n, c] + b[f]`` (a cross-correlation, as the book's).

    ``W``: ``(FN, C, FH, FW)``, ``b``: ``(FN,)``; ``x``: ``(N, C, H, W)``; ``out``: ``(N, FN, OH, OW)`` with
    ``OH = (H + 2 pad - FH) // stride + 1`` (likewise ``OW``). Caches ``x``, ``col`` (``im2col(x)``,
    ``(N*OH*OW, C*FH*FW)``) and ``col_W`` (``(C*FH*FW, FN)``); ``backward`` sets ``dW`` and ``db`` (also in
    ``grads``) and returns ``dx`` shaped like ``x``, or ``None`` with ``input_grad=False`` (the first layer of
    a net needs no gradient for its images: that skips a matrix product and ``col2im``). ``params`` is
    ``{"W": W, "b": b}``.
    """

    W, b = entries("params", "W", "b")
    dW, db = entries("grads", "W", "b")

    def __init__(self, W: Any, b: Any, stride: int = 1, pad: int = 0, *, input_grad: bool = True) -> None:
        if not hasattr(W, "ndim") or W.ndim != 4 or not hasattr(b, "ndim") or tuple(b.shape) != (W.shape[0],):
            raise ValueError(f"Convolution: W must be (FN, C, FH, FW) and b (FN,), got "
                             f"{getattr(W, 'shape', W)} and {getattr(b, 'shape', b)}")
        self.params = {"W": W, "b": b}
        self.grads: dict[str, Any] = {}
        self.stride, self.pad, self.input_grad = stride, pad, input_grad
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
        if not self.input_grad:
            return None
        return col2im(dot(dout, self.col_W.T), tuple(self.x.shape), fh, fw, self.stride, self.pad)


class Pooling(Layer):
    """Max pooling over ``pool_h`` x ``pool_w`` windows: ``x`` ``(N, C, H, W)`` to ``(N, C, OH, OW)``.

    Caches ``x`` and which input of each window won; ``arg_max`` gives it in the book's layout (the position in
    the window, ``(N*OH*OW*C,)``). Where a window's maximum is tied, the first of the tied inputs in the window
    (row by row) gets the whole gradient, as the book's ``np.argmax`` decides. Both passes work window position
    by window position on whole strided slices (``pool_h * pool_w`` of them): the maximum is an elementwise
    maximum of the slices, and ``backward`` adds each slice's share of ``dout`` back where it came from; no
    window is ever gathered into a row, nothing is assigned by index.
    """

    def __init__(self, pool_h: int, pool_w: int, stride: int = 2, pad: int = 0) -> None:
        self.pool_h, self.pool_w, self.stride, self.pad = pool_h, pool_w, stride, pad
        self.x = self.winner = None

    @property
    def arg_max(self) -> Any:
        """The book's ``arg_max``: each window's winning position, ``(N*OH*OW*C,)`` (``None`` before a pass)."""
        if self.winner is None:
            return None
        xp = namespace_of(self.winner)
        return xp.reshape(xp.permute_dims(self.winner, (0, 2, 3, 1)), (-1,))

    @property
    def mask(self) -> Any:
        """Which input won each window in the last pass (``None`` before one): a max switching winners is a kink,
        as ReLU's mask tells, so gradient checks look at it again from one side."""
        return self.winner

    def forward(self, x: Any) -> Any:
        xp = namespace_of(x)
        if x.ndim != 4:
            raise ValueError(f"Pooling: input must be (N, C, H, W), got {tuple(x.shape)}")
        slices = self._slices(x)
        out = slices[0]
        for piece in slices[1:]:
            out = xp.maximum(out, piece)
        winner = xp.full(out.shape, len(slices) - 1, dtype=xp.int32, device=device(x))
        for k in range(len(slices) - 2, -1, -1):  # from the last position down: the first maximum wins
            winner = xp.where(slices[k] == out, k, winner)
        self.x, self.winner = x, winner
        return out

    def backward(self, dout: Any) -> Any:
        xp = namespace_of(dout)
        n, c, h, w = self.x.shape
        pad = self.pad
        dx = xp.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=dout.dtype, device=device(dout))
        for k, (rows, columns) in enumerate(self._windows(h, w)):  # each slice's pixels are distinct
            share = xp.where(self.winner == k, dout, 0.0)
            dx = xpx.at(dx, (slice(None), slice(None), rows, columns)).add(share, copy=None, xp=xp)
        return dx[:, :, pad : pad + h, pad : pad + w] if pad else dx

    def _windows(self, h: int, w: int) -> list[tuple[slice, slice]]:
        out_h = conv_output_size(h, self.pool_h, self.stride, self.pad)
        out_w = conv_output_size(w, self.pool_w, self.stride, self.pad)
        return windows(self.pool_h, self.pool_w, self.stride, out_h, out_w)

    def _slices(self, x: Any) -> list[Any]:
        """Position ``k`` of every window, for each ``k`` in the window (row by row): ``(N, C, OH, OW)`` each."""
        padded = xpx.pad(x, ((0, 0), (0, 0), (self.pad, self.pad), (self.pad, self.pad)), xp=namespace_of(x)) \
            if self.pad else x
        return [padded[:, :, rows, columns] for rows, columns in self._windows(x.shape[2], x.shape[3])]
