"""The book's fully connected ``MultiLayerNet`` (chapter 6: weight decay, and with ``MultiLayerNetExtend``'s
batch normalization and dropout), described by one :class:`Architecture` record that saved files, the
command line and its JSON share.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from .architecture import Architecture
from .backend import host_rng, resolve_placement
from .initialization import init_params, layer_sizes
from .layer_net import LayerNet
from .layers import ACTIVATIONS, Affine, BatchNormalization, Dropout, SoftmaxWithLoss

__all__ = ["MultiLayerNet", "parameter_shapes"]


class MultiLayerNet(LayerNet):
    """Fully connected network ``input -> hidden_size_list... -> output`` with softmax loss.

    Parameters
    ----------
    input_size, output_size : int
        Sizes D of the input rows and C of the classes.
    hidden_size_list : sequence of int
        Hidden layer widths, e.g. ``[100, 100]``.
    activation : {"relu", "sigmoid"}
    weight_init_std : float or {"he", "xavier", "relu", "sigmoid"}
        Standard deviation of the Gaussian weights, or a named scale
        (``"he"``/``"relu"``: ``sqrt(2 / fan_in)``, ``"xavier"``/``"sigmoid"``: ``sqrt(1 / fan_in)``).
        Biases start at zero.
    weight_decay_lambda : float
        L2 penalty ``0.5 * lambda * sum(W**2)`` added to the loss (the book's chapter 6).
    use_dropout, dropout_ratio : bool, float
        A :class:`~xbackprop.layers.Dropout` after every hidden activation (chapter 6's
        ``MultiLayerNetExtend``), dropping ``dropout_ratio`` of the units in training.
    use_batchnorm : bool
        A :class:`~xbackprop.layers.BatchNormalization` between every hidden Affine and
        its activation, with ``gamma{i}`` (ones) and ``beta{i}`` (zeros) in ``params``
        and ``running_mean{i}``, ``running_var{i}`` in ``buffers``.
    xp : namespace or str, optional
        Array namespace or backend name; ``None`` reads ``XP`` (see :func:`get_namespace`).
    device : optional
        Device for the parameters (a device object or string such as ``"cuda:0"``).
    dtype : optional
        Floating dtype of the parameters (a dtype of ``xp`` or ``"float32"``/``"float64"``);
        default: the namespace's default floating dtype, as the book's ``np.random.randn``
        (float64 on NumPy, float32 on PyTorch). The trainer asks for float32.
    seed : int, optional
        Seed of NumPy's ``Generator`` that draws the weights on the host, and of the
        dropout masks.

    Attributes
    ----------
    params : dict
        ``W1 (D, H1)``, ``b1 (H1,)``, (``gamma1 (H1,)``, ``beta1 (H1,)``,) ...,
        ``WL (H_{L-1}, C)``, ``bL (C,)``.
    buffers : dict
        ``running_mean{i}``, ``running_var{i}`` with batch normalization, ``draws{i}``
        (masks drawn, ``(1,)`` int32) with dropout; empty otherwise.
    layers : OrderedDict
        ``Affine1``, (``BatchNorm1``,) ``Relu1``, (``Dropout1``,) ..., ``AffineL``, in forward order.
    last_layer : SoftmaxWithLoss
    """

    def __init__(
        self,
        input_size: int,
        hidden_size_list: Sequence[int],
        output_size: int,
        activation: str = "relu",
        weight_init_std: float | str = 0.01,
        weight_decay_lambda: float = 0.0,
        use_dropout: bool = False,
        dropout_ratio: float = 0.5,
        use_batchnorm: bool = False,
        *,
        xp: Any = None,
        device: Any = None,
        dtype: Any = None,
        seed: int | None = None,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}")
        sizes = layer_sizes(input_size, hidden_size_list, output_size)
        xp, device, dtype = resolve_placement(xp, device, dtype)
        weights = init_params(sizes, weight_init_std, seed, xp, device, dtype)

        dropout_seed = host_rng(seed).integers(2**31) if use_dropout else 0

        n_affine = len(sizes) - 1
        layers: OrderedDict[str, Any] = OrderedDict()
        for i in range(1, n_affine + 1):
            # The first Affine sees data: its input gradient is never needed.
            layers[f"Affine{i}"] = Affine(weights[f"W{i}"], weights[f"b{i}"], input_grad=i > 1)
            if i == n_affine:
                break
            if use_batchnorm:
                hidden = weights[f"b{i}"]
                layers[f"BatchNorm{i}"] = BatchNormalization(xp.ones_like(hidden), xp.zeros_like(hidden))
            layers[f"{activation.capitalize()}{i}"] = ACTIVATIONS[activation]()
            if use_dropout:
                draws = xp.zeros((1,), dtype=xp.int32, device=device)
                layers[f"Dropout{i}"] = Dropout(dropout_ratio, seed=int(dropout_seed) + i, draws=draws)
        super().__init__(layers, SoftmaxWithLoss(), weight_decay_lambda=weight_decay_lambda)
        self.activation = activation
        self.use_dropout, self.dropout_ratio, self.use_batchnorm = use_dropout, dropout_ratio, use_batchnorm

    @classmethod
    def from_architecture(cls, architecture: Architecture, weight_init_std: float | str = 0.01, *, xp: Any = None,
                          device: Any = None, dtype: Any = None, seed: int | None = None) -> MultiLayerNet:
        """The net ``architecture`` describes, with fresh weights (keywords as for the constructor)."""
        sizes = architecture.sizes
        return cls(sizes[0], list(sizes[1:-1]), sizes[-1], architecture.activation, weight_init_std,
                   architecture.weight_decay, architecture.dropout is not None,
                   0.5 if architecture.dropout is None else architecture.dropout, architecture.batchnorm,
                   xp=xp, device=device, dtype=dtype, seed=seed)

    @property
    def architecture(self) -> Architecture:
        """This net as an :class:`~xbackprop.architecture.Architecture` record."""
        return Architecture(tuple(self.sizes), self.activation, self.use_batchnorm,
                            self.dropout_ratio if self.use_dropout else None, self.weight_decay_lambda)


def parameter_shapes(architecture: Architecture) -> dict[str, tuple[int, ...]]:
    """The parameter shapes of the MultiLayerNet ``architecture`` describes: W1 (D, H1), b1 (H1,), (gamma1,
    beta1,) ... (known before any array is made, to check a saved file against)."""
    sizes, batchnorm = architecture.sizes, architecture.batchnorm
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        shapes[f"W{i}"], shapes[f"b{i}"] = (fan_in, fan_out), (fan_out,)
        if batchnorm and i < len(sizes) - 1:
            shapes[f"gamma{i}"] = shapes[f"beta{i}"] = (fan_out,)
    return shapes
