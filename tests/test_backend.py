"""The backend module: names, the XP variable, the CuPy fallback and its strict switch, host copies."""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest

from xbackprop import TwoLayerNet, backend
from xbackprop.backend import BackendUnavailableError, backend_name, get_namespace, to_numpy


def test_numpy_by_default(monkeypatch):
    monkeypatch.delenv("XP", raising=False)
    assert backend_name(get_namespace()) == "numpy"


def test_xp_variable_picks_the_backend(monkeypatch):
    monkeypatch.setenv("XP", "array_api_strict")
    assert backend_name(get_namespace()) == "array_api_strict"
    monkeypatch.setenv("XP", "array-api-strict")
    assert backend_name(get_namespace()) == "array_api_strict"


def test_a_namespace_passes_through(xp):
    assert get_namespace(xp) is xp
    assert backend_name(xp) in backend.BACKENDS


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'; known backends: numpy, cupy, torch"):
        get_namespace("tensorflow")


@pytest.fixture
def cupy_without_gpu(monkeypatch):
    """A ``cupy`` that imports fine but has no CUDA device, as on a laptop."""
    fake = types.ModuleType("cupy")

    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.delenv("XBACKPROP_STRICT_BACKEND", raising=False)
    return fake


def test_cupy_without_gpu_falls_back_with_one_warning(cupy_without_gpu):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xp = get_namespace("cupy")
    assert backend_name(xp) == "numpy"
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "CuPy" in message and "no CUDA-capable device" in message and "falling back to NumPy" in message


def test_cupy_fallback_is_an_error_when_strict(cupy_without_gpu, monkeypatch):
    with pytest.raises(BackendUnavailableError, match="CuPy found no usable CUDA device"):
        get_namespace("cupy", strict=True)
    monkeypatch.setenv("XBACKPROP_STRICT_BACKEND", "1")
    with pytest.raises(BackendUnavailableError):
        get_namespace("cupy")


def test_cupy_with_zero_devices_falls_back(monkeypatch):
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 0))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.warns(RuntimeWarning, match="CuPy found no CUDA device"):
        assert backend_name(get_namespace("cupy", strict=False)) == "numpy"


def test_missing_backend_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    with pytest.raises(BackendUnavailableError, match="backend 'torch' is not installed"):
        get_namespace("torch")


def test_to_numpy_and_dtypes(xp):
    x = xp.asarray([[1.0, 2.0]], dtype=xp.float32)
    host = to_numpy(x)
    assert isinstance(host, np.ndarray) and host.dtype == np.float32
    np.testing.assert_array_equal(host, [[1.0, 2.0]])
    assert backend.resolve_dtype(xp) == xp.__array_namespace_info__().default_dtypes()["real floating"]
    assert backend.resolve_dtype(xp, "float32") == xp.float32
    assert backend.resolve_dtype(xp, "float64") == xp.float64
    assert isinstance(backend.describe_device(xp), str)


def test_backend_name_names_the_namespace_of_its_arrays(xp):
    x = xp.asarray(np.arange(6.0).reshape(2, 3), dtype=xp.float32)
    assert backend_name(backend.array_api_compat.array_namespace(x)) == backend_name(xp)
    assert x.dtype == xp.float32


def test_jax_float64_is_the_users_switch():
    """Selecting JAX leaves its process-wide x64 flag alone; float64 without it is refused, not truncated."""
    jax = pytest.importorskip("jax", reason="JAX is not installed")

    if jax.config.jax_enable_x64:
        pytest.skip("x64 was switched on for this whole process (JAX_ENABLE_X64)")
    xp = backend.get_namespace("jax")
    assert jax.config.jax_enable_x64 is False
    assert backend.resolve_dtype(xp) == xp.float32
    with pytest.raises(ValueError, match="JAX computes in float64 only with its x64 switch on"):
        TwoLayerNet(4, 3, 2, xp=xp, dtype="float64")
    with jax.enable_x64(True):  # the user's own, local switch
        assert TwoLayerNet(4, 3, 2, xp=xp, dtype="float64").params["W1"].dtype == xp.float64
    assert jax.config.jax_enable_x64 is False


def test_get_namespace_of_a_non_name():
    with pytest.raises(TypeError, match="a backend is a name such as 'numpy'"):
        get_namespace(123)
    with pytest.raises(ValueError, match="unknown backend 'nonsense'"):
        get_namespace("nonsense")


def test_rows_and_joined_are_slicing_and_concat_on_every_backend(xp):
    x = xp.asarray(np.arange(12.0).reshape(6, 2))
    np.testing.assert_array_equal(to_numpy(backend.rows(x, 1, 4)), np.arange(12.0).reshape(6, 2)[1:4])
    assert backend.rows(x, 0, 6) is x  # all of it: nothing copied or viewed
    pieces = [xp.asarray(1.0), xp.asarray([2.0, 3.0]), xp.asarray(4.0)]  # 0-D and 1-D, as losses come
    np.testing.assert_array_equal(to_numpy(backend.joined(pieces)), [1.0, 2.0, 3.0, 4.0])
