"""xbackprop: the backpropagation layers of *Deep Learning from Scratch* (chapter 5)
on the Python Array API standard, so one code path runs on NumPy, CuPy, PyTorch,
JAX and array-api-strict."""

from .backend import BACKENDS, BackendUnavailableError, get_namespace, to_numpy
from .functions import log_softmax, sigmoid, softmax
from .gradient import directional_check, gradient_check, numerical_gradient
from .layers import AddLayer, Affine, MulLayer, Relu, Sigmoid, SoftmaxWithLoss
from .nets import MultiLayerNet, TwoLayerNet

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "get_namespace",
    "to_numpy",
    "sigmoid",
    "softmax",
    "log_softmax",
    "MulLayer",
    "AddLayer",
    "Relu",
    "Sigmoid",
    "Affine",
    "SoftmaxWithLoss",
    "MultiLayerNet",
    "TwoLayerNet",
    "numerical_gradient",
    "gradient_check",
    "directional_check",
]
