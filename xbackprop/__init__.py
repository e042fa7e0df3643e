"""xbackprop: the backpropagation layers of *Deep Learning from Scratch* (chapter 5)
on the Python Array API standard, so one code path runs on NumPy, CuPy, PyTorch,
JAX and array-api-strict."""

from . import _startup  # noqa: F401  # first: in a command's process, signals during the imports end it cleanly
from ._version import __version__ as __version__
from .backend import BACKENDS, BackendUnavailableError, get_namespace, to_numpy
from .datasets import load_mnist
from .deep_convnet import DeepConvNet
from .functions import (
    cross_entropy_error,
    d_relu,
    d_sigmoid,
    d_softmax_with_loss,
    log_softmax,
    mean_squared_error,
    relu,
    sigmoid,
    softmax,
)
from .gradient import numerical_gradient
from .gradient_check import directional_check, gradient_check
from .layer_net import LayerNet
from .layercheck import check_layer
from .layers import (
    AddLayer,
    Affine,
    BatchNormalization,
    Convolution,
    Dropout,
    MulLayer,
    Pooling,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
)
from .multi_layer_net import MultiLayerNet
from .simple_convnet import SimpleConvNet
from .two_layer_net import TwoLayerNet
from .util import col2im, im2col

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "get_namespace",
    "to_numpy",
    "relu",
    "d_relu",
    "sigmoid",
    "d_sigmoid",
    "softmax",
    "log_softmax",
    "cross_entropy_error",
    "mean_squared_error",
    "d_softmax_with_loss",
    "MulLayer",
    "AddLayer",
    "Relu",
    "Sigmoid",
    "Affine",
    "SoftmaxWithLoss",
    "Dropout",
    "BatchNormalization",
    "Convolution",
    "Pooling",
    "im2col",
    "col2im",
    "check_layer",
    "LayerNet",
    "MultiLayerNet",
    "TwoLayerNet",
    "SimpleConvNet",
    "DeepConvNet",
    "numerical_gradient",
    "gradient_check",
    "directional_check",
    "load_mnist",
]
