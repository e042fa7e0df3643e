"""One process of the instruction-count comparison of train steps (run under valgrind's callgrind).

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benchmarks/step_instructions.py xb tiny 100
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benchmarks/step_instructions.py xb tiny 1100

The difference of the two runs' "Collected" totals over the 1,000 extra steps is the instruction count of one
step, repeatable whatever else the machine is doing. ``xb`` is xbackprop's NumPy step through the trainer's
gradient step, ``hand`` the hand-written one, ``floor`` the five matrix products (``book`` only).

``tiny`` (an 8-5-2 net, batch 4) makes every step pure overhead. ``book`` is the benchmarked 784-50-10 step
at batch 100, batch draw included (benchmarks/steps.py); run it with ``OPENBLAS_NUM_THREADS=1`` and
``OPENBLAS_CORETYPE=Haswell`` so that every process runs the same BLAS kernel on one thread, and with 20 and
120 steps.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import steps  # noqa: E402
from benchmarks.handwritten import HandwrittenTwoLayerNet  # noqa: E402
from xbackprop import TwoLayerNet, get_namespace  # noqa: E402
from xbackprop.optimizers import SGD  # noqa: E402
from xbackprop.trainer import make_gradient_step  # noqa: E402

which, size, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if which not in ("xb", "hand", "floor") or size not in ("tiny", "book") or (which, size) == ("floor", "tiny"):
    sys.exit("usage: step_instructions.py xb|hand tiny N, or xb|hand|floor book N")
if size == "book":
    x, t = steps.training_data(n=2_000)
    step = {"xb": lambda: steps.make_xbackprop("numpy", x, t), "hand": lambda: steps.make_handwritten(x, t),
            "floor": lambda: steps.make_matmul_floor(x)}[which]()
else:
    xp = get_namespace("numpy")
    rng = np.random.default_rng(0)
    X = rng.random((1000, 8), dtype=np.float32)
    T = rng.integers(0, 2, 1000).astype(np.uint8)
    idx = rng.integers(0, 1000, 4)
    if which == "hand":
        hw = HandwrittenTwoLayerNet(8, 5, 2)

        def step():
            hw.step(X[idx], T[idx], 0.1)
    else:
        net = TwoLayerNet(8, 5, 2, xp=xp, dtype="float32", seed=0)
        optimizer = SGD(0.1)
        gradient_step = make_gradient_step(net, xp)

        def step():
            grads, _ = gradient_step(net.params, X, T, idx)
            optimizer.update(net.params, grads)
for _ in range(n):
    step()
