"""Run by tests/test_distributed.py under mpiexec: rank 1 raises in the middle of training."""

import sys

from mpi4py import MPI

import xbackprop.train as cli

real_train = cli.train


def train_that_fails_on_rank_1(*args, **kwargs):
    if MPI.COMM_WORLD.Get_rank() == 1:
        raise RuntimeError("rank 1 fails on purpose")
    return real_train(*args, **kwargs)


cli.train = train_that_fails_on_rank_1
sys.exit(cli.main(sys.argv[1:]))
