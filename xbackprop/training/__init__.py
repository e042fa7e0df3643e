"""Training on the device: the data moved once, the steps (eager, compiled, captured), the loop, MPI.

``device_data`` moves a dataset to the device; ``steps`` makes the steppers; ``loop`` is ``train()``;
``result`` what it returns; ``distributed`` the MPI data-parallel sync.
"""

from __future__ import annotations

from .device_data import DeviceData, to_device, training_targets
from .loop import (
    DIVERGENCE_POLICIES,
    SAMPLINGS,
    TRAIN_ACCURACY_SOURCES,
    Schedule,
    default_eval_interval,
    epochs_to_iters,
    train,
)
from .result import TrainResult
from .steps import (
    GRADIENT_METHODS,
    CompiledSteps,
    EagerSteps,
    make_count,
    make_gradient_step,
    make_steps,
    make_train_step,
)

__all__ = [
    "DeviceData",
    "TrainResult",
    "Schedule",
    "to_device",
    "training_targets",
    "train",
    "make_gradient_step",
    "make_count",
    "make_steps",
    "EagerSteps",
    "CompiledSteps",
    "make_train_step",
    "epochs_to_iters",
    "default_eval_interval",
    "TRAIN_ACCURACY_SOURCES",
    "GRADIENT_METHODS",
    "DIVERGENCE_POLICIES",
    "SAMPLINGS",
]
