"""The book's ``ch07/simple_convnet.py``: ``Conv -> ReLU -> Pool -> Affine -> ReLU -> Affine -> SoftmaxWithLoss``."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .architecture import Architecture
from .backend import resolve_placement
from .initialization import HostDraws
from .io import SavesParams
from .layer_net import LayerNet
from .layers import Affine, Convolution, Pooling, Relu
from .util import conv_output_size

__all__ = ["SimpleConvNet", "BOOK_CONV_PARAM"]

#: The book's convolution: 30 filters of 5x5, no padding, stride 1.
BOOK_CONV_PARAM = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}


class SimpleConvNet(LayerNet, SavesParams):
    """Chapter 7's convolutional network, with the book's constructor.

    ``params``: ``W1 (filter_num, C, filter_size, filter_size)``, ``b1 (filter_num,)`` of the
    convolution, ``W2 (pool output size, hidden_size)``, ``b2``, ``W3 (hidden_size, output_size)``,
    ``b3``; weights ``weight_init_std`` times standard normal draws (on the host, from ``seed``),
    biases zero. The pooling is 2x2 with stride 2. Inputs are images ``(N, *input_dim)`` or rows
    ``(N, C*H*W)`` (as the trainer and ``load_mnist(flatten=True)`` give them), reshaped to images.
    """

    evaluation_batch_size = 100  # as the book's accuracy(x, t, batch_size=100)

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
        conv_param = self.conv_param = {**BOOK_CONV_PARAM, **(conv_param or {})}
        filter_num, filter_size = conv_param["filter_num"], conv_param["filter_size"]
        pad, stride = conv_param["pad"], conv_param["stride"]
        channels, height, width = input_dim
        conv_h = conv_output_size(height, filter_size, stride, pad)
        conv_w = conv_output_size(width, filter_size, stride, pad)
        pool_output_size = filter_num * conv_output_size(conv_h, 2, 2) * conv_output_size(conv_w, 2, 2)
        draw = HostDraws(seed, *resolve_placement(xp, device, dtype))

        self.input_dim = tuple(input_dim)
        layers = OrderedDict([
            ("Conv1", Convolution(draw.gaussian(weight_init_std, filter_num, channels, filter_size, filter_size),
                                  draw.zeros(filter_num), stride, pad, input_grad=False)),
            ("Relu1", Relu()),
            ("Pool1", Pooling(2, 2, stride=2)),
            ("Affine1", Affine(draw.gaussian(weight_init_std, pool_output_size, hidden_size), draw.zeros(hidden_size))),
            ("Relu2", Relu()),
            ("Affine2", Affine(draw.gaussian(weight_init_std, hidden_size, output_size), draw.zeros(output_size))),
        ])
        super().__init__(layers)
        self.sizes = [channels * height * width, hidden_size, output_size]

    @property
    def architecture(self) -> Architecture | None:
        """This net as an :class:`~xbackprop.architecture.Architecture` record (what a saved file says of it), for
        square grey images; ``None`` for others, whose files are loaded into a net built first."""
        channels, height, width = self.input_dim
        if channels != 1 or height != width or self.conv_param != BOOK_CONV_PARAM:
            return None
        return Architecture(tuple(self.sizes), net="simple-convnet")
