"""The book's own chapter 7 and 8 scripts, run with their imports pointed at xbackprop as README's table says.

The book's code is not part of xbackprop: these tests copy it from a checkout of
oreilly-japan/deep-learning-from-scratch named by ``XBACKPROP_BOOK`` and are skipped without one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BOOK = os.environ.get("XBACKPROP_BOOK")
pytestmark = pytest.mark.skipif(not BOOK, reason="set XBACKPROP_BOOK to a checkout of "
                                                 "oreilly-japan/deep-learning-from-scratch to run the book's scripts")

#: README's import table, as substitutions of the book's import lines.
IMPORTS = {
    "from common.layers import *": "from xbackprop.layers import *",
    "from common.gradient import numerical_gradient": "from xbackprop.gradient import numerical_gradient",
    "from common.trainer import Trainer": "from xbackprop.trainer import Trainer",
    "from dataset.mnist import load_mnist": "from xbackprop import load_mnist",
}


def pointed_at_xbackprop(source: str) -> str:
    for book, ours in IMPORTS.items():
        source = source.replace(book, ours)
    return source


def book_scripts(tmp_path: Path, chapter: str, *names: str) -> Path:
    for name in names:
        source = (Path(BOOK) / chapter / name).read_text(encoding="utf-8")
        (tmp_path / name).write_text(pointed_at_xbackprop(source), encoding="utf-8")
    return tmp_path


def run(folder: Path, script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script], cwd=folder, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MPLBACKEND": "Agg", **env})


def test_chapter_7s_gradient_check_differs_by_the_books_amounts(tmp_path):
    folder = book_scripts(tmp_path, "ch07", "simple_convnet.py", "gradient_check.py")
    completed = run(folder, "gradient_check.py")
    assert completed.returncode == 0, completed.stderr
    differences = dict(line.split() for line in completed.stdout.splitlines())
    assert sorted(differences) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    # 1e-13 to 1e-10 where smooth; a ReLU or max switching inside h gives up to about 1e-4, as the book's own run
    assert all(float(value) < 1e-3 for value in differences.values())
    assert sum(float(value) < 1e-9 for value in differences.values()) >= 3


@pytest.mark.skipif(not os.environ.get("XBACKPROP_DATA"), reason="needs real data: set XBACKPROP_DATA")
@pytest.mark.parametrize(("chapter", "scripts", "main"), [
    ("ch07", ("simple_convnet.py", "train_convnet.py"), "train_convnet.py"),
    ("ch08", ("deep_convnet.py", "train_deepnet.py"), "train_deepnet.py"),
])
def test_the_books_training_scripts_run_with_the_books_trainer(tmp_path, chapter, scripts, main):
    """Cut as the book's own comment suggests (fewer images) and to one epoch, on Fashion-MNIST."""
    folder = book_scripts(tmp_path, chapter, *scripts)
    script = (folder / main).read_text()
    script = re.sub(r"(\(x_train, t_train\), \(x_test, t_test\) = load_mnist\(flatten=False\)\n)",
                    r"\1x_train, t_train = x_train[:300], t_train[:300]\nx_test, t_test = x_test[:100], t_test[:100]\n",
                    script)
    script = script.replace("max_epochs = 20", "max_epochs = 1").replace("epochs=20", "epochs=1")
    (folder / main).write_text(script.replace("plt.show()", "plt.savefig('curve.png')"))
    completed = run(folder, main, XBACKPROP_DATASET="fashion-mnist")
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].startswith("train loss:") and re.fullmatch(r"=== epoch:1, train acc:[\d.]+, test acc:[\d.]+ ===",
                                                              lines[1])
    assert "Saved Network Parameters!" in lines[-1]
