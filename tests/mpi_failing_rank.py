"""Run by tests/test_distributed.py under mpiexec: rank 1 raises in the middle of training.

The failure is injected for the length of one ``main`` call, in this process only.
"""

import sys
from unittest import mock

from mpi4py import MPI

import xbackprop.train as cli
import xbackprop.train_run as run
from xbackprop.training import train


def train_that_fails_on_rank_1(*args, **kwargs):
    if MPI.COMM_WORLD.Get_rank() == 1:
        raise RuntimeError("rank 1 fails on purpose")
    return train(*args, **kwargs)


with mock.patch.object(run, "train", train_that_fails_on_rank_1):
    status = cli.main(sys.argv[1:])
sys.exit(status)
