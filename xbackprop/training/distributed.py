"""Synchronous data-parallel SGD over MPI (``mpi4py``): one ``Allreduce`` per step.

Every rank builds the same net from the same seed and draws the same global
minibatch indices; each takes its shard of the global batch, computes ordinary
backprop gradients on it, and the ranks sum ``(shard rows / global rows) *
gradient`` -- packed with the shard's loss into one contiguous buffer -- so every
rank applies the same update as a single process would. Evaluation is sharded
and the correct counts are summed.

Buffers: NumPy arrays go to MPI directly; CuPy arrays go directly when the MPI
library reports CUDA support, otherwise through host memory; other namespaces
are staged through host NumPy arrays.
"""

from __future__ import annotations

import enum
import math
import os
import socket
import sys
import time
from typing import Any, NoReturn

from array_api_compat import device

from ..backend import is_cuda_namespace, is_host_namespace, synchronize, to_numpy
from ..functions import namespace_of

__all__ = ["MPIContext", "launched_by_mpi", "launcher_rank", "first_to_say", "mpi_context", "Staging", "staging_of", "DistributedSync"]

#: Set to 1 to assert that the MPI library is CUDA-aware (CuPy buffers then go to MPI directly).
CUDA_AWARE_ENV = "XBACKPROP_CUDA_AWARE_MPI"
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def launched_by_mpi() -> bool:
    """True when an MPI launcher (``mpiexec``) started this process among several ranks."""
    for name in _SIZE_VARIABLES:
        try:
            if int(os.environ.get(name, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def launcher_rank() -> int:
    """This process's rank as the MPI launcher set it, without importing MPI (0 outside MPI).

    A rank variable counts only beside a world size above 1, so a stale ``PMI_RANK``
    left in a shell does not make a lone process think it is a silent non-root rank.
    """
    if not launched_by_mpi():
        return 0
    for name in _RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


class MPIContext:
    """The world communicator, with the few collectives the trainer needs."""

    def __init__(self) -> None:
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise RuntimeError(f"--distributed needs mpi4py and an MPI library: pip install 'xbackprop[distributed]' ({exc})") from None
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def cuda_aware(self) -> bool:
        """Whether the MPI library says it takes device pointers (or ``XBACKPROP_CUDA_AWARE_MPI=1`` says so)."""
        if os.environ.get(CUDA_AWARE_ENV, "").strip() in {"1", "true", "yes"}:
            return True
        query = getattr(self.MPI, "Query_cuda_support", None)
        try:
            return bool(query()) if query is not None else False
        except Exception:
            return False

    def agree(self, error: BaseException | None) -> BaseException | None:
        """Collective: the first rank's error (as ``RuntimeError("rank k: ...")``), or ``None`` when all are fine.

        Every rank must call this at the same point; it turns a failure on one rank
        into the same clean exit on all of them instead of a hang in the next collective.
        """
        messages = self.comm.allgather(None if error is None else str(error))
        for rank, message in enumerate(messages):
            if message is not None:
                return error if rank == self.rank else RuntimeError(f"rank {rank}: {message}")
        return None

    def abort(self, message: str, code: int = 2) -> NoReturn:
        """Print ``message`` (unless empty) and end every rank (``MPI_Abort``): for failures that strike
        mid-collective, where the other ranks may wait for ever.

        Never returns: some MPI libraries return from ``Abort`` for a moment before
        the launcher ends the process, so this process ends itself too.
        """
        if message:
            print(message, file=sys.stderr, flush=True)
            time.sleep(0.05)  # the launcher forwards the line from its pipe; MPI_Abort would cut it off
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 2)  # the MPI library's own "Abort(code) on node ..." would make the one line several
        try:
            self.comm.Abort(code)
        finally:
            os._exit(code)  # no cleanup that could wait on another rank

    def agree_on(self, what: str, value: Any) -> None:
        """Collective: raise ``RuntimeError`` on every rank unless all ranks hold the same ``value``."""
        values = self.comm.allgather(value)
        if any(v != values[0] for v in values):
            listed = ", ".join(f"rank {rank}: {v}" for rank, v in enumerate(values))
            raise RuntimeError(f"the ranks disagree on {what} ({listed})")

    def describe(self) -> str:
        version = " ".join(self.MPI.Get_library_version().split()[:3])
        return f"{self.size} MPI ranks ({version})"


_SAYING: list[Any] = []  # the socket held by the rank that says why the job ends


def first_to_say(why: str) -> bool:
    """Whether this rank is the first of the job's ranks on this machine to claim ``why`` (a word), so that one
    line, not one per rank, says why every rank ends. The claim is a name in Linux's abstract socket namespace,
    unique to the launcher's proxy, and it is released when the process ends; elsewhere rank 0 says it."""
    if not sys.platform.startswith("linux"):
        return launcher_rank() == 0
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        claim.bind(f"\0xbackprop-{why}-{os.getppid()}")
    except OSError:
        claim.close()
        return False
    _SAYING.append(claim)
    return True


def mpi_context() -> MPIContext:
    return MPIContext()


class Staging(enum.Enum):
    """How arrays reach MPI; the value is how the run's first line says it."""

    HOST_BUFFERS = "NumPy buffers to MPI"
    DEVICE_BUFFERS = "CUDA-aware MPI"
    THROUGH_HOST = "staged through host memory"


def staging_of(context: MPIContext, xp: Any) -> Staging:
    """How arrays of ``xp`` reach MPI: directly (NumPy, CUDA-aware CuPy) or through host memory."""
    if is_host_namespace(xp):
        return Staging.HOST_BUFFERS
    if is_cuda_namespace(xp) and context.cuda_aware():
        return Staging.DEVICE_BUFFERS
    return Staging.THROUGH_HOST


class DistributedSync:
    """Packs gradients and loss into one buffer, sums it across ranks and unpacks the global mean.

    Each rank passes ``allreduce`` its weight, ``shard rows / global batch rows``, so
    the sum is the gradient of the mean loss over the global batch.
    """

    def __init__(self, context: MPIContext, params: dict[str, Any]) -> None:
        self.context = context
        self.keys = list(params)
        self.shapes = [tuple(params[key].shape) for key in self.keys]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        first = params[self.keys[0]]
        self.xp = namespace_of(first)
        self.dtype = first.dtype
        self.staging = staging_of(context, self.xp)

    def allreduce(self, grads: dict[str, Any], loss: Any, weight: float) -> tuple[dict[str, Any], Any]:
        """Global ``sum_r weight_r * grads_r`` and ``sum_r weight_r * loss_r``, on every rank."""
        xp = self.xp
        pieces = [xp.reshape(grads[key], (-1,)) for key in self.keys]
        pieces.append(xp.reshape(xp.asarray(loss, dtype=self.dtype), (1,)))
        packed = xp.concat(pieces) * weight
        if self.staging is not Staging.THROUGH_HOST:
            reduced = xp.empty_like(packed)
            if self.staging is Staging.DEVICE_BUFFERS:
                synchronize(xp)  # MPI reads device memory outside the stream that fills it
            self.context.comm.Allreduce(packed, reduced, op=self.context.MPI.SUM)
        else:
            host = to_numpy(packed)
            summed = host.copy()  # a fresh buffer: the arrays made from it outlive this step
            self.context.comm.Allreduce(host, summed, op=self.context.MPI.SUM)
            reduced = xp.asarray(summed, device=device(packed))
        out, start = {}, 0
        for key, shape, size in zip(self.keys, self.shapes, self.sizes):
            out[key] = xp.reshape(reduced[start : start + size], shape)
            start += size
        return out, reduced[start]

    def sum_int(self, value: int) -> int:
        return int(self.context.comm.allreduce(int(value), op=self.context.MPI.SUM))
