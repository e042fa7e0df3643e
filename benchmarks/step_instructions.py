"""One process of the instruction-count comparison of train steps (run under valgrind's callgrind).

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python -m benchmarks.step_instructions xb tiny 100
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python -m benchmarks.step_instructions xb tiny 1100

The difference of the two runs' "Collected" totals over the 1,000 extra steps is the instruction count of one
step, repeatable whatever else the machine is doing. ``xb`` is xbackprop's NumPy step through the trainer's
gradient step, ``hand`` the hand-written one, ``floor`` the five matrix products (``book`` only).

``tiny`` (an 8-5-2 net, batch 4) makes every step pure overhead. ``book`` is the benchmarked 784-50-10 step
at batch 100 (benchmarks/steps.py); run it with ``OPENBLAS_NUM_THREADS=1`` and ``OPENBLAS_CORETYPE=Haswell``
so that every process runs the same BLAS kernel on one thread, and with 20 and 120 steps. Either size draws
its minibatch on the host every step, as the trainer does.
"""

import sys

from . import steps

TINY = {"sizes": (8, 5, 2), "rows": 1_000, "batch": 4}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("xb", "hand", "floor") or argv[1] not in ("tiny", "book") \
            or argv[:2] == ["floor", "tiny"] or not argv[2].isdigit():
        print("usage: python -m benchmarks.step_instructions xb|hand tiny N, or xb|hand|floor book N", file=sys.stderr)
        return 2
    which, size, n = argv[0], argv[1], int(argv[2])
    if size == "book":
        x, t = steps.training_data(n=2_000)
        make = {"xb": lambda: steps.make_xbackprop("numpy", x, t), "hand": lambda: steps.make_handwritten(x, t),
                "floor": lambda: steps.make_matmul_floor(x)}
    else:
        x, t = steps.training_data(n=TINY["rows"], sizes=TINY["sizes"])
        make = {"xb": lambda: steps.make_xbackprop("numpy", x, t, batch=TINY["batch"], sizes=TINY["sizes"]),
                "hand": lambda: steps.make_handwritten(x, t, batch=TINY["batch"], sizes=TINY["sizes"])}
    step = make[which]()
    for _ in range(n):
        step()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
