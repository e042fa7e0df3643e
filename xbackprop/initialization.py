"""The weights a net starts from: Gaussian draws on the host (the standard has no random numbers) at the
book's ``weight_init_std`` or a named scale (He, Xavier), biases zero, placed on the net's device."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

from .backend import host_rng

__all__ = ["NAMED_INITS", "HostDraws", "init_params", "layer_sizes", "parameter_count"]


#: The book's named weight scales, ``std = sqrt(k / fan_in)``: He for ReLU, Xavier for sigmoid.
NAMED_INITS = {"he": 2.0, "relu": 2.0, "xavier": 1.0, "sigmoid": 1.0}


def init_params(
    sizes: Sequence[int], weight_init_std: float | str, seed: int | None, xp: Any, device: Any, dtype: Any
) -> dict[str, Any]:
    """``W{i}`` Gaussian, drawn on the host with NumPy's ``Generator(seed)``, and ``b{i}`` zero, on ``device``."""
    sizes = layer_sizes(sizes[0], sizes[1:-1], sizes[-1])
    if not isinstance(weight_init_std, str) and not 0 < float(weight_init_std) < math.inf:
        raise ValueError(f"weight_init_std must be a positive finite number or a name, got {weight_init_std}")
    rng = host_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        if isinstance(weight_init_std, str):
            key = weight_init_std.lower()
            if key not in NAMED_INITS:
                raise ValueError(
                    f"unknown weight_init_std {weight_init_std!r}; use a number or one of {', '.join(NAMED_INITS)}"
                )
            scale = math.sqrt(NAMED_INITS[key] / fan_in)
        else:
            scale = float(weight_init_std)
        if not scale < float(xp.finfo(dtype).max) / 100:  # standard normal draws stay far below 100
            raise ValueError(f"weight_init_std {weight_init_std} gives weights beyond the range of "
                             f"{getattr(dtype, '__name__', dtype)}: use a smaller scale (the book's 0.01, or he)")
        w = scale * rng.standard_normal((fan_in, fan_out))
        params[f"W{i}"] = xp.asarray(w, dtype=dtype, device=device)
        params[f"b{i}"] = xp.zeros((fan_out,), dtype=dtype, device=device)
    return params


def layer_sizes(input_size: Any, hidden_size_list: Any, output_size: Any) -> list[int]:
    """``[input, *hidden, output]`` as Python ints; any integer type (NumPy's too) is accepted."""
    if isinstance(hidden_size_list, (str, bytes)) or not isinstance(hidden_size_list, Sequence):
        hidden_size_list = [hidden_size_list] if isinstance(hidden_size_list, numbers.Integral) else hidden_size_list
    try:
        sizes = [operator.index(s) for s in (input_size, *hidden_size_list, output_size)]
    except TypeError:
        raise ValueError(
            f"layer sizes must be positive integers, got {[input_size, *hidden_size_list, output_size]}"
        ) from None
    if min(sizes) < 1:
        raise ValueError(f"layer sizes must be positive integers, got {sizes}")
    return sizes


def parameter_count(sizes: Sequence[int]) -> int:
    """P, the weights and biases of a fully connected net with layer ``sizes`` (784-50-10: 39,760);
    a numerical gradient costs 2P loss evaluations."""
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))


class HostDraws:
    """Weights and biases for a net on ``xp``'s ``device`` in ``dtype``: Gaussian draws made on the host, one after
    the other from NumPy's ``Generator(seed)`` (the standard has no random numbers), and zeros."""

    def __init__(self, seed: int | None, xp: Any, device: Any, dtype: Any) -> None:
        self.rng, self.xp, self.device, self.dtype = host_rng(seed), xp, device, dtype

    def gaussian(self, scale: float, *shape: int) -> Any:
        """``scale`` times standard normal draws of ``shape``."""
        return self.xp.asarray(scale * self.rng.standard_normal(shape), dtype=self.dtype, device=self.device)

    def zeros(self, n: int) -> Any:
        return self.xp.zeros((n,), dtype=self.dtype, device=self.device)
