"""A dataset on the host, and the errors of data that cannot be had or trusted."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The most classes a dataset's labels may imply when it declares none (``--classes`` raises it).
MAX_CLASSES = 1000


class DataError(ValueError):
    """A data file is missing, truncated, corrupt or inconsistent; the message names the file."""


class DataUnavailableError(DataError):
    """A dataset is neither on disk nor downloadable; the message lists where it was looked for."""


@dataclass(frozen=True)
class Dataset:
    """A dataset on the host.

    ``x_train`` ``(N, H, W)`` and ``x_test`` ``(M, H, W)`` hold raw pixel values
    (uint8) in ``[0, max_value]``; ``t_train`` ``(N,)`` and ``t_test`` ``(M,)`` hold
    integer class labels (uint8). ``source`` says where the data came from.
    """

    name: str
    x_train: np.ndarray
    t_train: np.ndarray
    x_test: np.ndarray
    t_test: np.ndarray
    max_value: int
    source: str
    classes: int | None = None

    @property
    def num_features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def num_classes(self) -> int:
        """The declared number of classes, else one more than the largest label (at most :data:`MAX_CLASSES`)."""
        if self.classes is not None:
            return self.classes
        largest = int(max(self.t_train.max(initial=0), self.t_test.max(initial=0)))
        if largest >= MAX_CLASSES:
            raise DataError(f"{self.name}: labels go up to {largest}; if the data really has {largest + 1} "
                            "classes, declare them (--classes)")
        return largest + 1
