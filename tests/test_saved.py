"""Saved networks: hostile or mistaken files refused before anything large is read; a save replaces the old file
whole."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from xbackprop import (
    MultiLayerNet,
    TwoLayerNet,
)
from xbackprop.backend import to_numpy
from xbackprop.io import load_params, save_params
from xbackprop.nets import load_net


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npy_header(shape, dtype="<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@pytest.fixture
def net():
    return TwoLayerNet(6, 4, 3, xp="numpy", dtype="float32", seed=0)


def write_npz(path, members, *, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name if "." in name else f"{name}.npy", data)


def test_save_and_load_round_trip_exactly_at_the_path(net, tmp_path):
    path = tmp_path / "model"  # no suffix added
    save_params(path, net, dataset="mnist")
    assert path.is_file() and not (tmp_path / "model.npz").exists()
    loaded, saved = load_net(path, xp="numpy", dtype="float32")
    assert saved.dataset == "mnist" and saved.activation == "relu" and saved.sizes == [6, 4, 3]
    for key in net.params:
        np.testing.assert_array_equal(to_numpy(loaded.params[key]), to_numpy(net.params[key]))


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"W1": npy_header((200_000, 200_000))}, r"W1 claims 128 bytes, its header 160,000,000,000"),  # 149 GiB
        ({"W1": npy_bytes(np.zeros((6, 4), np.complex64))}, "W1 holds complex64 numbers"),
        ({"W1": npy_bytes(np.zeros((6, 5), np.float32))}, r"W1 has shape \(6, 5\), the network needs \(6, 4\)"),
        ({"W1": npy_bytes(np.zeros((6, 4), np.float32))}, r"holds \['W1'\], the network needs"),
        ({"notes.txt": b"hello"}, "'notes.txt', which is not an array"),
    ],
)
def test_hostile_or_mistaken_files_are_refused(net, tmp_path, members, message):
    path = tmp_path / "bad.npz"
    write_npz(path, members)
    before = {key: to_numpy(value).copy() for key, value in net.params.items()}
    with pytest.raises(ValueError, match=message):
        load_params(path, net)
    for key in net.params:  # all or nothing: the net is as it was
        np.testing.assert_array_equal(to_numpy(net.params[key]), before[key])


def test_a_zip_bomb_is_refused_before_it_is_inflated(net, tmp_path):
    import tracemalloc

    path = tmp_path / "bomb.npz"
    # A valid (6, 4) header followed by 64 MB of zeros: small on disk, huge inflated.
    write_npz(path, {"W1": npy_header((6, 4)) + bytes(64 << 20)}, compression=zipfile.ZIP_DEFLATED)
    tracemalloc.start()
    with pytest.raises(ValueError, match="W1 claims 67,108,992 bytes, its header 96"):
        load_params(path, net)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, peak


def test_an_npy_file_is_not_a_saved_network(net, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ValueError, match=r"x.npy: not a saved xbackprop network \(not an .npz archive\)"):
        load_params(path, net)




def test_killing_a_save_never_destroys_the_previous_model(net, tmp_path):
    """SIGKILL at random moments of a loop of saves: the file is always a whole, loadable model."""
    path = tmp_path / "model.npz"
    save_params(path, net)
    script = (
        "import sys; from xbackprop import TwoLayerNet; from xbackprop.io import save_params\n"
        "net = TwoLayerNet(784, 300, 10, xp='numpy', dtype='float32', seed=1)\n"
        "print('ready', flush=True)\n"
        "while True: save_params(sys.argv[1], net)\n"
    )
    for delay in (0.05, 0.13, 0.21, 0.34):
        child = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE)
        assert child.stdout.readline() == b"ready\n"
        time.sleep(delay)
        child.kill()
        child.wait()
        loaded, _ = load_net(path, xp="numpy")  # raises if the file were truncated
        assert loaded.sizes in ([6, 4, 3], [784, 300, 10])
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model.npz"]
    assert all(name.startswith(".model.npz.") for name in leftovers)  # a killed process cannot clean up




@pytest.mark.parametrize("kind", ["sizes", "structured", "negative", "nested", "activation", "extra", "device", "fifo"])
def test_an_untrusted_model_file_is_measured_before_anything_is_built(tmp_path, kind):
    """A 1 KB file declaring a 784-2000000-10 net once took 18 GB; a device or FIFO grew or hung."""
    from xbackprop.nets import load_net

    path = tmp_path / "model.npz"
    tiny = {"W1": np.zeros((2, 2), np.float32), "b1": np.zeros(2, np.float32)}
    if kind == "sizes":
        np.savez(path, sizes=np.array([784, 500_000, 10]), activation=np.array("relu"), **tiny)
        message = "lacks W2, b2, which a 784-500000-10 network needs"
    elif kind == "structured":
        np.savez(path, sizes=np.zeros(3, np.dtype([("a", np.int64), ("b", np.int64)])), activation=np.array("relu"))
        message = "sizes holds"
    elif kind == "negative":
        np.savez(path, sizes=np.array([4, -1, 2]), activation=np.array("relu"), **tiny)
        message = r"layer sizes \[4, -1, 2\] are not those of a network"
    elif kind == "nested":
        np.savez(path, sizes=np.array([[2, 2]]), activation=np.array("relu"), **tiny)
        message = r"sizes holds int64 of shape \(1, 2\)"
    elif kind == "extra":
        np.savez(path, sizes=np.array([2, 2]), activation=np.array("relu"), W9=np.zeros(1, np.float32), **tiny)
        message = "holds W9, which a 2-2 network does not have"
    elif kind == "activation":
        np.savez(path, sizes=np.array([2, 2]), activation=np.array("tanh"), **tiny)
        message = "activation 'tanh' is none of xbackprop's"
    elif kind == "device":
        path.symlink_to("/dev/zero")
        message = "not a regular file"
    else:
        os.mkfifo(path)
        message = "not a regular file"
    with pytest.raises(ValueError, match=message):
        load_net(path, xp="numpy")




def poisoned_copy(path, target, **changes):
    with np.load(path) as saved:
        members = {key: saved[key] for key in saved.files}
    members.update(changes)
    np.savez(target, **members)
    return target


@pytest.mark.parametrize(("changes", "message"), [
    ({"W1": np.full((784, 20), 1e39)}, r"W1 holds values up to 1e\+39, beyond float32's largest"),
    ({"buffer.running_var1": -np.ones(20)}, "running_var1 holds negative variances"),
    ({"buffer.running_var1": np.full(20, np.nan)}, "running_var1 holds NaN or infinite numbers"),
    ({"dropout_ratio": np.array(1.5)}, r"dropout ratio 1.5 is not in \[0, 1\)"),
])
def test_a_saved_net_whose_numbers_are_legal_but_poisonous_is_refused(tmp_path, changes, message):

    net = MultiLayerNet(784, [20], 10, use_batchnorm=True, use_dropout=True, xp="numpy", dtype="float64", seed=0)
    save_params(tmp_path / "good.npz", net)
    path = poisoned_copy(tmp_path / "good.npz", tmp_path / "bad.npz", **changes)
    with pytest.raises(ValueError, match=message) as caught:
        load_net(path, xp="numpy", dtype="float32")
    assert str(path) in str(caught.value)


def test_a_saved_net_with_nan_is_refused(tmp_path):
    from xbackprop.io import load_params, save_params

    net = TwoLayerNet(4, 3, 2, xp="numpy", seed=0)
    net.params["W2"] = net.params["W2"] * np.nan
    save_params(tmp_path / "nan.npz", net)
    with pytest.raises(ValueError, match="W2 holds NaN or infinite numbers"):
        load_params(tmp_path / "nan.npz", TwoLayerNet(4, 3, 2, xp="numpy", seed=0))
