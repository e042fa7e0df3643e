"""The one ``xp`` fixture: every layer and net test runs on each importable namespace.

numpy, array_api_strict, torch (CPU) and jax (float64 on, per test) run where they are
installed; cupy runs only where a CUDA device is usable. A backend that cannot run
is skipped with the reason, never silently passed.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from array_api_compat import array_namespace
from array_api_compat import device as device_of

from xbackprop.backend import BackendUnavailableError, backend_name, get_namespace, to_numpy

TEST_BACKENDS = ("numpy", "array_api_strict", "torch", "jax", "cupy")


@pytest.fixture(params=TEST_BACKENDS)
def xp(request):
    """An Array API namespace; skipped with the reason when that backend cannot run here.

    JAX runs each test inside ``jax.enable_x64()``: the tests compare in float64, and
    the switch stays local to the test (xbackprop never flips it).
    """
    try:
        namespace = get_namespace(request.param, strict=True)
    except BackendUnavailableError as exc:
        pytest.skip(f"{request.param}: {exc}")
    if request.param == "jax":
        import jax

        with jax.enable_x64(True):
            yield namespace
    else:
        yield namespace


@pytest.fixture
def device(xp):
    """A device of ``xp`` that is not its default where the backend has one (array_api_strict's "device1",
    as array-api-extra's own tests do), else the default. An array made without ``device=`` then lands on
    another device, and array_api_strict refuses to combine the two: a dropped ``device=`` fails loudly."""
    if backend_name(xp) == "array_api_strict":
        return xp.Device("device1")
    return device_of(xp.empty((0,)))


@pytest.fixture
def rng(request):
    """A NumPy ``Generator`` seeded by the test's name: its data do not depend on which tests ran before,
    and every backend of one test sees the same numbers (a failure on ``[torch]`` reproduces with ``-k``)."""
    return np.random.default_rng(zlib.crc32(request.node.originalname.encode()))


@pytest.fixture
def data_dir() -> Path:
    """``$XBACKPROP_DATA`` (one sub-folder per dataset); skips when unset or missing."""
    root = os.environ.get("XBACKPROP_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("real data not available: set XBACKPROP_DATA to a folder with mnist/ and fashion-mnist/")
    return Path(root)


def assert_close(actual, expected, *, xp, rtol=1e-12, atol=0.0, dtype=None, like=None):
    """Check namespace, shape, dtype and device of ``actual``, then its values against ``expected``.

    ``expected`` is a host NumPy (float64) reference. ``dtype`` defaults to float64;
    ``like`` is an array whose device ``actual`` must share.
    """
    assert backend_name(array_namespace(actual)) == backend_name(xp)
    assert tuple(actual.shape) == tuple(np.shape(expected)), (tuple(actual.shape), np.shape(expected))
    assert actual.dtype == (xp.float64 if dtype is None else dtype)
    if like is not None:
        assert device_of(actual) == device_of(like)
    np.testing.assert_allclose(to_numpy(actual), expected, rtol=rtol, atol=atol)


def asarray(xp, host, dtype=None):
    """Move a host array into ``xp`` (float64 by default for floating input)."""
    host = np.asarray(host)
    if dtype is None and host.dtype.kind == "f":
        dtype = xp.float64
    return xp.asarray(host, dtype=dtype)


def idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed IDX file of uint8 ``array``."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_split(folder, split, images, labels, *, compress=True):
    """Write one split's two IDX files (gzip-compressed by default) into ``folder``."""
    stems = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}[split]
    for stem, array in zip(stems, (images, labels)):
        data = idx_bytes(array)
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)


def learnable(n, rng):
    """28x28 images whose class k lights up row band k: easy, but only if training works."""
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for k in range(10):
        images[labels == k, 2 * k + 4 : 2 * k + 6, :] = 255
    return images, labels


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """A folder with a learnable MNIST-format dataset: 600 training and 200 test images."""
    folder = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    write_split(folder, "train", *learnable(600, rng))
    write_split(folder, "test", *learnable(200, rng))
    return folder


def corrupt_copy(source, destination):
    """A copy of the IDX folder ``source`` whose training images have 64 bytes zeroed mid-deflate-stream."""
    import shutil

    shutil.copytree(source, destination)
    path = destination / "train-images-idx3-ubyte.gz"
    body = bytearray(path.read_bytes())
    body[len(body) // 2 : len(body) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(body))
    return destination


#: Why tests were skipped, in a user's words, by what the skip's own reason mentions (first match wins).
SKIP_GROUPS = (
    (re.compile(r"cupy|CUDA|a GPU is present", re.IGNORECASE),
     "need CuPy and a CUDA GPU: pip install -e '.[gpu]' on a machine with one"),
    (re.compile(r"XBACKPROP_DATA|MNIST|real data", re.IGNORECASE),
     "need real data: set XBACKPROP_DATA to a folder with mnist/ and fashion-mnist/ holding their IDX files"),
    (re.compile(r"pip install torch|PyTorch (is )?not installed|needs PyTorch|uses PyTorch|autograd reference"),
     "need PyTorch: install its CPU build, pip install torch --index-url https://download.pytorch.org/whl/cpu"),
    (re.compile(r"pip install 'jax|JAX (is )?not installed"), "need JAX: pip install 'jax[cpu]'"),
    (re.compile(r"mpiexec|mpi4py"), "need MPI: pip install -e '.[distributed]'"),
    (re.compile(r"matplotlib|Pillow|scikit-learn|pooch|array-api-strict"),
     "need an optional package: pip install -e '.[test]'"),
)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Skips grouped by what would run them, one line a group, instead of one line per skipped place."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    groups: dict[str, int] = {}
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        advice = next((text for pattern, text in SKIP_GROUPS if pattern.search(reason)), f"by design: {reason}")
        groups[advice] = groups.get(advice, 0) + 1
    terminalreporter.write_sep("-", f"{len(skipped)} skipped")
    for advice, count in sorted(groups.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{count:5d}  {advice}")
