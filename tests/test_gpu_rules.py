"""A GPU's rules hold on the CPU (see ``gpu_rules.py``): devices that cannot be hashed, no host transfer or
synchronisation in a steady-state training step, none in a captured block, and blocks of 64 steps captured."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from gpu_rules import GpuRuleBroken, GuardedReplayCapturer, gpu_rules, unhashable_devices

from xbackprop import MultiLayerNet, backend, get_namespace, to_numpy
from xbackprop.backend import BackendUnavailableError
from xbackprop.datasets import Dataset
from xbackprop.optimizers import OPTIMIZERS
from xbackprop.training import Schedule, make_steps, to_device, train, training_targets
from xbackprop.training.captured import GRAPH_LENGTHS

GUARDED_BACKENDS = ("torch", "array_api_strict")


def namespace(name):
    try:
        return get_namespace(name, strict=True)
    except BackendUnavailableError as exc:
        pytest.skip(f"{name}: {exc}")


def other_device(xp):
    """array-api-strict's non-default device (a forgotten ``device=`` then fails), else the default."""
    return xp.Device("device1") if hasattr(xp, "Device") else None


def toy_dataset(n_train=300, n_test=100, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_train + n_test, 4, 4), dtype=np.uint8)
    labels = (images.reshape(len(images), -1)[:, :8].mean(axis=1) > 127).astype(np.uint8)
    return Dataset("toy", images[:n_train], labels[:n_train], images[n_train:], labels[n_train:], 255, "test", 2)


def toy_net(xp, device, *, chapter6=False, dtype="float32"):
    return MultiLayerNet(16, [8, 6], 2, xp=xp, device=device, dtype=dtype, seed=0, use_batchnorm=chapter6,
                         use_dropout=chapter6, weight_decay_lambda=0.01 if chapter6 else 0.0)


# The guard itself: each rule raises, naming the line.

@pytest.mark.parametrize("name", GUARDED_BACKENDS)
def test_the_guard_refuses_every_host_transfer_with_its_line(name):
    xp = namespace(name)
    x = xp.asarray(np.arange(6.0).reshape(2, 3), device=other_device(xp))
    attempts = {
        "a Python number": lambda: xp.asarray(0.0),
        "a list": lambda: xp.asarray([1.0, 2.0]),
        "a NumPy array": lambda: xp.asarray(np.ones(3)),
        "bool": lambda: bool(xp.all(x > 0)),
        "int": lambda: int(xp.sum(x)),
        "float": lambda: float(xp.sum(x)),
        "to_numpy": lambda: backend.to_numpy(x),
        "DLPack to the host": lambda: np.from_dlpack(x),
        "a boolean mask": lambda: x[x > 2.0],
        "nonzero": lambda: xp.nonzero(x > 2.0),
    }
    for what, attempt in attempts.items():
        with gpu_rules(xp), pytest.raises(GpuRuleBroken, match=r"at tests/test_gpu_rules\.py:\d+") as caught:
            attempt()
        assert "host" in str(caught.value), what
    assert float(xp.sum(x)) == 15.0  # outside the block, everything is as it was


@pytest.mark.parametrize("name", GUARDED_BACKENDS)
def test_while_capturing_the_guard_refuses_joining_more_than_8_arrays(name):
    xp = namespace(name)
    rows = [xp.zeros((2,)) for _ in range(9)]
    with gpu_rules(xp):
        xp.stack(rows)  # an eager step may
    with gpu_rules(xp, capturing=True):
        xp.stack(rows[:8])
        with pytest.raises(GpuRuleBroken, match="stack of 9 arrays while capturing"):
            xp.stack(rows)
        with pytest.raises(GpuRuleBroken, match="concat of 9 arrays while capturing"):
            xp.concat(rows)


def test_devices_that_cannot_be_hashed_refuse_to_be_keys():
    xp = namespace("array_api_strict")
    with unhashable_devices(), pytest.raises(TypeError, match="unhashable"):
        {other_device(xp): 1}
    assert {other_device(xp): 1}  # put back as it was


# The rules held by training.

@pytest.mark.parametrize("chapter6", [False, True], ids=["mlp", "batchnorm-dropout-decay"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", GUARDED_BACKENDS)
def test_a_steady_state_eager_step_makes_no_host_transfer_and_no_sync(name, optimizer, chapter6):
    xp = namespace(name)
    device = other_device(xp)
    net = toy_net(xp, device, chapter6=chapter6)
    data = to_device(toy_dataset(), xp, device=device)
    targets = training_targets(data, 2)
    steps = make_steps(net, OPTIMIZERS[optimizer](lr=0.1), xp, batch_size=10, compile=False)
    rows = xp.asarray(np.random.default_rng(1).integers(0, 300, (4, 10)), device=device)
    steps(data.x_train, targets, rows[0, :])  # the first step may make what it keeps (the learning rate, say)
    with gpu_rules(xp):
        for k in range(1, 4):
            steps(data.x_train, targets, rows[k, :])
    assert np.isfinite(to_numpy(net.params["W1"])).all()


@pytest.mark.parametrize("chapter6", [False, True], ids=["mlp", "batchnorm-dropout-decay"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", GUARDED_BACKENDS)
def test_training_captures_64_step_blocks_under_the_gpu_rules_on_devices_that_cannot_be_hashed(
        name, optimizer, chapter6):
    """The whole trainer with the stand-in capturer under the rules of a capture; no fallback, and the run
    equals the eager one; the capturer is given back at the end."""
    xp = namespace(name)
    device = other_device(xp)
    results = []
    for capturer in (GuardedReplayCapturer(xp), None):
        net = toy_net(xp, device, chapter6=chapter6, dtype="float64")
        data = to_device(toy_dataset(), xp, device=device, dtype=xp.float64)
        with warnings.catch_warnings(), (unhashable_devices() if name == "array_api_strict" else _nothing()):
            warnings.simplefilter("error")  # no fallback
            result = train(net, OPTIMIZERS[optimizer](lr=0.05), data,
                           Schedule(iters=150, batch_size=10, seed=2, log_interval=100),
                           compile=capturer is not None, capturer=capturer)
        results.append((result, to_numpy(net.params["W1"])))
        if capturer is not None:
            assert capturer.captures >= 2 and capturer.closed
    (captured, w_captured), (eager, w_eager) = results
    assert max(GRAPH_LENGTHS) == 64
    np.testing.assert_allclose(captured.losses, eager.losses, rtol=1e-10)
    np.testing.assert_allclose(w_captured, w_eager, rtol=1e-10, atol=1e-14)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_the_trainer_runs_a_64_step_graph():
    """A block of 100 steps between loss read-backs is one 64-step launch and a few shorter ones."""
    xp = namespace("array_api_strict")
    capturer = GuardedReplayCapturer(xp)
    net = toy_net(xp, None)
    steps = make_steps(net, OPTIMIZERS["sgd"](lr=0.1), xp, batch_size=10, capturer=capturer)
    data = to_device(toy_dataset(), xp)
    rows = xp.asarray(np.random.default_rng(1).integers(0, 300, (100, 10)))
    losses = steps(data.x_train, training_targets(data, 2), rows)  # 64 + 8 * 4 + 4 * 1
    assert tuple(losses.shape) == (100,) and sorted(steps.graphs) == [1, 8, 64] and capturer.captures == 3
    assert steps.fallback_reason is None


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_optimizer_on_devices_that_cannot_be_hashed(optimizer):
    xp = namespace("array_api_strict")
    device = other_device(xp)
    with unhashable_devices():
        net = toy_net(xp, device)
        data = to_device(toy_dataset(), xp, device=device)
        result = train(net, OPTIMIZERS[optimizer](lr=0.05), data, Schedule(iters=30, batch_size=10, seed=0))
    assert len(result.losses) == 30 and np.isfinite(result.losses).all()


@pytest.mark.parametrize("chapter6", [False, True], ids=["mlp", "batchnorm-dropout-decay"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_training_hashes_no_device_even_inside_array_api_strict(optimizer, chapter6):
    """The trainer reads minibatch rows, evaluation chunks and losses without indexing, concat or stack, which
    hash the device inside array-api-strict: so it trains where no code at all may hash one."""
    xp = namespace("array_api_strict")
    device = other_device(xp)
    with unhashable_devices(anywhere=True):
        net = toy_net(xp, device, chapter6=chapter6)
        data = to_device(toy_dataset(), xp, device=device)
        for source in ("full", "batch"):
            result = train(net, OPTIMIZERS[optimizer](lr=0.05), data,
                           Schedule(iters=30, batch_size=10, seed=0, eval_interval=7, eval_batch_size=16,
                                    train_acc_source=source))
            assert len(result.losses) == 30 and np.isfinite(result.losses).all()
            assert [row["iter"] for row in result.history] == [1, 8, 15, 22, 29, 30]


def test_the_command_trains_where_no_code_may_hash_a_device(tmp_path):
    """``python -m xbackprop.train`` on array-api-strict's second device, its devices unhashable everywhere."""

    code = ("import runpy, sys; import array_api_strict._devices as d; d.Device.__hash__ = None; "
            "sys.argv = ['xbackprop.train', '--backend', 'array_api_strict', '--device', 'device1', '--dataset', "
            "'digits', '--iters', '60', '--optimizer', 'adam', '--quiet']; "
            "runpy.run_module('xbackprop.train', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "after 60 iterations" in done.stdout


def test_saving_loading_and_evaluating_on_devices_that_cannot_be_hashed(tmp_path):
    from xbackprop.io import save_params
    from xbackprop.nets import load_net
    from xbackprop.show.evaluation import evaluate

    xp = namespace("array_api_strict")
    device = other_device(xp)
    with unhashable_devices():
        net = toy_net(xp, device, chapter6=True)
        data = to_device(toy_dataset(), xp, device=device)
        train(net, OPTIMIZERS["adam"](), data, Schedule(iters=20, batch_size=10, seed=0))
        save_params(tmp_path / "net.npz", net)
        loaded, _ = load_net(tmp_path / "net.npz", xp=xp, device=device, dtype="float32")
        assert evaluate(loaded, data.x_test, data.t_test).accuracy == evaluate(net, data.x_test, data.t_test).accuracy


def test_the_mpi_all_reduce_on_devices_that_cannot_be_hashed():
    """One rank's all-reduce (a stand-in communicator: MPI's sum over one rank is a copy) through the trainer's
    data-parallel step."""
    from xbackprop.training.distributed import DistributedSync

    class OneRank:
        rank, size = 0, 1

        class MPI:
            SUM = "sum"

        class comm:  # noqa: N801
            @staticmethod
            def Allreduce(send, receive, op):  # noqa: N802
                receive[...] = send

            @staticmethod
            def allreduce(value, op):
                return value

        def cuda_aware(self):
            return False

    xp = namespace("array_api_strict")
    device = other_device(xp)
    with unhashable_devices():
        net = toy_net(xp, device, chapter6=True)
        data = to_device(toy_dataset(), xp, device=device)
        result = train(net, OPTIMIZERS["sgd"](), data, Schedule(iters=20, batch_size=10, seed=0),
                       ranks=DistributedSync(OneRank(), net.params))
    assert len(result.losses) == 20 and np.isfinite(result.losses).all()


def test_a_python_number_that_a_wrapper_copies_to_the_device_is_refused():
    """array-api-compat's torch ``maximum`` (1.16) makes a Python number a tensor on the device first: the
    copy a CUDA device stalls on, and refuses while capturing. (1.15 and older refuse the number outright.)"""
    xp = namespace("torch")
    x = xp.asarray(np.arange(-2.0, 2.0))
    with gpu_rules(xp), pytest.raises((GpuRuleBroken, TypeError)) as caught:
        xp.maximum(x, 0.0)
    if isinstance(caught.value, GpuRuleBroken):
        assert "host data float" in str(caught.value) and "test_gpu_rules.py" in str(caught.value)


@pytest.mark.parametrize("name", ["torch", "array_api_strict"])
def test_a_conv_net_trains_in_captured_blocks_under_the_gpu_rules(name):
    """im2col's windows, pooling's slices and col2im's sums under a capture's rules: no host transfer, no stack of
    many arrays (each window is written into its place instead), and the run equals the eager one."""
    from xbackprop import SimpleConvNet

    xp = namespace(name)
    results = []
    for capturer in (GuardedReplayCapturer(xp), None):
        net = SimpleConvNet((1, 4, 4), {"filter_num": 2, "filter_size": 3, "pad": 1}, hidden_size=5, output_size=2,
                            xp=xp, dtype="float64", seed=0)
        data = to_device(toy_dataset(), xp, dtype=xp.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback
            result = train(net, OPTIMIZERS["adam"](lr=0.01), data, Schedule(iters=80, batch_size=10, seed=2),
                           compile=capturer is not None, capturer=capturer)
        results.append((result.losses, to_numpy(net.params["W1"])))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-15)
