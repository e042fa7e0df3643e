"""Data-parallel scaling: per-step time for 1 and 2 MPI ranks and the all-reduce's share of the step.

    python -m benchmarks.mpi_scaling                          # launches itself under mpiexec with 1 and 2 ranks
    mpiexec -n K python -m benchmarks.mpi_scaling --worker    # one measurement with K ranks

784-50-10 TwoLayerNet, global batch 100 (and 1,000), float32, NumPy, one BLAS thread per rank;
the step is the trainer's: gather the shard, backprop, one Allreduce of the packed gradients, SGD.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from xbackprop.files import replace_atomically
from xbackprop.training.distributed import launcher_rank


def worker(batch: int, steps: int) -> dict:
    from mpi4py import MPI

    from xbackprop import TwoLayerNet, get_namespace
    from xbackprop.optimizers import SGD
    from xbackprop.timing import warm_up
    from xbackprop.training import EagerSteps
    from xbackprop.training.distributed import DistributedSync, mpi_context

    context = mpi_context()
    xp = get_namespace("numpy")
    rng = np.random.default_rng(0)
    x_all = rng.random((60_000, 784), dtype=np.float32)
    t_all = rng.integers(0, 10, 60_000).astype(np.uint8)
    net = TwoLayerNet(784, 50, 10, xp=xp, dtype="float32", seed=0)
    ranks = DistributedSync(context, net.params)
    train_step = EagerSteps(net, SGD(lr=0.1), xp, batch_size=batch, ranks=ranks)  # the trainer's own step

    def step():
        train_step(x_all, t_all, rng.integers(0, 60_000, batch))

    loss, grads, _ = net.loss_and_gradient(x_all[:batch], t_all[:batch])

    def allreduce_only():
        ranks.allreduce(grads, loss, train_step.weight)

    timings = {}
    for name, fn in (("step", step), ("allreduce", allreduce_only)):
        warm_up(fn)
        samples = []
        for _ in range(steps):
            context.comm.Barrier()
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        # a step is as slow as the slowest rank
        timings[name] = context.comm.allreduce(statistics.median(samples), op=MPI.MAX)
    return {"ranks": context.size, "batch": batch, "step_ms": timings["step"] * 1e3,
            "allreduce_ms": timings["allreduce"] * 1e3, "mpi": context.describe()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help="measure under an existing mpiexec")
    parser.add_argument("--batch", type=int, action="append", help="global batch sizes (default 100 and 1000)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--ranks", type=int, action="append", help="rank counts to launch (default 1 and 2)")
    parser.add_argument("--json", help="write the rows as JSON")
    args = parser.parse_args()
    batches = args.batch or [100, 1000]
    if args.worker:
        rows = [worker(batch, args.steps) for batch in batches]
        if launcher_rank() == 0:
            print(json.dumps(rows))
        return 0

    mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    rows = []
    for ranks in args.ranks or [1, 2]:
        command = [mpiexec, "-n", str(ranks), sys.executable, "-m", "benchmarks.mpi_scaling", "--worker", "--steps",
                   str(args.steps)]
        for batch in batches:
            command += ["--batch", str(batch)]
        out = subprocess.run(command, capture_output=True, text=True, check=True, env=env, timeout=900).stdout
        rows += json.loads(out.strip().splitlines()[-1])
    print(f"# data-parallel scaling, {rows[0]['mpi'].split(' (')[1].rstrip(')')}, {os.cpu_count()} CPUs, "
          "one BLAS thread per rank\n")
    print("| global batch | ranks | ms/step | speed-up | efficiency | all-reduce ms | all-reduce share |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        base = next(r for r in rows if r["batch"] == row["batch"] and r["ranks"] == 1)["step_ms"]
        speedup = base / row["step_ms"]
        row.update(speedup=speedup, efficiency=speedup / row["ranks"], allreduce_share=row["allreduce_ms"] / row["step_ms"])
        print(f"| {row['batch']} | {row['ranks']} | {row['step_ms']:.3f} | {speedup:.2f}× | {row['efficiency']:.0%} | "
              f"{row['allreduce_ms']:.3f} | {row['allreduce_share']:.0%} |")
    if args.json:
        with replace_atomically(args.json) as temporary:
            temporary.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
