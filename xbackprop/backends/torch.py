"""PyTorch, on the CPU or a CUDA device, with CUDA-graph capture of training steps on the latter."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_compat

from .base import Backend, end_capture_after, import_namespace


def _parse_device(xp: ModuleType, device: str) -> Any:
    import torch

    return torch.device(device)


def _to_numpy(x: Any) -> Any:
    return x.detach().cpu().numpy()


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class TorchCapturer:
    """A CUDA graph of torch's as PyTorch's CUDA-graph notes ask: warm-up runs on the side stream the graph is
    captured on (cuBLAS keeps a handle and workspace per stream), a private memory pool per graph, replays on
    the current stream. ``torch.cuda.graph`` is not used: when a capture fails its ``__exit__`` raises before
    restoring the stream, leaving the side stream current and naming the wrong error."""

    def __init__(self, device: Any) -> None:
        self.device = device

    def capture(self, fn: Any) -> Any:
        import torch

        current = torch.cuda.current_stream(self.device)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(current)  # the warm-up writes arrays the current stream may still be filling
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.stream(stream):  # the current stream is restored however the block ends
            for _ in range(2):
                fn()
            graph.capture_begin()
            end_capture_after(fn, graph.capture_end)
        current.wait_stream(stream)

        def launch() -> None:
            graph.replay()

        launch.graph = graph  # type: ignore[attr-defined]  # alive as long as its launcher
        return launch


def _capturer(like: Any) -> TorchCapturer | None:
    return TorchCapturer(like.device) if getattr(like, "is_cuda", False) else None


TORCH = Backend(
    name="torch",
    load=lambda: import_namespace("torch", "array_api_compat.torch",
                                  "for the CPU build: pip install torch --index-url https://download.pytorch.org/whl/cpu"),
    owns=array_api_compat.is_torch_namespace,
    parse_device=_parse_device,
    to_numpy=_to_numpy,
    synchronize=_synchronize,
    capturer=_capturer,
)
