"""Data-parallel training over MPI: 2 ranks give the single-process parameters; failures end every rank."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from xbackprop.backend import BackendUnavailableError, get_namespace
from xbackprop.train import main
from xbackprop.training.steps import _shard

pytest.importorskip("mpi4py", reason="data-parallel tests need mpi4py: pip install 'xbackprop[distributed]'")
MPIEXEC = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
if MPIEXEC is None:
    pytest.skip("no mpiexec found (pip install 'xbackprop[distributed]' brings MPICH's)", allow_module_level=True)
TIMEOUT = 120  # seconds: a hang fails the test instead of the CI run


def mpirun(ranks, *args, script=("-m", "xbackprop.train")):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # 2 ranks on a 2-core machine: one thread each
    start = time.perf_counter()
    completed = subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, *script, *args], capture_output=True,
                               text=True, timeout=TIMEOUT, env=env, stdin=subprocess.DEVNULL)
    return completed, time.perf_counter() - start


@pytest.mark.parametrize(
    ("backend", "batch"), [("numpy", 100), ("numpy", 99), ("torch", 100), ("jax", 100), ("cupy", 100)]
)
def test_two_ranks_match_one_process(synthetic_dir, tmp_path, capsys, backend, batch):
    try:
        get_namespace(backend, strict=True)
    except BackendUnavailableError as exc:
        pytest.skip(f"{backend}: {exc}")
    common = ["--data-dir", str(synthetic_dir), "--iters", "25", "--batch-size", str(batch), "--dtype", "float64",
              "--optimizer", "momentum", "--quiet", "--backend", backend]
    assert main([*common, "--save", str(tmp_path / "one.npz")]) == 0
    single = capsys.readouterr().out.splitlines()[-1].split(" after")[0]
    completed, _ = mpirun(2, *common, "--save", str(tmp_path / "two.npz"))
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    staging = "NumPy buffers to MPI" if backend == "numpy" else ("CUDA-aware MPI", "staged through host memory")
    assert "data-parallel over 2 MPI ranks" in lines[0] and lines[0].endswith(staging)
    assert len(lines) == 2  # only rank 0 prints
    assert lines[-1].split(" after")[0] == single  # sharded evaluation gives the same accuracies
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    for key in ("W1", "b1", "W2", "b2"):
        scale = np.abs(one[key]).max()
        assert np.abs(one[key] - two[key]).max() <= 1e-12 * scale, key


def test_batchnorm_ranks_average_their_running_statistics(synthetic_dir, tmp_path):
    """After one step from the same parameters, the average of the two shards' means is the batch's mean:
    the running mean equals one process's; the running variance averages the shards' own variances."""
    common = ["--data-dir", str(synthetic_dir), "--iters", "1", "--quiet", "--batchnorm", "--dtype", "float64"]
    completed, _ = mpirun(2, *common, "--save", str(tmp_path / "two.npz"))
    assert completed.returncode == 0, completed.stderr
    assert main([*common, "--save", str(tmp_path / "one.npz")]) == 0
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    mean1 = one["buffer.running_mean1"]
    assert np.any(mean1) and np.abs(two["buffer.running_mean1"] - mean1).max() <= 1e-12 * np.abs(mean1).max()
    # shard variances leave out the spread between the shards' means: never more than the batch's
    assert np.all(two["buffer.running_var1"] <= one["buffer.running_var1"] * (1 + 1e-12))


def test_a_bad_data_path_on_one_rank_ends_all_ranks(synthetic_dir, tmp_path):
    good = [sys.executable, "-m", "xbackprop.train", "--data-dir", str(synthetic_dir), "--iters", "5", "--quiet"]
    bad = [sys.executable, "-m", "xbackprop.train", "--data-dir", str(tmp_path / "missing"), "--iters", "5", "--quiet"]
    start = time.perf_counter()
    completed = subprocess.run([MPIEXEC, "-n", "1", *good, ":", "-n", "1", *bad], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    assert completed.returncode == 2
    assert completed.stderr.count("error: ") == 1 and "error: rank 1: " in completed.stderr and "missing" in completed.stderr
    assert time.perf_counter() - start < 30


def two_rank_run(synthetic_dir, other_dir):
    """Rank 0 on the synthetic data, rank 1 on ``other_dir``: (completed process, seconds)."""
    common = ["--iters", "5", "--quiet"]
    rank0 = [sys.executable, "-m", "xbackprop.train", "--data-dir", str(synthetic_dir), *common]
    rank1 = [sys.executable, "-m", "xbackprop.train", "--data-dir", str(other_dir), *common]
    start = time.perf_counter()
    completed = subprocess.run([MPIEXEC, "-n", "1", *rank0, ":", "-n", "1", *rank1], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    return completed, time.perf_counter() - start


def test_a_corrupt_file_on_one_rank_ends_all_ranks(synthetic_dir, tmp_path):
    from conftest import corrupt_copy

    completed, seconds = two_rank_run(synthetic_dir, corrupt_copy(synthetic_dir, tmp_path / "corrupt"))
    assert completed.returncode == 2, completed.stderr
    assert "error: rank 1: " in completed.stderr and "train-images-idx3-ubyte.gz" in completed.stderr
    assert "Traceback" not in completed.stderr and seconds < 30


def test_ranks_agree_on_the_net_before_the_first_allreduce(synthetic_dir, tmp_path):
    from conftest import learnable, write_split

    other = tmp_path / "twelve-classes"
    other.mkdir()
    rng = np.random.default_rng(1)
    images, labels = learnable(600, rng)
    labels[:5] = 11  # a rank whose labels imply 12 classes would build 784-50-12
    write_split(other, "train", images, labels)
    write_split(other, "test", *learnable(200, rng))
    completed, seconds = two_rank_run(synthetic_dir, other)
    assert completed.returncode == 2, completed.stderr
    assert "disagree on the net's layer sizes (rank 0: [784, 50, 10], rank 1: [784, 50, 12])" in completed.stderr
    assert "Traceback" not in completed.stderr and seconds < 30


def test_a_stale_rank_variable_does_not_hide_the_error(tmp_path):
    env = {**os.environ, "PMI_RANK": "1"}
    completed = subprocess.run([sys.executable, "-m", "xbackprop.train", "--data-dir", str(tmp_path / "missing")],
                               capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert completed.returncode == 2 and "error: " in completed.stderr and "missing" in completed.stderr


def test_a_rank_failing_mid_training_ends_all_ranks(synthetic_dir):
    script = (str(Path(__file__).with_name("mpi_failing_rank.py")),)
    completed, seconds = mpirun(2, "--data-dir", str(synthetic_dir), "--iters", "50", "--quiet", script=script)
    assert completed.returncode != 0
    assert "error on rank 1: RuntimeError: rank 1 fails on purpose" in completed.stderr
    assert seconds < 30


def test_batch_smaller_than_ranks_is_a_user_error(synthetic_dir):
    completed, _ = mpirun(2, "--data-dir", str(synthetic_dir), "--batch-size", "1", "--quiet")
    assert completed.returncode == 2
    assert completed.stderr.strip() == "python -m xbackprop.train: error: --batch-size 1 is smaller than the 2 MPI ranks"


@pytest.mark.parametrize(("n", "size"), [(100, 2), (99, 2), (10, 3), (2, 2)])
def test_shards_cover_the_batch_once(n, size):
    rows = [range(n)[_shard(n, rank, size)] for rank in range(size)]
    assert [i for r in rows for i in r] == list(range(n))
    assert max(map(len, rows)) - min(map(len, rows)) <= 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_ends_every_rank_promptly(synthetic_dir, signum):
    """A scheduler's time limit (SIGTERM to mpiexec) or Ctrl-C: every rank ends, in a second or two, however the
    ranks stood (one may be waiting inside an all-reduce, where no signal reaches Python). Three tries: the
    hang this guards against came every other time."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    for _ in range(3):
        child = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-m", "xbackprop.train", "--data-dir",
                                  str(synthetic_dir), "--iters", "10000000", "--batch-size", "10", "--quiet"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                 stdin=subprocess.DEVNULL)
        assert child.stdout.readline().startswith("xbackprop ")  # the header: both ranks are training
        time.sleep(0.5)
        child.send_signal(signum)
        started = time.perf_counter()
        try:
            _, err = child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            raise AssertionError("the ranks lived on after the launcher's signal") from None
        assert time.perf_counter() - started < 10
        assert child.returncode == 128 + signum
        assert err.count("terminated by SIGTERM" if signum == signal.SIGTERM else "interrupted") <= 1
        assert "Traceback" not in err and "Abort(" not in err


def test_two_ranks_train_a_conv_net_as_one_process_does(synthetic_dir, tmp_path, capsys):
    """SimpleConvNet's parameters are whatever its layers declare: the same all-reduce carries them."""
    common = ["--net", "simple-convnet", "--data-dir", str(synthetic_dir), "--iters", "6", "--dtype", "float64",
              "--optimizer", "adam", "--lr", "0.001", "--quiet"]
    assert main([*common, "--save", str(tmp_path / "one.npz")]) == 0
    single = capsys.readouterr().out.splitlines()[-1].split(" after")[0]
    completed, _ = mpirun(2, *common, "--save", str(tmp_path / "two.npz"))
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[-1].split(" after")[0] == single
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    for key in ("W1", "b1", "W2", "b2", "W3", "b3"):
        assert np.abs(one[key] - two[key]).max() <= 1e-12 * np.abs(one[key]).max(), key
