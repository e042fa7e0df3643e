"""The book's ``ch08/deep_convnet.py``: six 3x3 convolutions in three blocks, each block ending in 2x2 max pooling,
then ``Affine -> ReLU -> Dropout -> Affine -> Dropout -> SoftmaxWithLoss``, with He initialisation."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

from .architecture import Architecture
from .backend import resolve_placement
from .initialization import HostDraws
from .io import SavesParams
from .layer_net import LayerNet
from .layers import Affine, Convolution, Dropout, Pooling, Relu
from .util import conv_output_size

__all__ = ["DeepConvNet", "BOOK_CONV_PARAMS"]

#: The book's six convolutions: 16, 16, 32, 32, 64 and 64 filters of 3x3, padding 1 but 2 for the fourth.
BOOK_CONV_PARAMS = tuple({"filter_num": n, "filter_size": 3, "pad": pad, "stride": 1}
                         for n, pad in ((16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1)))


class DeepConvNet(LayerNet, SavesParams):
    """Chapter 8's deep convolutional network, with the book's constructor (``conv_param_1`` ... ``conv_param_6``).

    ``params``: ``W1`` ... ``W6`` ``(filter_num, channels, 3, 3)`` and ``b1`` ... ``b6`` of the convolutions,
    ``W7 (64*4*4, hidden_size)``, ``b7``, ``W8 (hidden_size, output_size)``, ``b8`` for 28x28 inputs; weights
    are He-initialised (standard normal draws times ``sqrt(2 / fan_in)``, on the host from ``seed``), biases
    zero. The two Dropout layers drop half the units in training, as the book's, from counter-based masks
    (``seed``). Inputs are images ``(N, *input_dim)`` or rows ``(N, C*H*W)``, reshaped to images.
    """

    evaluation_batch_size = 100  # as the book's accuracy(x, t, batch_size=100)

    def __init__(
        self,
        input_dim: tuple[int, int, int] = (1, 28, 28),
        conv_param_1: dict[str, int] = BOOK_CONV_PARAMS[0],
        conv_param_2: dict[str, int] = BOOK_CONV_PARAMS[1],
        conv_param_3: dict[str, int] = BOOK_CONV_PARAMS[2],
        conv_param_4: dict[str, int] = BOOK_CONV_PARAMS[3],
        conv_param_5: dict[str, int] = BOOK_CONV_PARAMS[4],
        conv_param_6: dict[str, int] = BOOK_CONV_PARAMS[5],
        hidden_size: int = 50,
        output_size: int = 10,
        *,
        xp: Any = None,
        device: Any = None,
        dtype: Any = None,
        seed: int | None = None,
    ) -> None:
        draw = HostDraws(seed, *resolve_placement(xp, device, dtype))
        channels, height, width = input_dim
        layers: OrderedDict[str, Any] = OrderedDict()
        convs = self.conv_params = (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6)
        for i, conv in enumerate(convs, start=1):
            n, size, pad, stride = conv["filter_num"], conv["filter_size"], conv["pad"], conv["stride"]
            scale = math.sqrt(2.0 / (channels * size * size))  # He: ReLU follows
            layers[f"Conv{i}"] = Convolution(draw.gaussian(scale, n, channels, size, size), draw.zeros(n), stride, pad,
                                             input_grad=i > 1)  # the images need no gradient
            layers[f"Relu{i}"] = Relu()
            channels = n
            height, width = conv_output_size(height, size, stride, pad), conv_output_size(width, size, stride, pad)
            if i % 2 == 0:  # every second convolution ends a block
                layers[f"Pool{i // 2}"] = Pooling(2, 2, stride=2)
                height, width = conv_output_size(height, 2, 2), conv_output_size(width, 2, 2)
        flat = channels * height * width
        layers["Affine1"] = Affine(draw.gaussian(math.sqrt(2.0 / flat), flat, hidden_size), draw.zeros(hidden_size))
        layers["Relu7"] = Relu()
        layers["Dropout1"] = Dropout(0.5, seed=draw.rng.integers(2**31) + 1)
        layers["Affine2"] = Affine(draw.gaussian(math.sqrt(2.0 / hidden_size), hidden_size, output_size),
                                   draw.zeros(output_size))
        layers["Dropout2"] = Dropout(0.5, seed=draw.rng.integers(2**31) + 2)
        self.input_dim = tuple(input_dim)
        super().__init__(layers)
        self.sizes = [input_dim[0] * input_dim[1] * input_dim[2], hidden_size, output_size]

    @property
    def architecture(self) -> Architecture | None:
        """This net as an :class:`~xbackprop.architecture.Architecture` record (what a saved file says of it), for
        square grey images; ``None`` for others, whose files are loaded into a net built first."""
        channels, height, width = self.input_dim
        if channels != 1 or height != width or self.conv_params != BOOK_CONV_PARAMS:
            return None
        return Architecture(tuple(self.sizes), net="deep-convnet")
