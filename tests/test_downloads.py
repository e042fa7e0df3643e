"""Downloads against a local HTTP server on 127.0.0.1 serving files the test makes."""

from __future__ import annotations

import gzip
import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from conftest import idx_bytes

from xbackprop.datasets import DataUnavailableError, download_idx, load_dataset

pytest.importorskip("pooch", reason="downloads use pooch")

RNG = np.random.default_rng(7)
IMAGES = {"train": RNG.integers(0, 256, (30, 28, 28), dtype=np.uint8), "test": RNG.integers(0, 256, (10, 28, 28), dtype=np.uint8)}
LABELS = {"train": RNG.integers(0, 10, 30, dtype=np.uint8), "test": RNG.integers(0, 10, 10, dtype=np.uint8)}
RAW = {
    "train-images-idx3-ubyte": idx_bytes(IMAGES["train"]),
    "train-labels-idx1-ubyte": idx_bytes(LABELS["train"]),
    "t10k-images-idx3-ubyte": idx_bytes(IMAGES["test"]),
    "t10k-labels-idx1-ubyte": idx_bytes(LABELS["test"]),
}
CHECKSUMS = {stem: {"raw": hashlib.sha256(data).hexdigest()} for stem, data in RAW.items()}
HANG_SECONDS = 3.0
BOMB = gzip.compress(b"\0\0\x08\x03" + (1).to_bytes(4, "big") * 3 + bytes(40 << 20), compresslevel=1)


class Handler(BaseHTTPRequestHandler):
    """``/good/``, ``/badsum/``, ``/truncated/``, ``/missing/``, ``/hang/``, ``/stall/``, ``/endless/`` and
    ``/bomb/`` mirrors."""

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        mode, _, name = self.path.strip("/").partition("/")
        stem = name.removesuffix(".gz")
        if mode == "missing" or stem not in RAW:
            self.send_error(404)
            return
        body = gzip.compress(RAW[stem])
        if mode == "badsum":
            body = gzip.compress(RAW[stem][:-1] + b"\x07")
        if mode == "bomb":  # 40 MB of zeros behind a valid IDX header: 40 kB on the wire
            body = BOMB
        if mode == "hang":
            time.sleep(HANG_SECONDS)
        if mode == "trickle":  # a byte every 0.3 s: inside every read timeout, never done
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for k in range(len(body)):
                    self.wfile.write(body[k : k + 1])
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:
                pass  # the client hung up, as it should
            return
        if mode == "endless":  # a body with no end, bounded here: 4,096 chunks of 64 kB at most
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(4096):
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass  # the client hung up, as it should
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode in ("truncated", "stall"):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if mode == "stall":
                time.sleep(HANG_SECONDS)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_mirror_fills_the_cache(server, tmp_path):
    cache = tmp_path / "mnist"
    download_idx(cache, CHECKSUMS, [f"{server}/good/"], timeout=5, progressbar=False)
    assert leftovers(cache) == sorted(f"{stem}.gz" for stem in RAW)
    assert gzip.decompress((cache / "t10k-labels-idx1-ubyte.gz").read_bytes()) == RAW["t10k-labels-idx1-ubyte"]


def test_load_dataset_downloads_then_reads_the_cache(server, tmp_path, monkeypatch):
    monkeypatch.delenv("XBACKPROP_DATA", raising=False)
    cache = tmp_path / "cache"
    data = load_dataset("mnist", cache_dir=cache, mirrors=[f"{server}/missing/", f"{server}/good/"],
                        timeout=5, progressbar=False, checksums=CHECKSUMS)
    np.testing.assert_array_equal(data.x_train, IMAGES["train"])
    np.testing.assert_array_equal(data.t_test, LABELS["test"])
    assert data.source.endswith("(downloaded)")
    again = load_dataset("mnist", cache_dir=cache, download=False, checksums=CHECKSUMS)
    assert again.source == str(cache)


def test_a_cached_file_that_changed_is_fetched_again(server, tmp_path, monkeypatch):
    monkeypatch.delenv("XBACKPROP_DATA", raising=False)
    cache = tmp_path / "cache"
    load_dataset("mnist", cache_dir=cache, mirrors=[f"{server}/good/"], timeout=5, progressbar=False,
                 checksums=CHECKSUMS)
    labels = cache / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros_like(LABELS["test"]))))  # rewritten behind our back
    with pytest.raises(DataUnavailableError, match="mnist not found"):
        load_dataset("mnist", cache_dir=cache, download=False, checksums=CHECKSUMS)
    assert not labels.exists()  # never trusted again
    data = load_dataset("mnist", cache_dir=cache, mirrors=[f"{server}/good/"], timeout=5, progressbar=False,
                        checksums=CHECKSUMS)
    np.testing.assert_array_equal(data.t_test, LABELS["test"])


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("badsum", "SHA-256 does not match"), ("truncated", "connection broken mid-transfer"), ("missing", "HTTP 404")],
)
def test_bad_downloads_leave_nothing_behind(server, tmp_path, mode, reason):
    cache = tmp_path / "mnist"
    with pytest.raises(DataUnavailableError, match=reason):
        download_idx(cache, CHECKSUMS, [f"{server}/{mode}/"], timeout=5, progressbar=False)
    assert leftovers(cache) == []


def test_a_hanging_server_times_out(server, tmp_path):
    cache = tmp_path / "mnist"
    start = time.perf_counter()
    with pytest.raises(DataUnavailableError, match="timed out"):
        download_idx(cache, {"t10k-labels-idx1-ubyte": CHECKSUMS["t10k-labels-idx1-ubyte"]},
                     [f"{server}/hang/"], timeout=0.5, progressbar=False)
    assert time.perf_counter() - start < HANG_SECONDS
    assert leftovers(cache) == []


def test_a_bad_mirror_falls_through_to_a_good_one(server, tmp_path):
    cache = tmp_path / "mnist"
    download_idx(cache, CHECKSUMS, [f"{server}/badsum/", f"{server}/truncated/", f"{server}/good/"],
                 timeout=5, progressbar=False)
    assert len(leftovers(cache)) == 4


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("endless", "sent more than 1,048,576 bytes"),
        ("stall", "stalled mid-transfer"),
        ("bomb", "decompresses to more than 1,048,576 bytes"),
    ],
)
def test_hostile_mirrors_are_cut_off(server, tmp_path, mode, reason):
    cache = tmp_path / "mnist"
    start = time.perf_counter()
    with pytest.raises(DataUnavailableError, match=reason):
        download_idx(cache, CHECKSUMS, [f"{server}/{mode}/"], timeout=(5, 1), progressbar=False,
                     max_bytes=1 << 20, max_idx_bytes=1 << 20)
    assert time.perf_counter() - start < 10
    assert leftovers(cache) == []


def test_a_trickling_mirror_ends_at_the_deadline(server, tmp_path):
    cache = tmp_path / "mnist"
    start = time.perf_counter()
    with pytest.raises(DataUnavailableError, match=r"took more than 1.5 s"):
        download_idx(cache, CHECKSUMS, [f"{server}/trickle/"], timeout=(5, 1), progressbar=False, deadline=1.5)
    assert time.perf_counter() - start < 1.5 + 1 + 1  # the deadline, one read, and slack
    assert leftovers(cache) == []


def test_concurrent_runs_repair_one_cache_without_failing_each_other(server, tmp_path):
    """Three processes find the same corrupt cached file at once: each removes it or finds it gone, and fetches."""
    import json
    import os
    import subprocess
    import sys

    cache = tmp_path / "cache"
    download_idx(cache / "mnist", CHECKSUMS, [f"{server}/good/"], timeout=5, progressbar=False)
    (cache / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"corrupt"))
    repair = ("import json, sys; from xbackprop.datasets import load_dataset; "
              "load_dataset('mnist', cache_dir=sys.argv[1], mirrors=[sys.argv[2]], timeout=5, progressbar=False, "
              "checksums=json.loads(sys.argv[3]))")
    env = {key: value for key, value in os.environ.items() if key != "XBACKPROP_DATA"}
    runs = [subprocess.Popen([sys.executable, "-c", repair, str(cache), f"{server}/good/", json.dumps(CHECKSUMS)],
                             env=env, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for run in runs:
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, stderr
    assert leftovers(cache / "mnist") == sorted(f"{stem}.gz" for stem in RAW)


def test_stale_staging_folders_are_removed(server, tmp_path):
    import os

    cache = tmp_path / "mnist"
    stale, fresh = cache / ".staging-killed", cache / ".staging-running"
    stale.mkdir(parents=True)
    fresh.mkdir()
    (stale / "part.gz").write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    download_idx(cache, CHECKSUMS, [f"{server}/good/"], timeout=5, progressbar=False)
    assert not stale.exists() and fresh.exists()  # a download of another process may still be running


@pytest.mark.parametrize("kind", ["a file", "read-only", "under /proc"])
def test_an_unusable_cache_folder_is_unavailable_data(tmp_path, monkeypatch, kind):
    import os

    monkeypatch.delenv("XBACKPROP_DATA", raising=False)
    if kind == "a file":
        cache = tmp_path / "file"
        cache.write_text("not a folder")
    elif kind == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        cache = tmp_path / "ro"
        cache.mkdir(mode=0o500)
    else:
        cache = "/proc/xbackprop-cache"
    with pytest.raises(DataUnavailableError, match="not writable"):
        load_dataset("mnist", cache_dir=cache, mirrors=["http://127.0.0.1:9/"], timeout=1, progressbar=False)


def test_a_termination_during_a_download_leaves_no_staging_folder(server, tmp_path):
    """A scheduler's SIGTERM while a mirror is still sending: one line, 143, and the cache as it was."""
    import os
    import signal
    import subprocess
    import sys

    cache = tmp_path / "cache"
    env = {key: value for key, value in os.environ.items() if key != "XBACKPROP_DATA"}
    env.update(XBACKPROP_CACHE=str(cache), XBACKPROP_MIRRORS=f"{server}/trickle/")
    child = subprocess.Popen([sys.executable, "-m", "xbackprop.train", "--dataset", "mnist", "--iters", "1", "--quiet"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    give_up = time.monotonic() + 60
    while not list(cache.glob("*/.staging-*")) and time.monotonic() < give_up:
        time.sleep(0.1)
    assert list(cache.glob("*/.staging-*")), "the download never started"
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 143 and stderr.endswith("python -m xbackprop.train: terminated by SIGTERM\n"), stderr
    assert list(cache.glob("*/.staging-*")) == [] and list(cache.glob("*/*.gz")) == []


def test_a_stalled_mirror_is_given_up_before_the_deadline(server, tmp_path):
    """A byte every 0.3 s is far under 1 kB/s: given up after the stall window, not at the deadline."""
    cache = tmp_path / "mnist"
    start = time.perf_counter()
    with pytest.raises(DataUnavailableError, match=r"stalled: under 1 kB/s for 1 s"):
        download_idx(cache, CHECKSUMS, [f"{server}/trickle/"], timeout=(5, 1), progressbar=False, deadline=60,
                     stall_after=1.0)
    assert time.perf_counter() - start < 1 + 1 + 1  # the stall window, one read, and slack
    assert leftovers(cache) == []
