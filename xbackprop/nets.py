"""Every net an :class:`~xbackprop.architecture.Architecture` record can name, built from it: the book's fully
connected net, SimpleConvNet and DeepConvNet; and a saved file's net rebuilt, measured before it is built."""

from __future__ import annotations

import math
import os
from typing import Any

from .architecture import Architecture
from .deep_convnet import DeepConvNet
from .io import SavedNet, load_params, read_saved
from .layer_net import LayerNet
from .memory import check_fits
from .multi_layer_net import MultiLayerNet, parameter_shapes
from .simple_convnet import SimpleConvNet

__all__ = ["build_net", "load_net", "net_parameter_shapes"]


def build_net(architecture: Architecture, weight_init_std: float | str = 0.01, *, xp: Any = None,
              device: Any = None, dtype: Any = None, seed: int | None = None) -> LayerNet:
    """The net ``architecture`` describes, with fresh weights: ``weight_init_std`` as its constructor takes it
    (DeepConvNet's are He-initialised, as the book's)."""
    settings = {"xp": xp, "device": device, "dtype": dtype, "seed": seed}
    _, hidden, classes = architecture.sizes[0], architecture.sizes[1], architecture.sizes[-1]
    if architecture.net == "simple-convnet":
        if isinstance(weight_init_std, str):
            raise ValueError(f"SimpleConvNet takes a number for weight_init_std, not {weight_init_std!r}")
        return SimpleConvNet(architecture.input_dim, hidden_size=hidden, output_size=classes,
                             weight_init_std=weight_init_std, **settings)
    if architecture.net == "deep-convnet":
        if weight_init_std not in (0.01, "he", "relu"):  # 0.01: nothing asked for but the common default
            raise ValueError(f"DeepConvNet is He-initialised, as the book's: weight_init_std {weight_init_std!r} "
                             "does not apply to it")
        return DeepConvNet(architecture.input_dim, hidden_size=hidden, output_size=classes, **settings)
    return MultiLayerNet.from_architecture(architecture, weight_init_std, **settings)


def net_parameter_shapes(architecture: Architecture) -> dict[str, tuple[int, ...]]:
    """The parameter shapes of the net ``architecture`` describes, without making its arrays where that can be
    helped: a conv net is built once on the host in float32, after a bound on its size fits the memory."""
    if architecture.net == "multi-layer-net":
        return parameter_shapes(architecture)
    pixels, hidden, classes = architecture.sizes
    # the largest conv-net matrix: SimpleConvNet's first Affine, 30 filters over a quarter of the pixels
    check_fits(4 * (8 * pixels * hidden + hidden * classes + 200_000), f"a {architecture.describe()} net")
    net = build_net(architecture, xp="numpy", dtype="float32", seed=0)
    return {key: tuple(value.shape) for key, value in net.params.items()}


def load_net(path: str | os.PathLike[str], *, xp: Any = None, device: Any = None,
             dtype: Any = None) -> tuple[LayerNet, SavedNet]:
    """The net a saved file describes (its architecture record), rebuilt and loaded, and the file's contents."""
    saved = read_saved(path)
    if saved.architecture is None:
        raise ValueError(f"{path}: does not say the network's layer sizes and activation")
    expected = net_parameter_shapes(saved.architecture)
    shapes = {key: tuple(value.shape) for key, value in saved.params.items()}
    if shapes != expected:
        architecture = saved.architecture
        named = "-".join(map(str, architecture.sizes)) if architecture.net == "multi-layer-net" else architecture.describe()
        net_name = f"a {named} network"
        unknown, missing = sorted(set(shapes) - set(expected)), sorted(set(expected) - set(shapes))
        wrong = [key for key in expected if key in shapes and shapes[key] != expected[key]]
        if missing:
            raise ValueError(f"{path}: lacks {', '.join(missing)}, which {net_name} needs")
        if unknown:
            raise ValueError(f"{path}: holds {', '.join(unknown)}, which {net_name} does not have")
        raise ValueError(f"{path}: {wrong[0]} has shape {shapes[wrong[0]]}, {net_name} needs {expected[wrong[0]]}")
    itemsize = 4 if dtype in ("float32", getattr(xp, "float32", None)) else 8  # unknown: count float64
    check_fits(3 * itemsize * sum(math.prod(shape) for shape in expected.values()), f"{path}'s network")
    net = build_net(saved.architecture, xp=xp, device=device, dtype=dtype)
    load_params(path, net, saved=saved)
    return net, saved
