"""The book's ``ch07/simple_convnet.py``: ``Conv -> ReLU -> Pool -> Affine -> ReLU -> Affine -> SoftmaxWithLoss``."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .backend import get_namespace, host_rng, resolve_device, resolve_dtype
from .convolution import Convolution, Pooling
from .layers import Affine, Relu
from .nets import LayerNet
from .util import conv_output_size

__all__ = ["SimpleConvNet"]


class SimpleConvNet(LayerNet):
    """Chapter 7's convolutional network, with the book's constructor.

    ``params``: ``W1 (filter_num, C, filter_size, filter_size)``, ``b1 (filter_num,)`` of the
    convolution, ``W2 (pool output size, hidden_size)``, ``b2``, ``W3 (hidden_size, output_size)``,
    ``b3``; weights ``weight_init_std`` times standard normal draws (on the host, from ``seed``),
    biases zero. The pooling is 2x2 with stride 2. Inputs are images ``(N, *input_dim)`` or rows
    ``(N, C*H*W)`` (as the trainer and ``load_mnist(flatten=True)`` give them), reshaped to images.
    """

    def __init__(
        self,
        input_dim: tuple[int, int, int] = (1, 28, 28),
        conv_param: dict[str, int] | None = None,
        hidden_size: int = 100,
        output_size: int = 10,
        weight_init_std: float = 0.01,
        *,
        xp: Any = None,
        device: Any = None,
        dtype: Any = None,
        seed: int | None = None,
    ) -> None:
        conv_param = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1, **(conv_param or {})}
        filter_num, filter_size = conv_param["filter_num"], conv_param["filter_size"]
        pad, stride = conv_param["pad"], conv_param["stride"]
        channels, height, width = input_dim
        conv_h = conv_output_size(height, filter_size, stride, pad)
        conv_w = conv_output_size(width, filter_size, stride, pad)
        pool_output_size = filter_num * conv_output_size(conv_h, 2, 2) * conv_output_size(conv_w, 2, 2)
        xp = get_namespace(xp)
        device = resolve_device(xp, device)
        dtype = resolve_dtype(xp, dtype, device)
        rng = host_rng(seed)

        def weights(*shape: int) -> Any:
            return xp.asarray(weight_init_std * rng.standard_normal(shape), dtype=dtype, device=device)

        def zeros(n: int) -> Any:
            return xp.zeros((n,), dtype=dtype, device=device)

        self.input_dim = tuple(input_dim)
        layers = OrderedDict([
            ("Conv1", Convolution(weights(filter_num, channels, filter_size, filter_size), zeros(filter_num),
                                  stride, pad)),
            ("Relu1", Relu()),
            ("Pool1", Pooling(2, 2, stride=2)),
            ("Affine1", Affine(weights(pool_output_size, hidden_size), zeros(hidden_size))),
            ("Relu2", Relu()),
            ("Affine2", Affine(weights(hidden_size, output_size), zeros(output_size))),
        ])
        super().__init__(layers)
        self.sizes = [channels * height * width, hidden_size, output_size]

    def _forward(self, x: Any, train_flg: bool) -> Any:
        if x.ndim == 2:  # rows, as the trainer hands them over: the images they were
            x = self.xp.reshape(x, (x.shape[0], *self.input_dim))
        return super()._forward(x, train_flg)
