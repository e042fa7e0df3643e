"""The layers of *Deep Learning from Scratch* (its ``common/layers.py``) on any Array API namespace: chapter 5's
MulLayer, AddLayer, Relu, Sigmoid, Affine and SoftmaxWithLoss, chapter 6's Dropout and BatchNormalization,
chapter 7's Convolution and Pooling.

Every layer has ``forward(...)`` and ``backward(dout)``; ``forward`` caches what ``backward`` needs, and
``backward`` returns the gradient with respect to the inputs of ``forward``. No layer writes into an array it
was given, and every constant is made on the input's device, so the same code runs on NumPy, CuPy, PyTorch,
JAX and array-api-strict. A layer with parameters keeps them in a ``params`` dict and, after ``backward``,
their gradients under the same keys in ``grads``; state carried from pass to pass but not trained
(BatchNormalization's running statistics, Dropout's count of masks) lives in ``buffers``. The book's
attributes (``W``, ``dW``, ``gamma``, ``running_mean``, ...) read and write those dicts. Layers that behave
differently in training take the book's ``forward(x, train_flg)``. The :class:`~xbackprop.hooks.Layer` base
reports each pass to :func:`xbackprop.graph.trace` and refuses ``backward`` before ``forward``.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device

from .functions import checked_labels, log_softmax, namespace_of, random_bits, relu, sigmoid
from .hooks import Layer, dot, entries
from .util import col2im, conv_output_size, first_maxima, im2col, window_slices, windows_added_back

__all__ = ["MulLayer", "AddLayer", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss", "Dropout", "BatchNormalization",
           "Convolution", "Pooling"]


class MulLayer(Layer):
    """``out = x * y`` for Python numbers or arrays (the book's apple example)."""

    def __init__(self) -> None:
        self.x = None
        self.y = None

    def forward(self, x: Any, y: Any) -> Any:
        self.x = x
        self.y = y
        out = x * y
        return out

    def backward(self, dout: Any) -> tuple[Any, Any]:
        dx = dout * self.y  # the two inputs swap places
        dy = dout * self.x
        return dx, dy


class AddLayer(Layer):
    """``out = x + y`` for Python numbers or arrays; the gradient passes through unchanged."""

    def __init__(self) -> None:
        pass

    def forward(self, x: Any, y: Any) -> Any:
        out = x + y
        return out

    def backward(self, dout: Any) -> tuple[Any, Any]:
        dx = dout * 1
        dy = dout * 1
        return dx, dy


class Relu(Layer):
    """``max(x, 0)`` elementwise. The book's ``mask`` (``x <= 0``, bool) is read from ``passed``, the
    derivative (1 where ``x`` passed, 0 where it was cut, in ``x``'s dtype), so ``backward`` is one product;
    it returns a new array (the book writes the zeros into ``dout``), and NaN in ``x`` or ``dout`` stays NaN.
    """

    def __init__(self) -> None:
        self.passed = None

    @property
    def mask(self) -> Any:
        return None if self.passed is None else self.passed == 0

    def forward(self, x: Any) -> Any:
        xp = namespace_of(x)
        out = relu(x, xp=xp)
        self.passed = xp.astype(xp.astype(out, xp.bool), x.dtype)
        return out

    def backward(self, dout: Any) -> Any:
        return dout * self.passed


class Sigmoid(Layer):
    """Logistic function (stable for any ``|x|``). Caches its output ``out``."""

    def __init__(self) -> None:
        self.out = None

    def forward(self, x: Any) -> Any:
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout: Any) -> Any:
        dx = dout * (1.0 - self.out) * self.out
        return dx


class Affine(Layer):
    """``x @ W + b``.

    ``W``: ``(D, M)``, ``b``: ``(M,)``; ``x``: ``(N, D)``, or any ``(N, ...)`` whose trailing axes multiply to
    ``D`` (flattened, as for images). ``backward`` sets ``dW`` ``(D, M)`` and ``db`` ``(M,)`` (``grads``) and
    returns ``dx`` in ``x``'s original shape, or ``None`` with ``input_grad=False`` (the first layer of a net
    needs no gradient for its data). ``backward`` drops the cached ``x``, so a batch can be freed before the
    next is drawn; a second ``backward`` needs a new ``forward``.
    """

    W, b = entries("params", "W", "b")
    dW, db = entries("grads", "W", "b")
    backward_uses_up_forward = True

    def __init__(self, W: Any, b: Any, *, input_grad: bool = True) -> None:
        _check_affine_params(W, b)
        self.params, self.grads = {"W": W, "b": b}, {}
        self.input_grad = input_grad
        self.x = None
        self.original_x_shape = None

    def forward(self, x: Any) -> Any:
        self.original_x_shape = x.shape
        if x.ndim != 2 or x.shape[1] != self.W.shape[0]:
            x = _flattened(x, self.W)
        self.x = x
        out = dot(x, self.W)
        out += self.b  # into the product's own new array: one array less per call
        return out

    def backward(self, dout: Any) -> Any:
        self.dW = dot(self.x.T, dout)
        self.db = namespace_of(dout).sum(dout, axis=0)
        self.x = None
        if not self.input_grad:
            return None
        dx = dot(dout, self.W.T)
        return namespace_of(dx).reshape(dx, self.original_x_shape) if dx.ndim != len(self.original_x_shape) else dx


def _check_affine_params(W: Any, b: Any) -> None:
    if not hasattr(W, "ndim") or not hasattr(b, "ndim"):
        raise TypeError(f"Affine: W and b must be arrays, got {type(W).__name__} and {type(b).__name__}")
    if W.ndim != 2 or b.ndim != 1 or b.shape[0] != W.shape[1]:
        raise ValueError(f"Affine: W must be (D, M) and b (M,), got {tuple(W.shape)} and {tuple(b.shape)}")


def _flattened(x: Any, W: Any) -> Any:
    """An ``(N, ...)`` input as the ``(N, D)`` rows ``W`` ``(D, M)`` multiplies, or a ``ValueError`` saying why not."""
    if x.ndim < 2:
        raise ValueError(f"Affine: input must be (N, D), got shape {tuple(x.shape)} (W is {tuple(W.shape)})")
    flat = namespace_of(x).reshape(x, (x.shape[0], -1))
    if flat.shape[1] != W.shape[0]:
        raise ValueError(f"Affine: input of shape {tuple(x.shape)} does not fit W of shape {tuple(W.shape)} "
                         f"(inner dimensions {flat.shape[1]} != {W.shape[0]})")
    return flat


class SoftmaxWithLoss(Layer):
    """Softmax followed by the mean cross-entropy over the batch.

    ``forward(x, t)``: scores ``x`` ``(N, C)``; labels ``t`` one-hot ``(N, C)`` or integer class indices
    ``(N,)`` (any integer dtype; ``(N, 1)`` integers are indices too, as the book's chapter 7 passes them),
    which give identical results. Returns the loss as a 0-D array of ``x``'s dtype through a stable
    log-softmax (exact, finite for scores of 1e4). Caches the probabilities ``y`` and one-hot labels ``t``.
    ``backward(dout=1)`` returns ``dout * (y - t) / N``.

    The labels are checked (:func:`~xbackprop.functions.checked_labels`: a read back from the device) at every
    call unless ``check_labels=False``, here or in ``forward`` for one call.
    """

    def __init__(self, *, check_labels: bool = True) -> None:
        self.check_labels = check_labels
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x: Any, t: Any, *, check_labels: bool | None = None) -> Any:
        xp = namespace_of(x, t)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"SoftmaxWithLoss: scores must be (N, C) with N > 0 (the mean loss of no rows is "
                             f"undefined: the batch is empty), got shape {tuple(x.shape)}")
        check = self.check_labels if check_labels is None else check_labels
        self.t = checked_labels(t, *x.shape, who="SoftmaxWithLoss", one_hot_dtype=x.dtype, check=check, column=True)
        logp = log_softmax(x, xp=xp)
        self.y = xp.exp(logp)
        # -sum(t log y) / N by elementwise products and one reduction (a captured CuPy graph has no vecdot)
        self.loss = xp.sum(self.t * logp) * (-1.0 / x.shape[0])
        return self.loss

    def backward(self, dout: Any = 1) -> Any:
        batch_size = self.t.shape[0]
        return (self.y - self.t) * (dout / batch_size)


class Dropout(Layer):
    """Chapter 6's dropout: in training, each unit is kept with probability ``1 - dropout_ratio``.

    ``forward(x, train_flg=True)`` multiplies ``x`` by a fresh boolean ``mask`` of ``x``'s shape;
    ``train_flg=False`` scales ``x`` by ``1 - dropout_ratio`` instead, as the book does. ``backward`` passes
    ``dout`` where the mask kept a unit (after an evaluation pass, ``dout`` scaled as the values were). The
    standard has no random numbers: the mask is a counter-based hash (:func:`~xbackprop.functions.random_bits`)
    of ``seed``, the masks drawn so far and each element's position, the same on every backend and inside a
    compiled step. The count is the buffer ``draws`` (``(1,)`` int32, made by :meth:`init_buffers` or the first
    training pass).
    """

    (draws,) = entries("buffers", "draws")

    def __init__(self, dropout_ratio: float = 0.5, *, seed: int = 0, draws: Any = None) -> None:
        if not 0.0 <= dropout_ratio < 1.0:
            raise ValueError(f"Dropout: dropout_ratio must lie in [0, 1), got {dropout_ratio}")
        self.dropout_ratio = dropout_ratio
        self.seed = int(seed)
        self.buffers: dict[str, Any] = {} if draws is None else {"draws": draws}
        self.mask = None
        self.train_flg = None

    def init_buffers(self, like: Any) -> None:
        """Create the ``draws`` count (zero) on ``like``'s namespace and device unless it exists: a net calls
        this when it is built, so the count is one of its buffers from the start."""
        if self.draws is None:
            xp = namespace_of(like)
            self.draws = xp.zeros((1,), dtype=xp.int32, device=device(like))

    def forward(self, x: Any, train_flg: bool = True) -> Any:
        xp = namespace_of(x)
        if train_flg:
            self.init_buffers(x)
            bits = random_bits(x.shape, self.seed, self.draws, like=x)  # uniform on [0, 2**31)
            self.mask = bits >= math.floor(self.dropout_ratio * 2.0**31)
            self.draws = self.draws + 1
            out = x * xp.astype(self.mask, x.dtype)
        else:
            self.mask = None
            out = x * (1.0 - self.dropout_ratio)
        self.train_flg = train_flg
        return out

    def backward(self, dout: Any) -> Any:
        if self.train_flg:
            dx = dout * namespace_of(dout).astype(self.mask, dout.dtype)
        else:
            dx = dout * (1.0 - self.dropout_ratio)
        return dx


class BatchNormalization(Layer):
    """Chapter 6's batch normalization: ``gamma * (x - mean) / sqrt(var + 1e-6) + beta`` per feature.

    ``gamma``, ``beta``: ``(D,)``; ``x``: ``(N, D)`` or ``(N, ...)`` (flattened to ``D`` features and reshaped
    back). ``forward(x, train_flg=True)`` normalises with the batch's mean and variance and moves the running
    statistics towards them, ``running = momentum * running + (1 - momentum) * batch``; ``train_flg=False``
    normalises with the running statistics. ``backward`` sets ``dgamma`` and ``dbeta`` and returns ``dx`` of
    whichever pass came last. The running statistics are the buffers ``running_mean`` and ``running_var``,
    zeros of ``gamma``'s shape unless given (as the book starts them).
    """

    gamma, beta = entries("params", "gamma", "beta")
    dgamma, dbeta = entries("grads", "gamma", "beta")
    running_mean, running_var = entries("buffers", "running_mean", "running_var")

    #: The book's ``10e-7`` under the square root.
    EPSILON = 1e-6

    def __init__(self, gamma: Any, beta: Any, momentum: float = 0.9, running_mean: Any = None,
                 running_var: Any = None) -> None:
        if gamma.ndim != 1 or tuple(beta.shape) != tuple(gamma.shape):
            raise ValueError(f"BatchNormalization: gamma and beta must be (D,), got {tuple(gamma.shape)} "
                             f"and {tuple(beta.shape)}")
        xp = namespace_of(gamma)
        self.params = {"gamma": gamma, "beta": beta}
        self.grads: dict[str, Any] = {}
        self.buffers = {
            "running_mean": xp.zeros_like(gamma) if running_mean is None else running_mean,
            "running_var": xp.zeros_like(gamma) if running_var is None else running_var,
        }
        self.momentum = momentum
        self.input_shape = None
        self.train_flg = None
        self.batch_size = None
        self.xc = None
        self.xn = None
        self.std = None

    def forward(self, x: Any, train_flg: bool = True) -> Any:
        xp = namespace_of(x)
        self.input_shape = x.shape
        flat = x if x.ndim == 2 else xp.reshape(x, (x.shape[0], -1))
        if flat.shape[1] != self.gamma.shape[0]:
            raise ValueError(f"BatchNormalization: input of shape {tuple(x.shape)} has {flat.shape[1]} features, "
                             f"gamma {self.gamma.shape[0]}")
        if train_flg:
            mu = xp.mean(flat, axis=0)
            xc = flat - mu
            var = xp.mean(xc * xc, axis=0)
            std = xp.sqrt(var + self.EPSILON)
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            xc = flat - self.running_mean
            std = xp.sqrt(self.running_var + self.EPSILON)
        xn = xc / std
        self.train_flg, self.batch_size, self.xc, self.xn, self.std = train_flg, flat.shape[0], xc, xn, std
        out = self.gamma * xn + self.beta
        if out.ndim != len(self.input_shape):
            out = xp.reshape(out, self.input_shape)
        return out

    def backward(self, dout: Any) -> Any:
        xp = namespace_of(dout)
        flat = dout if dout.ndim == 2 else xp.reshape(dout, (dout.shape[0], -1))
        self.dbeta = xp.sum(flat, axis=0)
        self.dgamma = xp.sum(self.xn * flat, axis=0)
        dxn = self.gamma * flat
        dxc = dxn / self.std
        if self.train_flg:  # the batch's mean and variance depend on x too
            dstd = -xp.sum((dxn * self.xc) / (self.std * self.std), axis=0)
            dvar = 0.5 * dstd / self.std
            dxc = dxc + (2.0 / self.batch_size) * self.xc * dvar
            dmu = xp.sum(dxc, axis=0)
            dx = dxc - dmu / self.batch_size
        else:  # the running statistics are constants
            dx = dxc
        if dx.ndim != len(self.input_shape):
            dx = xp.reshape(dx, self.input_shape)
        return dx


class Convolution(Layer):
    """``out[n, f] = sum over c of W[f, c] (*) x[n, c] + b[f]`` (a cross-correlation, as the book's).

    ``W``: ``(FN, C, FH, FW)``, ``b``: ``(FN,)``; ``x``: ``(N, C, H, W)``; ``out``: ``(N, FN, OH, OW)`` with
    ``OH = (H + 2 pad - FH) // stride + 1`` (likewise ``OW``). Caches ``x``, ``col`` (``im2col(x)``,
    ``(N*OH*OW, C*FH*FW)``) and ``col_W`` (``(C*FH*FW, FN)``); ``backward`` sets ``dW`` and ``db`` (also in
    ``grads``) and returns ``dx`` shaped like ``x``, or ``None`` with ``input_grad=False`` (a net's first layer
    needs no gradient for its images: a matrix product and ``col2im`` saved).
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
        # the book's col @ col_W + b, computed transposed (a filter a row): there the bias is added and summed
        # along rows, which NumPy does several times faster than down the columns of the book's layout
        out = dot(self.col_W.T, self.col.T)
        out += xp.expand_dims(self.b, axis=1)  # into the product's own new array
        return xp.permute_dims(xp.reshape(out, (fn, n, out_h, out_w)), (1, 0, 2, 3))

    def backward(self, dout: Any) -> Any:
        xp = namespace_of(dout)
        fn, c, fh, fw = self.W.shape
        dout = xp.reshape(xp.permute_dims(dout, (1, 0, 2, 3)), (fn, -1))  # the book's dout, transposed
        self.db = xp.sum(dout, axis=1)
        self.dW = xp.reshape(dot(dout, self.col), (fn, c, fh, fw))
        if not self.input_grad:
            return None
        return col2im(dot(dout.T, self.col_W.T), tuple(self.x.shape), fh, fw, self.stride, self.pad)


class Pooling(Layer):
    """Max pooling over ``pool_h`` x ``pool_w`` windows: ``x`` ``(N, C, H, W)`` to ``(N, C, OH, OW)``.

    Caches ``x`` and ``out``; which position of each window won (``arg_max`` in the book's layout,
    ``(N*OH*OW*C,)``) is worked out from them when asked, so a forward pass alone (evaluation) computes only the
    maxima. A tied maximum sends the whole gradient to the first of the tied inputs (row by row), as the book's
    ``np.argmax``; a window holding a NaN sends it to its first position. Both passes go window position by
    position over strided slices: the maximum is an elementwise maximum, and ``backward`` adds each slice's share
    of ``dout`` (``dout`` times 0 or 1, so a non-finite ``dout`` makes NaN beside its winner, as in
    :class:`Relu`) back where it came from (nothing is assigned by index).
    """

    def __init__(self, pool_h: int, pool_w: int, stride: int = 2, pad: int = 0) -> None:
        self.pool_h, self.pool_w, self.stride, self.pad = pool_h, pool_w, stride, pad
        self.x = self.out = None

    @property
    def winner(self) -> Any:
        """Each window's winning position, ``(N, C, OH, OW)`` int32 (``None`` before a pass)."""
        xp = None if self.x is None else namespace_of(self.x)
        return None if xp is None else sum(xp.astype(won, xp.int32) * k for k, won in enumerate(self._won()))

    @property
    def arg_max(self) -> Any:
        """The book's ``arg_max``: each window's winning position, ``(N*OH*OW*C,)`` (``None`` before a pass)."""
        winner = self.winner
        xp = None if winner is None else namespace_of(winner)
        return None if xp is None else xp.reshape(xp.permute_dims(winner, (0, 2, 3, 1)), (-1,))

    @property
    def mask(self) -> Any:
        """Each window's winner (``None`` before a pass): a max switching winners is a kink, as ReLU's mask tells."""
        return self.winner

    def forward(self, x: Any) -> Any:
        xp = namespace_of(x)
        if x.ndim != 4:
            raise ValueError(f"Pooling: input must be (N, C, H, W), got {tuple(x.shape)}")
        slices = window_slices(x, self.pool_h, self.pool_w, self.stride, self.pad)
        out = slices[0]
        for piece in slices[1:]:
            out = xp.maximum(out, piece)
        self.x, self.out = x, out
        return out

    def backward(self, dout: Any) -> Any:
        xp = namespace_of(dout)
        shares = [dout * xp.astype(won, dout.dtype) for won in self._won()]
        # in x's memory layout, which the convolution before it reads back
        return windows_added_back(shares, tuple(self.x.shape), self.pool_h, self.pool_w, self.stride, self.pad,
                                  like=self.x)

    def _won(self) -> list[Any]:
        return first_maxima(window_slices(self.x, self.pool_h, self.pool_w, self.stride, self.pad), self.out)


#: Hidden-layer activations of :class:`~xbackprop.multi_layer_net.MultiLayerNet`, by name.
ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid}
