"""One record of a fully connected net's architecture, which every place that describes a net reads.

:class:`Architecture` is what :class:`~xbackprop.multi_layer_net.MultiLayerNet` is built from and reports,
what a saved file says, what ``python -m xbackprop.train`` plans (one flag per option, generated from the
record), prints in its header and writes into its JSON. A new chapter-6-style option is a field here, its
layer in :mod:`xbackprop.layers` and its place in :class:`~xbackprop.multi_layer_net.MultiLayerNet`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .layers import ACTIVATIONS

__all__ = ["Architecture", "NETS", "Option", "OPTIONS", "option_default"]


@dataclass(frozen=True)
class Option:
    """How an architecture field appears outside the net: its command-line ``flag`` with its ``help``,
    ``choices``, ``metavar`` and ``kind`` (the name of a type in :mod:`xbackprop.cli`; a bool is a switch), the
    member that holds it in a saved file (``saved_as``; ``None``: not saved; its default value too unless
    ``saved_when_default`` is false), and how a header names a value other than the default (``shown``)."""

    flag: str
    help: str
    saved_as: str | None = None
    kind: str | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    shown: Callable[[Any], str] | None = None
    saved_when_default: bool = True


def _option(**settings: Any) -> dict[str, Option]:
    return {"option": Option(**settings)}


#: The nets a record can describe, with the hidden width each has unless told: the book's fully connected net
#: (chapters 5 and 6), SimpleConvNet (chapter 7) and DeepConvNet (chapter 8).
NETS = {"multi-layer-net": 50, "simple-convnet": 100, "deep-convnet": 50}


@dataclass(frozen=True)
class Architecture:
    """``sizes`` (input, hidden..., output), the hidden ``activation``, batch normalization between every hidden
    Affine and its activation, the ``dropout`` ratio after every hidden activation (``None``: no dropout), the
    L2 ``weight_decay`` lambda (chapter 6), and which ``net`` it is: a conv net's sizes are its square grey
    images' pixels, its hidden width and its classes, its layers the book's (no chapter-6 option applies).
    """

    sizes: tuple[int, ...]
    activation: str = field(default="relu", metadata=_option(
        flag="--activation", choices=tuple(ACTIVATIONS), saved_as="activation", help="hidden activation"))
    batchnorm: bool = field(default=False, metadata=_option(
        flag="--batchnorm", saved_as="batchnorm", shown=lambda value: "batchnorm",
        help="batch normalization between every hidden Affine and its activation (chapter 6)"))
    dropout: float | None = field(default=None, metadata=_option(
        flag="--dropout", kind="ratio", metavar="RATIO", saved_as="dropout_ratio",
        shown=lambda value: f"dropout {value:g}",
        help="dropout of RATIO of the hidden units in training (chapter 6)"))
    weight_decay: float = field(default=0.0, metadata=_option(
        flag="--weight-decay", kind="non_negative_float", metavar="LAMBDA",
        shown=lambda value: f"weight decay {value:g}",
        help="L2 weight decay 0.5 * LAMBDA * sum(W**2) (chapter 6)"))
    net: str = field(default="multi-layer-net", metadata=_option(
        flag="--net", choices=tuple(NETS), saved_as="net", saved_when_default=False,
        help="the book's fully connected net, or its conv nets of chapters 7 and 8 (on square grey images)"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(int(n) for n in self.sizes))
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is none of xbackprop's ({', '.join(ACTIVATIONS)})")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout ratio {self.dropout} is not in [0, 1)")
        if self.net not in NETS:
            raise ValueError(f"net {self.net!r} is none of xbackprop's ({', '.join(NETS)})")
        if self.net != "multi-layer-net":
            self._check_conv_net()

    def _check_conv_net(self) -> None:
        chosen = [name for name in OPTIONS if name != "net" and getattr(self, name) != option_default(name)]
        if chosen:
            raise ValueError(f"{self.net} has the book's layers: {', '.join(chosen)} does not apply to it")
        side = math.isqrt(self.sizes[0])
        if len(self.sizes) != 3 or side * side != self.sizes[0]:
            raise ValueError(f"{self.net} takes square grey images and one hidden layer: sizes {self.sizes} are not "
                             "(pixels, hidden, classes) of square images")

    @property
    def input_dim(self) -> tuple[int, int, int] | None:
        """A conv net's ``(1, H, W)`` (``None`` for the fully connected net)."""
        side = math.isqrt(self.sizes[0])
        return None if self.net == "multi-layer-net" else (1, side, side)

    def describe(self) -> str:
        """``784-50-10 relu``, then every option that differs from its default: `` + batchnorm + dropout 0.5``;
        a conv net as ``simple-convnet 784-100-10``."""
        sizes = "-".join(map(str, self.sizes))
        if self.net != "multi-layer-net":
            return f"{self.net} {sizes}"
        extras = [option.shown(getattr(self, name)) for name, option in OPTIONS.items()
                  if option.shown is not None and getattr(self, name) != option_default(name)]
        return f"{sizes} {self.activation}" + "".join(f" + {extra}" for extra in extras)

    def merged(self, given: Mapping[str, Any]) -> Architecture:
        """This architecture with the options ``given`` (``None``: not given) in place of its own."""
        return dataclasses.replace(self, **{name: value for name, value in given.items() if value is not None})

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "sizes": list(self.sizes)}


def option_default(name: str) -> Any:
    """The default of the :class:`Architecture` field ``name``."""
    return Architecture.__dataclass_fields__[name].default


#: Every option of :class:`Architecture` (all fields but ``sizes``), by field name.
OPTIONS: dict[str, Option] = {f.name: f.metadata["option"] for f in dataclasses.fields(Architecture) if f.metadata}
