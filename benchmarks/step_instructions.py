"""One process of the instruction-count comparison of step overheads (run under valgrind's callgrind).

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benchmarks/step_instructions.py xb 100
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benchmarks/step_instructions.py xb 1100

A tiny 8-5-2 net and batch of 4 make every step pure overhead; the difference of the two runs' "Collected"
totals over 1,000 steps is the instruction count of one step, repeatable whatever else the machine is doing.
Use ``hand`` instead of ``xb`` for the hand-written step.
"""

import sys

import numpy as np

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))
from benchmarks.handwritten import HandwrittenTwoLayerNet
from xbackprop import TwoLayerNet, get_namespace
from xbackprop.optimizers import SGD
from xbackprop.trainer import make_gradient_step

which, n = sys.argv[1], int(sys.argv[2])
xp = get_namespace('numpy')
rng = np.random.default_rng(0)
X = rng.random((1000, 8), dtype=np.float32); T = rng.integers(0, 2, 1000).astype(np.uint8)
idx = rng.integers(0, 1000, 4)
if which == 'hand':
    hw = HandwrittenTwoLayerNet(8, 5, 2)
    f = lambda: hw.step(X[idx], T[idx], 0.1)
else:
    net = TwoLayerNet(8, 5, 2, xp=xp, seed=0); net.last_layer.check_labels = False; opt = SGD(0.1)
    step = make_gradient_step(net, xp)
    def f():
        g, _ = step(net.params, X, T, idx); opt.update(net.params, g)
for _ in range(n): f()
