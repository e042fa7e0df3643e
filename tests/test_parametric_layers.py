"""Parameters belong to layers: a learner's own layer trains, saves and checks like the book's Affine;
chapter 6's Dropout and BatchNormalization on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asarray

from xbackprop import Affine, LayerNet, MultiLayerNet, Relu, to_numpy
from xbackprop.functions import random_bits
from xbackprop.gradient import numerical_gradient
from xbackprop.gradient_check import gradient_check
from xbackprop.io import save_params
from xbackprop.layers import BatchNormalization, Dropout
from xbackprop.nets import load_net
from xbackprop.optimizers import OPTIMIZERS


class Scale:
    """``y = x * s``: a learnable scale per feature, written as a learner would (no base class)."""

    def __init__(self, s):
        self.params = {"s": s}
        self.grads = {}
        self.x = None

    def forward(self, x):
        self.x = x
        return x * self.params["s"]

    def backward(self, dout):
        xp = type(self).namespace(dout)
        self.grads["s"] = xp.sum(dout * self.x, axis=0)
        return dout * self.params["s"]

    @staticmethod
    def namespace(x):
        from array_api_compat import array_namespace

        return array_namespace(x)


class ForgetfulScale(Scale):
    def backward(self, dout):
        return dout * self.params["s"]  # never sets grads["s"]


def scaled_net(xp, rng, layer_class=Scale):
    W1 = asarray(xp, rng.standard_normal((5, 4)))
    b1 = asarray(xp, rng.uniform(0.2, 0.5, 4))
    W2 = asarray(xp, rng.standard_normal((4, 3)))
    b2 = asarray(xp, rng.uniform(0.2, 0.5, 3))
    s = asarray(xp, rng.uniform(0.5, 1.5, 4))
    net = LayerNet([Affine(W1, b1), layer_class(s), Relu(), Affine(W2, b2)])
    x = asarray(xp, rng.standard_normal((6, 5)))
    t = xp.asarray(rng.integers(0, 3, 6), dtype=xp.int64)
    return net, x, t


def test_a_learners_own_layer_gets_gradients_under_the_books_keys(xp, rng):
    net, x, t = scaled_net(xp, rng)
    assert list(net.params) == ["W1", "b1", "s1", "W2", "b2"]
    grads = net.gradient(x, t)
    numerical = net.numerical_gradient(x, t)
    for key in net.params:
        np.testing.assert_allclose(to_numpy(grads[key]), to_numpy(numerical[key]), rtol=1e-6, atol=1e-9)
    assert gradient_check(net, x, t, verbose=False).passed


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_moves_a_learners_own_parameter(xp, rng, name):
    net, x, t = scaled_net(xp, rng)
    before = to_numpy(net.params["s1"]).copy()
    optimizer = OPTIMIZERS[name](lr=0.1)
    first = float(net.loss(x, t))
    for _ in range(20):
        optimizer.update(net.params, net.gradient(x, t))
    assert not np.allclose(to_numpy(net.params["s1"]), before)
    assert float(net.loss(x, t)) < first
    # the pure rule moves it too
    params, _ = optimizer.apply(dict(net.params), net.gradient(x, t), optimizer.init(net.params))
    assert not np.allclose(to_numpy(params["s1"]), to_numpy(net.params["s1"]))


def test_a_forgotten_gradient_is_an_error_not_a_zero(xp, rng):
    net, x, t = scaled_net(xp, rng, ForgetfulScale)
    with pytest.raises(RuntimeError, match=r"ForgetfulScale1.backward left no gradient for its parameter 's' \(s1\)"):
        net.gradient(x, t)


def test_the_same_layer_twice_is_refused(xp, rng):
    W = asarray(xp, rng.standard_normal((4, 4)))
    b = asarray(xp, np.zeros(4))
    relu = Relu()
    with pytest.raises(ValueError, match="Relu1 and Relu2 are the same Relu object"):
        LayerNet([Affine(W, b), relu, Affine(W + 1, b), relu])
    affine = Affine(W, b)
    with pytest.raises(ValueError, match="same Affine object"):
        LayerNet([affine, Relu(), affine])


def test_params_that_belong_to_no_layer_are_refused(xp, rng):
    W, b = asarray(xp, rng.standard_normal((4, 3))), asarray(xp, np.zeros(3))
    with pytest.raises(ValueError, match=r"params \['extra'\] belong to no layer"):
        LayerNet([Affine(W, b)], params={"W": W, "b": b, "extra": b + 1})


def test_numerical_gradient_perturbs_a_writable_array_in_place_and_restores_it(xp, rng):
    """The book's lambda W: net.loss(x, t) ignores its argument; the net reads the perturbed array."""
    net, x, t = scaled_net(xp, rng)
    W1 = net.params["W1"]
    before = to_numpy(W1).copy()
    functional = numerical_gradient(lambda W: net.loss(x, t, {**net.params, "W1": W}), W1)
    if type(W1).__module__.startswith("jax"):  # immutable: copies, and the book's lambda never moves
        with pytest.warns(RuntimeWarning, match="x is immutable, so f receives perturbed copies"):
            book = numerical_gradient(lambda W: net.loss(x, t), W1)
        assert not np.any(to_numpy(book))
    else:
        book = numerical_gradient(lambda W: net.loss(x, t), W1)
        np.testing.assert_array_equal(to_numpy(book), to_numpy(functional))
        assert np.any(to_numpy(book))
    np.testing.assert_array_equal(to_numpy(net.params["W1"]), before)  # restored exactly
    assert net.params["W1"] is W1


def test_an_immutable_array_and_a_function_that_ignores_it_warn(rng):
    jnp = pytest.importorskip("jax.numpy", reason="JAX not installed: pip install 'jax[cpu]'")
    W = jnp.asarray(rng.standard_normal((2, 2)), dtype=jnp.float32)
    with pytest.warns(RuntimeWarning, match="x is immutable"):
        numerical_gradient(lambda _: jnp.sum(jnp.ones(3)), W, h=1e-2)


def test_numerical_gradient_restores_the_array_when_f_raises(rng):
    x = rng.standard_normal(3)
    before = x.copy()

    def explode(_):
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        numerical_gradient(explode, x)
    np.testing.assert_array_equal(x, before)


def test_random_bits_are_the_same_on_every_backend_and_uniform(xp):
    like = xp.zeros((1,), dtype=xp.float32)
    counter = xp.asarray([3], dtype=xp.int32)
    bits = to_numpy(random_bits((200, 50), 11, counter, like=like))
    reference = to_numpy(random_bits((200, 50), 11, np.asarray([3], dtype=np.int32), like=np.zeros(1)))
    np.testing.assert_array_equal(bits, reference)
    assert bits.min() >= 0 and bits.max() < 2**31
    # uniform: each sixteenth of the range holds 1/16 of 10,000 draws within 5 standard deviations
    counts = np.bincount((bits // 2**27).ravel(), minlength=16)
    assert np.all(np.abs(counts - 625) < 5 * np.sqrt(625))
    other = to_numpy(random_bits((200, 50), 11, xp.asarray([4], dtype=xp.int32), like=like))
    assert abs(np.corrcoef(bits.ravel(), other.ravel())[0, 1]) < 0.05  # a new counter is a new draw


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.8])
def test_dropout_drops_the_ratio_and_passes_the_mask_back(xp, ratio):
    layer = Dropout(ratio, seed=3)
    x = xp.ones((100, 100), dtype=xp.float64)
    masks = []
    for _ in range(3):
        out = to_numpy(layer.forward(x, train_flg=True))
        kept = out != 0
        assert abs(1 - kept.mean() - ratio) < 5 * np.sqrt(ratio * (1 - ratio) / kept.size)
        dx = to_numpy(layer.backward(xp.full((100, 100), 2.0, dtype=xp.float64)))
        np.testing.assert_array_equal(dx, 2.0 * kept)
        masks.append(kept)
    assert not np.array_equal(masks[0], masks[1])  # each training pass draws a new mask
    assert to_numpy(layer.draws).tolist() == [3]
    np.testing.assert_allclose(to_numpy(layer.forward(x, train_flg=False)), np.full((100, 100), 1 - ratio))
    same = Dropout(ratio, seed=3)
    np.testing.assert_array_equal(to_numpy(same.forward(x)) != 0, masks[0])  # the same seed, the same units


def test_batch_normalization_matches_the_books_formulas(xp, rng):
    x = rng.standard_normal((8, 5)) * 3 + 1
    gamma, beta = rng.uniform(0.5, 2, 5), rng.standard_normal(5)
    layer = BatchNormalization(asarray(xp, gamma), asarray(xp, beta), momentum=0.9)
    out = to_numpy(layer.forward(asarray(xp, x), train_flg=True))
    mu, var = x.mean(axis=0), x.var(axis=0)
    np.testing.assert_allclose(out, gamma * (x - mu) / np.sqrt(var + 1e-6) + beta, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(layer.running_mean), 0.1 * mu, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(layer.running_var), 0.1 * var, rtol=1e-12)
    test_out = to_numpy(layer.forward(asarray(xp, x), train_flg=False))
    np.testing.assert_allclose(test_out, gamma * (x - 0.1 * mu) / np.sqrt(0.1 * var + 1e-6) + beta, rtol=1e-12)


def test_an_extended_net_has_chapter_6s_names_and_passes_the_check(xp, rng):
    net = MultiLayerNet(6, [5, 4], 3, weight_init_std=0.7, weight_decay_lambda=0.1, use_dropout=True,
                        dropout_ratio=0.3, use_batchnorm=True, xp=xp, dtype="float64", seed=1)
    assert list(net.params) == ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3"]
    assert list(net.layers) == ["Affine1", "BatchNorm1", "Relu1", "Dropout1", "Affine2", "BatchNorm2", "Relu2",
                                "Dropout2", "Affine3"]
    assert list(net.buffers) == ["running_mean1", "running_var1", "draws1", "running_mean2", "running_var2",
                                 "draws2"]
    x = asarray(xp, rng.standard_normal((8, 6)))
    t = xp.asarray(rng.integers(0, 3, 8), dtype=xp.int64)
    result = gradient_check(net, x, t, verbose=False)
    assert result.passed, str(result)
    assert to_numpy(net.buffers["draws1"]).tolist() == [0]  # the check leaves the net's buffers alone
    net.gradient(x, t)  # the book's gradient moves the running statistics and the mask count
    assert to_numpy(net.buffers["draws1"]).tolist() == [1] and np.any(to_numpy(net.buffers["running_mean1"]))


def test_batchnorm_state_is_saved_and_loaded(tmp_path, rng):
    net = MultiLayerNet(6, [5], 3, use_batchnorm=True, use_dropout=True, dropout_ratio=0.25, xp="numpy", seed=0)
    x, t = rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
    for _ in range(3):
        net.gradient(x, t)
    save_params(tmp_path / "bn.npz", net)
    loaded, saved = load_net(tmp_path / "bn.npz", xp="numpy", dtype="float64")
    assert saved.batchnorm and saved.dropout_ratio == 0.25 and loaded.use_batchnorm and loaded.use_dropout
    for key in net.buffers:
        np.testing.assert_array_equal(loaded.buffers[key], net.buffers[key])
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))


def test_a_compiled_jax_block_with_batchnorm_and_dropout_equals_eager_steps(rng):
    jax = pytest.importorskip("jax", reason="JAX not installed: pip install 'jax[cpu]'")
    import jax.numpy as jnp

    from xbackprop.optimizers import Momentum
    from xbackprop.training import CompiledSteps, EagerSteps, make_steps

    x_all = rng.random((40, 6))
    t_all = rng.integers(0, 3, 40).astype(np.uint8)
    indices = rng.integers(0, 40, (5, 8))
    finals = []
    with jax.enable_x64(True):
        for compile in (True, False):
            net = MultiLayerNet(6, [5], 3, use_batchnorm=True, use_dropout=True, xp=jnp, dtype="float64", seed=2)
            steps = make_steps(net, Momentum(lr=0.1), jnp, batch_size=8, compile=compile)
            assert isinstance(steps, CompiledSteps if compile else EagerSteps)
            xs, ts = jnp.asarray(x_all), jnp.asarray(t_all)
            if compile:
                losses = to_numpy(steps(xs, ts, jnp.asarray(indices)))
            else:
                losses = np.array([float(steps(xs, ts, jnp.asarray(indices[i]))) for i in range(5)])
            steps.finish()
            finals.append((losses, {k: to_numpy(v) for k, v in {**net.params, **net.buffers}.items()}))
    np.testing.assert_allclose(finals[0][0], finals[1][0], rtol=1e-12)
    for key, value in finals[0][1].items():
        np.testing.assert_allclose(value, finals[1][1][key], rtol=1e-10, atol=1e-14, err_msg=key)


def test_a_learners_own_layer_is_saved_loaded_and_compiled(tmp_path, rng):
    """s1 goes wherever W1 goes: into the file and back, and through JAX's compiled block of steps."""
    from xbackprop.io import load_params

    net, x, t = scaled_net(np, rng)
    net.params["s1"] = net.params["s1"] * 3.0
    save_params(tmp_path / "scaled.npz", net)
    fresh, _, _ = scaled_net(np, np.random.default_rng(1))
    load_params(tmp_path / "scaled.npz", fresh)
    for key in net.params:
        np.testing.assert_array_equal(fresh.params[key], net.params[key])

    jax = pytest.importorskip("jax", reason="JAX not installed: pip install 'jax[cpu]'")
    import jax.numpy as jnp

    from xbackprop.optimizers import SGD
    from xbackprop.training import CompiledSteps, make_steps

    x_all = rng.standard_normal((10, 5))
    with jax.enable_x64(True):
        finals = []
        for compile in (True, False):
            jnet, _, _ = scaled_net(jnp, np.random.default_rng(2))
            steps = make_steps(jnet, SGD(lr=0.1), jnp, batch_size=4, compile=compile)
            assert isinstance(steps, CompiledSteps) == compile
            xs, ts = jnp.asarray(x_all), jnp.asarray(np.arange(10) % 3)
            indices = np.random.default_rng(3).integers(0, 10, (4, 4))
            if compile:
                steps(xs, ts, jnp.asarray(indices))
            else:
                for i in range(4):
                    steps(xs, ts, jnp.asarray(indices[i]))
            finals.append(to_numpy(jnet.params["s1"]))
        assert not np.allclose(finals[0], to_numpy(scaled_net(jnp, np.random.default_rng(2))[0].params["s1"]))
        np.testing.assert_allclose(finals[0], finals[1], rtol=1e-12)


def test_the_batched_numerical_gradient_of_an_extended_net_equals_the_loop(xp, rng):
    """Layers a stack cannot pass through (BatchNorm, Dropout) send their Affines to the loop: same numbers."""
    net = MultiLayerNet(6, [5, 4], 3, weight_init_std=0.7, use_dropout=True, use_batchnorm=True, xp=xp,
                        dtype="float64", seed=1)
    x = asarray(xp, rng.standard_normal((8, 6)))
    t = xp.asarray(rng.integers(0, 3, 8), dtype=xp.int64)
    loop, batched = net.numerical_gradient(x, t), net.numerical_gradient(x, t, batch=5)
    for key in net.params:  # relative to the array's largest element: the loop's rounding is amplified 1 / 2h times
        a, b = to_numpy(batched[key]), to_numpy(loop[key])
        assert np.abs(a - b).max() <= 1e-9 * np.abs(b).max(), key


def test_the_directional_check_of_an_extended_net_uses_the_training_loss(xp, rng):
    from xbackprop import directional_check

    net = MultiLayerNet(6, [5], 3, weight_init_std=0.7, use_dropout=True, use_batchnorm=True, xp=xp,
                        dtype="float64", seed=1)
    x = asarray(xp, rng.standard_normal((8, 6)))
    t = xp.asarray(rng.integers(0, 3, 8), dtype=xp.int64)
    assert directional_check(net, x, t).rel_error < 1e-6
    assert to_numpy(net.buffers["draws1"]).tolist() == [0]


def test_a_dropout_in_a_listed_net_keeps_its_count_with_the_net(xp, rng):
    """Dropout() without a count gets one when the net is built: every numerical pass draws the same mask."""
    net, x, t = scaled_net(xp, rng)
    layers = [*net.layers.values()]
    listed = LayerNet([layers[0], Dropout(0.3, seed=5), *layers[1:]])
    assert list(listed.buffers) == ["draws1"]
    assert gradient_check(listed, x, t, verbose=False).passed


def test_random_bits_inside_jit_are_the_eager_bits():
    jax = pytest.importorskip("jax", reason="JAX not installed: pip install 'jax[cpu]'")
    import jax.numpy as jnp

    counter = jnp.asarray([7], dtype=jnp.int32)
    eager = random_bits((30, 40), 2, counter, like=jnp.zeros(1))
    compiled = jax.jit(lambda c: random_bits((30, 40), 2, c, like=jnp.zeros(1)))(counter)
    np.testing.assert_array_equal(to_numpy(compiled), to_numpy(eager))
