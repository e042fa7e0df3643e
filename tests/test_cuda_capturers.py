"""The CUDA capturers' own logic (``TorchCapturer``, ``CupyCapturer``) on stand-in ``torch.cuda``
and ``cupy.cuda`` modules that log what the real ones would be asked: which stream waits for which and when, what
is current after a capture, which error a failed capture reports, and what is given back."""

from __future__ import annotations

import sys
import types

import pytest

from xbackprop.backends.cupy import CupyCapturer
from xbackprop.backends.torch import TorchCapturer


class Stream:
    def __init__(self, name, cuda):
        self.name, self.cuda = name, cuda

    # torch's
    def wait_stream(self, other):
        self.cuda.log.append(f"{self.name} waits for {other.name}")

    # CuPy's
    def record(self):
        self.cuda.log.append(f"event recorded on {self.name}")
        return f"event of {self.name}"

    def wait_event(self, event):
        self.cuda.log.append(f"{self.name} waits for {event}")

    def synchronize(self):
        self.cuda.log.append(f"{self.name} synchronised")

    def begin_capture(self):
        self.cuda.log.append(f"capture begins on {self.name}")

    def end_capture(self):
        self.cuda.log.append("capture ends")
        if self.cuda.capture_broken:
            raise RuntimeError("previous error during capture")
        return Graph(self.cuda)

    def __enter__(self):
        self.previous, self.cuda.current = self.cuda.current, self
        return self

    def __exit__(self, *exc):
        self.cuda.current = self.previous
        return False


class Graph:
    def __init__(self, cuda):
        self.cuda = cuda

    # torch's CUDAGraph
    def capture_begin(self):
        self.cuda.log.append(f"capture begins on {self.cuda.current.name}")

    def capture_end(self):
        Stream.end_capture(self.cuda.current)

    def replay(self):
        self.cuda.log.append("replay")

    # CuPy's Graph
    def upload(self, stream):
        self.cuda.log.append(f"upload on {stream.name}")

    def launch(self, stream):
        self.cuda.log.append(f"launch on {stream.name}")


class Cuda:
    """Both libraries' ``cuda`` modules, as far as the capturers use them."""

    def __init__(self):
        self.log = []
        self.capture_broken = False
        self.default = self.current = Stream("default", self)

    def current_stream(self, device=None):
        return self.current

    def get_current_stream(self):
        return self.current

    def default_stream(self, device=None):
        return self.default

    def Stream(self, device=None, non_blocking=False):  # noqa: N802
        return Stream("side", self)

    def stream(self, stream):
        return stream

    def CUDAGraph(self):  # noqa: N802
        return Graph(self)

    def MemoryPool(self):  # noqa: N802
        return types.SimpleNamespace(malloc=None)

    def using_allocator(self, malloc):
        return Allocator()


class Allocator:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def cuda(monkeypatch):
    fake = Cuda()
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=fake))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=fake))
    return fake


def cupy_capturer(cuda):
    capturer = object.__new__(CupyCapturer)  # no cuBLAS handle: a stand-in product
    capturer.stream = cuda.Stream(non_blocking=True)
    capturer.gemm = types.SimpleNamespace(close=lambda: cuda.log.append("cuBLAS handle destroyed"))
    return capturer


def capturers(cuda):
    return {"torch": TorchCapturer("cuda:0"), "cupy": cupy_capturer(cuda)}


@pytest.mark.parametrize("library", ["torch", "cupy"])
def test_the_warm_up_waits_for_the_current_stream_and_the_current_stream_is_restored(cuda, library):
    capturer = capturers(cuda)[library]

    def fn():
        cuda.log.append(f"step on {cuda.current.name}")

    launch = capturer.capture(fn)
    first_step = cuda.log.index("step on side")
    waited = [i for i, line in enumerate(cuda.log) if line.startswith("side waits for")]
    assert waited and waited[0] < first_step, cuda.log  # the warm-up writes what the current stream still fills
    assert "capture begins on side" in cuda.log and cuda.current is cuda.default
    launch()
    assert cuda.log[-1] in ("replay", "launch on default")


@pytest.mark.parametrize("library", ["torch", "cupy"])
def test_a_failed_capture_reports_its_cause_and_leaves_the_current_stream_as_it_was(cuda, library):
    capturer = capturers(cuda)[library]
    calls = []

    def fn():
        calls.append(cuda.current.name)
        if "capture begins on side" in cuda.log:
            cuda.capture_broken = True
            raise ValueError("the current stream is capturing: a read back")

    with pytest.raises(ValueError, match="the current stream is capturing: a read back"):
        capturer.capture(fn)
    assert "capture ends" in cuda.log  # the broken capture was still ended
    assert cuda.current is cuda.default


def test_closing_the_cupy_capturer_destroys_its_cublas_handle(cuda):
    capturer = cupy_capturer(cuda)
    capturer.close()
    assert cuda.log == ["cuBLAS handle destroyed"] and capturer.stream is None
