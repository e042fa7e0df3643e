"""A GPU's rules, enforced on the CPU: what a CUDA device refuses or pays dearly for raises here, with its line.

CuPy's and PyTorch's CUDA arrays differ from the host libraries the tests run on in ways that
no CPU run notices unless something makes it notice:

- their device objects cannot be hashed (``cupy.cuda.Device`` compares but has no ``__hash__``):
  :func:`unhashable_devices` gives array-api-strict's devices the same trait;
- inside a training step an array made from host data (a Python number promoted by a wrapper,
  a list, a NumPy array) is a host-to-device copy, and a read back (``bool``, ``int``, ``float``,
  ``.item()``, ``to_numpy``, DLPack to the host, or a shape that depends on the data: a boolean
  mask index, ``nonzero``) is a device-to-host copy and a synchronisation: both stall the GPU in
  an eager step and are refused while a stream captures a graph;
- while capturing, CuPy's ``stack``/``concat`` of more than 8 arrays copies a table of pointers
  from the host (``_concatenate_single_kernel``): refused too.

:func:`gpu_rules` turns each of these into :class:`GpuRuleBroken` on torch (CPU) and
array-api-strict, naming the rule and the first line of xbackprop (or of the test) that broke it.
:class:`GuardedReplayCapturer` is the stand-in capturer under those rules: like CuPy's and torch's
capturers it runs the block once to warm up, then records it under the rules, and every replay
runs under them too.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from xbackprop.backend import backend_name
from xbackprop.training.captured import ReplayCapturer

#: CuPy concatenates up to this many arrays without copying a pointer table from the host.
CUPY_CONCAT_WITHOUT_HOST_TABLE = 8

_PACKAGE = str(Path(__file__).resolve().parents[1] / "xbackprop")
_TESTS = str(Path(__file__).resolve().parent)


class GpuRuleBroken(AssertionError):
    """Code in a training step (or a captured block) did what a GPU refuses or stalls on."""


def _offending_line() -> str:
    """``file:line: code`` of the innermost frame in xbackprop (else in the tests) that led here."""
    frames = [f for f in traceback.extract_stack()[:-2] if f.filename != __file__]
    for root in (_PACKAGE, _TESTS):
        mine = [f for f in frames if f.filename.startswith(root)]
        if mine:
            frame = mine[-1]
            return f"{Path(frame.filename).relative_to(Path(root).parent)}:{frame.lineno}: {frame.line}"
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno}: {frame.line}"


def _broken(rule: str) -> GpuRuleBroken:
    return GpuRuleBroken(f"{rule}, at {_offending_line()}")


class _Patches:
    """Attributes replaced for the length of a ``with`` block, then put back exactly as they were."""

    def __init__(self) -> None:
        self.saved: list[tuple[Any, str, bool, Any]] = []

    def set(self, owner: Any, name: str, value: Any) -> None:
        own = name in vars(owner)
        self.saved.append((owner, name, own, vars(owner).get(name)))
        setattr(owner, name, value)

    def restore(self) -> None:
        for owner, name, own, value in reversed(self.saved):
            if own:
                setattr(owner, name, value)
            else:
                delattr(owner, name)
        self.saved.clear()


def _refuse(what: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise _broken(what)
    return refused


def _host_reads(patches: _Patches, array_type: type, where: str) -> None:
    """Every way an array's values reach the host."""
    for name in ("__bool__", "__int__", "__float__", "__complex__", "__index__", "__array__", "__dlpack__",
                 "item", "tolist", "numpy", "cpu"):
        if hasattr(array_type, name):
            patches.set(array_type, name, _refuse(f"a device-to-host read ({where}.{name})"))


def _host_made(patches: _Patches, module: Any, name: str, is_array: Callable[[Any], bool], where: str) -> None:
    """``module.name(obj, ...)`` refused when ``obj`` is host data rather than an array already on the device."""
    original = getattr(module, name)

    def guarded(obj: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not is_array(obj) and not (isinstance(obj, (list, tuple)) and len(obj) == 0):
            raise _broken(f"an array made from host data {type(obj).__name__} ({where}.{name}: a host-to-device "
                          "copy; a Python number should stay a Python number in an operator)")
        return original(obj, *args, **kwargs)

    patches.set(module, name, guarded)


def _no_data_dependent_shapes(patches: _Patches, array_type: type, xp: Any, is_array: Callable[[Any], bool],
                              where: str) -> None:
    """A boolean mask as an index and ``nonzero``: the result's size must be read back from the device first."""

    def is_mask(key: Any) -> bool:
        keys = key if isinstance(key, tuple) else (key,)
        return any(is_array(k) and k.dtype == xp.bool for k in keys)

    for name in ("__getitem__", "__setitem__"):
        original = getattr(array_type, name)

        def guarded(self: Any, key: Any, *value: Any, original: Any = original, name: str = name) -> Any:
            if is_mask(key):
                raise _broken(f"a boolean mask index ({where}.{name}: a device-to-host read of the mask's count)")
            return original(self, key, *value)

        patches.set(array_type, name, guarded)
    patches.set(xp, "nonzero", _refuse("a device-to-host read (nonzero: the count of its result)"))


def _few_arrays(patches: _Patches, xp: Any, name: str) -> None:
    original = getattr(xp, name)

    def guarded(arrays: Any, *args: Any, **kwargs: Any) -> Any:
        arrays = list(arrays)
        if len(arrays) > CUPY_CONCAT_WITHOUT_HOST_TABLE:
            raise _broken(f"{name} of {len(arrays)} arrays while capturing (CuPy copies a pointer table from the "
                          f"host for more than {CUPY_CONCAT_WITHOUT_HOST_TABLE}; write into a buffer instead)")
        return original(arrays, *args, **kwargs)

    patches.set(xp, name, guarded)


def _xbackprop_functions(patches: _Patches) -> None:
    """xbackprop's own read-backs and waits, wherever a module imported them by name."""
    from xbackprop import backend

    for name, rule in (("to_numpy", "a device-to-host read (to_numpy)"),
                       ("synchronize", "a synchronisation (synchronize)")):
        original = getattr(backend, name)
        for module in [m for key, m in sys.modules.items() if key.startswith("xbackprop") and m is not None]:
            if getattr(module, name, None) is original:
                patches.set(module, name, _refuse(rule))


@contextlib.contextmanager
def gpu_rules(xp: Any, *, capturing: bool = False) -> Iterator[None]:
    """Within the block, on torch (CPU) or array-api-strict: a host transfer or a synchronisation raises
    :class:`GpuRuleBroken` naming the line; with ``capturing``, so does a ``stack``/``concat`` of more than
    8 arrays. On other namespaces only xbackprop's own read-backs are refused."""
    patches = _Patches()
    name = backend_name(xp)
    try:
        _xbackprop_functions(patches)
        if name == "torch":
            import torch

            _host_reads(patches, torch.Tensor, "Tensor")
            _no_data_dependent_shapes(patches, torch.Tensor, xp, torch.is_tensor, "Tensor")
            for sized in ("nonzero", "masked_select", "unique"):
                patches.set(torch, sized, _refuse(f"a device-to-host read (torch.{sized}: the size of its result)"))
            for creator in ("asarray", "tensor", "as_tensor", "from_numpy"):
                _host_made(patches, torch, creator, torch.is_tensor, "torch")
            patches.set(torch.cuda, "synchronize", _refuse("a synchronisation (torch.cuda.synchronize)"))
        elif name == "array_api_strict":
            from array_api_strict._array_object import Array

            _host_reads(patches, Array, "Array")
            _no_data_dependent_shapes(patches, Array, xp, lambda obj: isinstance(obj, Array), "Array")
            _host_made(patches, xp, "asarray", lambda obj: isinstance(obj, Array),
                       "array_api_strict")
        if capturing and name in ("torch", "array_api_strict"):
            for joining in ("stack", "concat"):
                _few_arrays(patches, xp, joining)
        yield
    finally:
        patches.restore()


@contextlib.contextmanager
def unhashable_devices(*, anywhere: bool = False) -> Iterator[None]:
    """array-api-strict's devices compare but cannot be hashed, as ``cupy.cuda.Device``: a dict or set keyed by
    a device raises ``TypeError: unhashable type: 'Device'``.

    array-api-strict itself puts devices in sets (``__getitem__``, ``concat``, ``stack``, ``where``): its own code
    may still hash them (CuPy's own code has no such need); every other caller, xbackprop included, meets the
    trait. With ``anywhere``, array-api-strict's own code meets it too, as the house rules' check trains: then
    whatever indexes, joins or selects by ``where`` on the way fails."""
    from array_api_strict import _devices

    device_hash = _devices.Device.__hash__

    def hash_inside_array_api_strict_only(self: Any) -> int:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if anywhere or not caller.startswith("array_api_strict"):
            raise TypeError(f"unhashable type: '{type(self).__name__}'")
        return device_hash(self)

    patches = _Patches()
    patches.set(_devices.Device, "__hash__", hash_inside_array_api_strict_only)
    try:
        yield
    finally:
        patches.restore()


class GuardedReplayCapturer(ReplayCapturer):
    """The stand-in capturer under :func:`gpu_rules`: one warm-up run (as the CUDA capturers make), one run
    "recorded" under the rules of a capture, and every replay under them too. ``captured`` lists the
    graphs' lengths in steps as they are captured (the caller tells it through ``length_of``)."""

    def __init__(self, xp: Any) -> None:
        self.xp = xp
        self.captures = 0
        self.closed = False

    def capture(self, fn: Callable[[], None]) -> Callable[[], None]:
        fn()
        with gpu_rules(self.xp, capturing=True):
            fn()
        self.captures += 1

        def replay() -> None:
            with gpu_rules(self.xp, capturing=True):
                fn()

        return replay

    def close(self) -> None:
        self.closed = True
