"""A dataset moved to the device once, with its labels checked once, so no step checks them again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..datasets.dataset import DataError, Dataset
from ..functions import checked_labels, one_hot


@dataclass(frozen=True)
class DeviceData:
    """A dataset on the device: ``x_*`` ``(N, D)`` floats in ``[0, 1]``, ``t_*`` ``(N,)`` uint8 labels."""

    x_train: Any
    t_train: Any
    x_test: Any
    t_test: Any
    num_classes: int


def to_device(dataset: Dataset, xp: Any, *, device: Any = None, dtype: Any = None) -> DeviceData:
    """Copy a host :class:`Dataset` to ``xp`` once: pixels flattened and scaled to ``[0, 1]`` in ``dtype``."""
    dtype = xp.float32 if dtype is None else dtype

    def images(x: np.ndarray) -> Any:
        # uint8 crosses to the device (4x less traffic than floats); the scaling happens there.
        pixels = xp.asarray(np.ascontiguousarray(x.reshape(len(x), -1)), device=device)
        return xp.astype(pixels, dtype) / dataset.max_value

    def labels(t: np.ndarray) -> Any:
        return xp.asarray(np.ascontiguousarray(t), device=device)

    return DeviceData(
        images(dataset.x_train), labels(dataset.t_train), images(dataset.x_test), labels(dataset.t_test),
        dataset.num_classes,
    )


def training_targets(data: DeviceData, num_outputs: int) -> Any:
    """What each step gathers its labels from: one-hot rows ``(N, num_outputs)`` in the images' dtype, made
    once (as the book's ``load_mnist(one_hot_label=True)``), so no step builds them; the ``(N,)`` labels
    themselves where one-hot rows would take more memory than the images (C > D)."""
    if num_outputs > data.x_train.shape[1]:
        return data.t_train
    return one_hot(data.t_train, num_outputs, dtype=data.x_train.dtype)


def _check_labels(data: DeviceData, num_outputs: int) -> None:
    for t in (data.t_train, data.t_test):
        try:
            checked_labels(t, t.shape[0], num_outputs, who=f"a net with {num_outputs} outputs")
        except ValueError as error:
            raise DataError(str(error)) from None
