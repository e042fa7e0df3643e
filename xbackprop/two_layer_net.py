"""Chapter 5's two-layer net, written as the book writes it (``ch05/two_layer_net.py``)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .architecture import Architecture
from .backend import resolve_placement
from .initialization import init_params
from .layer_net import LayerNet
from .layers import Affine, Relu, SoftmaxWithLoss

__all__ = ["TwoLayerNet"]


class TwoLayerNet(LayerNet):
    """``Affine1 -> Relu1 -> Affine2 -> SoftmaxWithLoss``, the book's chapter 5 network.

    ``params``: ``W1 (input_size, hidden_size)``, ``b1 (hidden_size,)``, ``W2 (hidden_size, output_size)``,
    ``b2 (output_size,)``; weights are ``weight_init_std`` times standard normal draws (or a named scale,
    ``"he"``), biases zero, drawn on the host from ``seed`` and placed on ``xp``'s ``device`` in ``dtype``
    (default: the namespace's, float64 on NumPy as the book's ``np.random.randn``).

    ``predict``, ``loss``, ``accuracy`` and ``numerical_gradient`` are :class:`~xbackprop.layer_net.LayerNet`'s,
    the book's loops with a few more options (``params=``, ``batch_size=``, ``batch=``); ``gradient`` is the
    book's backpropagation, here in full.
    """

    activation = "relu"

    def __init__(self, input_size: int, hidden_size: int, output_size: int, weight_init_std: float | str = 0.01,
                 *, xp: Any = None, device: Any = None, dtype: Any = None, seed: int | None = None) -> None:
        self.params = init_params([input_size, hidden_size, output_size], weight_init_std, seed,
                                  *resolve_placement(xp, device, dtype))

        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"], input_grad=False)  # x needs no dx
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        super().__init__(self.layers, SoftmaxWithLoss(), params=self.params)

    @property
    def architecture(self) -> Architecture:
        """This net as an :class:`~xbackprop.architecture.Architecture` record (what a saved file says of it)."""
        return Architecture(tuple(self.sizes), self.activation)

    def gradient(self, x: Any, t: Any, params: Any = None) -> dict[str, Any]:
        """The gradients of the loss by backpropagation, shaped like ``params`` (the labels are checked, which
        reads their range back from the device once: a training loop uses ``loss_and_gradient``)."""
        # forward
        self.loss(x, t, params, train_flg=True)

        # backward
        dout = self.lastLayer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)

        grads = {}
        grads["W1"], grads["b1"] = self.layers["Affine1"].dW, self.layers["Affine1"].db
        grads["W2"], grads["b2"] = self.layers["Affine2"].dW, self.layers["Affine2"].db
        return grads
