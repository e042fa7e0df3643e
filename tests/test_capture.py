"""Captured blocks of training steps, tested through the stand-in capturer that replays the step over the same
static arrays: equal to eager steps, split into a few graphs, refilled, re-captured, and never silently wrong."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import asarray

from xbackprop import MultiLayerNet, TwoLayerNet, to_numpy
from xbackprop.backend import backend_name
from xbackprop.optimizers import SGD, Adam
from xbackprop.training import EagerSteps, Schedule, make_steps, make_train_step
from xbackprop.training.captured import CapturedSteps, ReplayCapturer


def setting(xp, *, batchnorm=False, optimizer=SGD, seed=0, dtype="float64"):
    if backend_name(xp) == "jax":
        pytest.skip("jax: its arrays are immutable, so nothing is captured; JAX compiles blocks with lax.scan")
    rng = np.random.default_rng(seed)
    x_all = asarray(xp, rng.random((60, 6)), dtype=getattr(xp, dtype))
    t_all = xp.asarray(rng.integers(0, 3, 60).astype(np.uint8))
    net = MultiLayerNet(6, [5, 4], 3, use_batchnorm=batchnorm, use_dropout=batchnorm, xp=xp, dtype=dtype,
                        seed=seed)
    indices = xp.asarray(rng.integers(0, 60, (100, 8)))
    return net, optimizer(lr=0.1), x_all, t_all, indices


class CountingCapturer(ReplayCapturer):
    def __init__(self):
        self.captured = []

    def capture(self, fn):
        self.captured.append(fn)
        return fn


def captured(net, optimizer, xp, capturer):
    def eager():
        return EagerSteps(net, optimizer, xp, batch_size=8)
    return CapturedSteps(net, optimizer, xp, capturer, make_train_step(net, optimizer, xp), eager)


def run_eager(net, optimizer, xp, x_all, t_all, indices):
    steps = EagerSteps(net, optimizer, xp, batch_size=8)
    return np.array([float(steps(x_all, t_all, indices[i, :])) for i in range(indices.shape[0])])


@pytest.mark.parametrize("options", [{}, {"batchnorm": True, "optimizer": Adam}])
def test_captured_blocks_equal_eager_steps(xp, options):
    net, optimizer, x_all, t_all, indices = setting(xp, **options)
    steps = captured(net, optimizer, xp, CountingCapturer())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        losses = np.concatenate([to_numpy(steps(x_all, t_all, indices[:70, :])),
                                 to_numpy(steps(x_all, t_all, indices[70:, :]))])
    steps.finish()
    twin, twin_optimizer, *_ = setting(xp, **options)
    expected = run_eager(twin, twin_optimizer, xp, x_all, t_all, indices)
    np.testing.assert_allclose(losses, expected, rtol=1e-12)
    for key, value in {**twin.params, **twin.buffers}.items():
        mine = net.params.get(key, net.buffers.get(key))
        np.testing.assert_allclose(to_numpy(mine), to_numpy(value), rtol=1e-10, atol=1e-14, err_msg=key)


def test_a_block_is_a_few_launches_of_graphs_captured_once(xp):
    net, optimizer, x_all, t_all, indices = setting(xp)
    capturer = CountingCapturer()
    steps = captured(net, optimizer, xp, capturer)
    assert to_numpy(steps(x_all, t_all, indices[:77, :])).shape == (77,)  # 64 + 8 + 5 x 1
    assert sorted(steps.graphs) == [1, 8, 64] and len(capturer.captured) == 3
    steps(x_all, t_all, indices[:23, :])  # 8 + 8 + 7 x 1: no new graph
    assert len(capturer.captured) == 3


def test_a_changed_learning_rate_captures_again(xp):
    net, optimizer, x_all, t_all, indices = setting(xp)
    capturer = CountingCapturer()
    steps = captured(net, optimizer, xp, capturer)
    steps(x_all, t_all, indices[:8, :])
    optimizer.lr = 0.05
    steps(x_all, t_all, indices[8:16, :])
    assert len(capturer.captured) == 2
    steps.finish()
    twin, twin_optimizer, *_ = setting(xp)
    run_eager(twin, twin_optimizer, xp, x_all, t_all, indices[:8, :])
    twin_optimizer.lr = 0.05
    run_eager(twin, twin_optimizer, xp, x_all, t_all, indices[8:16, :])
    np.testing.assert_allclose(to_numpy(net.params["W1"]), to_numpy(twin.params["W1"]), rtol=1e-12)


class StaleIndexCapturer(ReplayCapturer):
    """Wrong on purpose: the graph keeps the minibatch rows it was captured with (a rebound, not refilled,
    index buffer), so every launch trains on the same rows."""

    def capture(self, fn):
        return lambda: None  # records nothing: a launch leaves everything as it was


class FailingCapturer(ReplayCapturer):
    def capture(self, fn):
        raise RuntimeError("calling cuBLAS API during stream capture is currently unsupported")


@pytest.mark.parametrize(("capturer", "reason"), [
    (StaleIndexCapturer(), "differs from eager steps in loss"),
    (FailingCapturer(), "RuntimeError: calling cuBLAS API during stream capture"),
])
def test_a_wrong_or_failing_capture_falls_back_with_one_warning_and_trains_right(xp, capturer, reason):
    net, optimizer, x_all, t_all, indices = setting(xp)
    steps = captured(net, optimizer, xp, capturer)
    with pytest.warns(RuntimeWarning, match="captured training steps fell back to eager ones") as caught:
        losses = np.concatenate([to_numpy(steps(x_all, t_all, indices[:50, :])),
                                 to_numpy(steps(x_all, t_all, indices[50:, :]))])
    assert len(caught) == 1 and reason in str(caught[0].message)
    steps.finish()
    twin, twin_optimizer, *_ = setting(xp)
    np.testing.assert_allclose(losses, run_eager(twin, twin_optimizer, xp, x_all, t_all, indices), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(net.params["W2"]), to_numpy(twin.params["W2"]), rtol=1e-12)


def test_a_launch_that_corrupts_a_parameter_is_caught(xp):
    net, optimizer, x_all, t_all, indices = setting(xp)

    class Corrupting(ReplayCapturer):
        def capture(self, fn):
            def launch():
                fn()
                net.params["b1"][...] = net.params["b1"] + 1e-3  # a launch on the wrong stream, say
            return launch

    steps = captured(net, optimizer, xp, Corrupting())
    with pytest.warns(RuntimeWarning, match=r"differs from eager steps in b1 \(beyond rounding\)"):
        steps(x_all, t_all, indices[:8, :])
    twin, twin_optimizer, *_ = setting(xp)
    run_eager(twin, twin_optimizer, xp, x_all, t_all, indices[:8, :])
    np.testing.assert_allclose(to_numpy(net.params["b1"]), to_numpy(twin.params["b1"]), rtol=1e-12)


def test_the_trainer_captures_where_a_capturer_is_given_and_not_with_compile_off(monkeypatch):
    from xbackprop.training.captured import CapturedSteps as Chosen

    net = TwoLayerNet(4, 3, 2, xp="numpy", dtype="float64")
    assert isinstance(make_steps(net, SGD(), net.xp, batch_size=2, capturer=ReplayCapturer()), Chosen)
    assert isinstance(make_steps(net, SGD(), net.xp, batch_size=2), EagerSteps)  # NumPy: nothing to capture
    assert isinstance(make_steps(net, SGD(), net.xp, batch_size=2, compile=False, capturer=ReplayCapturer()),
                      EagerSteps)
    monkeypatch.setenv("XBACKPROP_CAPTURE", "replay")
    assert isinstance(make_steps(net, SGD(), net.xp, batch_size=2), Chosen)
    monkeypatch.setenv("XBACKPROP_CAPTURE", "0")
    assert isinstance(make_steps(net, SGD(), net.xp, batch_size=2), EagerSteps)


def test_a_whole_training_run_replayed_equals_the_eager_run():
    from xbackprop.datasets import Dataset
    from xbackprop.training import to_device, train

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (300, 4, 4), dtype=np.uint8)
    labels = (images.reshape(300, -1).mean(axis=1) > 127).astype(np.uint8)
    dataset = Dataset("toy", images[:200], labels[:200], images[200:], labels[200:], 255, "test", 2)
    results = []
    for capturer, compile in ((ReplayCapturer(), True), (None, False)):
        net = TwoLayerNet(16, 8, 2, xp="numpy", dtype="float32", seed=1)
        data = to_device(dataset, net.xp)
        result = train(net, SGD(lr=0.5), data, Schedule(iters=130, batch_size=10, seed=2), compile=compile,
                       capturer=capturer)
        results.append((result, net.params["W1"].copy()))
    assert results[0][0].losses == results[1][0].losses
    assert results[0][0].history == results[1][0].history
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_the_capturing_matmul_hook_is_what_affine_calls():
    from xbackprop import Affine
    from xbackprop.hooks import MATMUL

    calls = []

    def product(a, b):
        calls.append((a.shape, b.shape))
        return a @ b

    layer = Affine(np.ones((3, 2)), np.zeros(2))
    token = MATMUL.set(product)
    try:
        layer.forward(np.ones((4, 3)))
        layer.backward(np.ones((4, 2)))
    finally:
        MATMUL.reset(token)
    assert calls == [((4, 3), (3, 2)), ((3, 4), (4, 2)), ((4, 2), (2, 3))]
    assert layer.forward(np.ones((1, 3))).shape == (1, 2) and len(calls) == 3  # outside the block: plain @


def test_a_capturer_that_cannot_be_set_up_means_eager_steps_with_one_warning(monkeypatch):
    import xbackprop.training.steps as steps_module

    def broken(xp, like):
        raise RuntimeError("libcublas.so is not loaded in this process")

    monkeypatch.setattr(steps_module, "capturer_for", broken)
    net = TwoLayerNet(4, 3, 2, xp="numpy", dtype="float64")
    with pytest.warns(RuntimeWarning, match="captured training steps are unavailable .*libcublas"):
        assert isinstance(make_steps(net, SGD(), net.xp, batch_size=2), EagerSteps)


class Launches(ReplayCapturer):
    """Replays with ``during`` set for the length of every launch (never during the eager check)."""

    def __init__(self, during):
        self.during = during

    def capture(self, fn):
        def launch():
            self.during["on"], self.during["k"] = True, 0
            try:
                fn()
            finally:
                self.during["on"] = False
        return launch


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fault", ["skipped", "doubled"])
def test_a_graph_that_skips_or_doubles_one_step_of_64_is_caught(xp, fault, dtype):
    net, optimizer, x_all, t_all, indices = setting(xp, dtype=dtype, optimizer=Adam)
    real = make_train_step(net, optimizer, xp)
    during = {"on": False, "k": 0}

    def step(params, carried, *data):
        out = real(params, carried, *data)
        if during["on"]:
            during["k"] += 1
            if during["k"] == 40:
                return (params, carried, out[2]) if fault == "skipped" else real(out[0], out[1], *data)
        return out

    steps = CapturedSteps(net, optimizer, xp, Launches(during), step, lambda: EagerSteps(net, optimizer, xp,
                                                                                          batch_size=8))
    with pytest.warns(RuntimeWarning, match="the first launch of the 64-step graph differs from eager steps"):
        steps(x_all, t_all, indices[:64, :])
    steps.finish()
    twin, twin_optimizer, *_ = setting(xp, dtype=dtype, optimizer=Adam)
    run_eager(twin, twin_optimizer, xp, x_all, t_all, indices[:64, :])
    np.testing.assert_array_equal(to_numpy(net.params["W1"]), to_numpy(twin.params["W1"]))


def wider_setting(xp, optimizer):
    """A 64-32-10 float32 net at batch 32: wide enough for rounding differences to grow over 64 steps."""
    if backend_name(xp) == "jax":
        pytest.skip("jax: its arrays are immutable, so nothing is captured; JAX compiles blocks with lax.scan")
    rng = np.random.default_rng(0)
    x_all = xp.asarray(rng.random((500, 64)).astype(np.float32))
    t_all = xp.asarray(rng.integers(0, 10, 500).astype(np.uint8))
    net = MultiLayerNet(64, [32], 10, xp=xp, dtype="float32", seed=0)
    return net, optimizer(lr=0.01 if optimizer is Adam else 0.1), x_all, t_all, xp.asarray(rng.integers(0, 500,
                                                                                                         (64, 32)))


@pytest.mark.parametrize("optimizer", [SGD, Adam])
def test_a_graph_whose_products_round_differently_is_not_taken_for_a_wrong_one(xp, optimizer):
    """Another cuBLAS handle or algorithm rounds float32 products differently, and the difference grows over
    64 steps: the check must pass it (a check at float32's resolution per element would fall back for good)."""
    from xbackprop.hooks import MATMUL

    net, optimizer, x_all, t_all, indices = wider_setting(xp, optimizer)

    def rounded_otherwise(a, b):  # every element of the product one float32 ulp away from the eager one's
        product = a @ b
        return product + product * 2.0**-23

    class OtherProducts(ReplayCapturer):
        def capture(self, fn):
            def launch():
                token = MATMUL.set(rounded_otherwise)
                try:
                    fn()
                finally:
                    MATMUL.reset(token)
            return launch

    steps = CapturedSteps(net, optimizer, xp, OtherProducts(), make_train_step(net, optimizer, xp),
                          lambda: EagerSteps(net, optimizer, xp, batch_size=32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        steps(x_all, t_all, indices)
    assert steps.fallback_reason is None
    steps.finish()
    twin, twin_optimizer, *_ = wider_setting(xp, type(optimizer))
    eager = EagerSteps(twin, twin_optimizer, xp, batch_size=32)
    for k in range(64):
        eager(x_all, t_all, indices[k, :])
    worst = max(np.max(np.abs(to_numpy(net.params[key]) - to_numpy(twin.params[key]))
                       / (np.abs(to_numpy(twin.params[key])) + 1e-12)) for key in net.params)
    assert 1e-5 < worst < 1e-1  # beyond float32's resolution per element, yet rounding
