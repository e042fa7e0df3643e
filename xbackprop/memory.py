"""How much memory this process may use: the tightest of its cgroup's limit, its address-space limit and the
machine's RAM, so that a size check refuses what the container would kill, before anything is allocated."""

from __future__ import annotations

import os
import resource
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["memory_limit", "cgroup_memory_limits", "check_fits", "measured_peak"]

#: Where cgroup file systems are mounted, and the file that holds each version's memory limit.
CGROUP_ROOT = Path("/sys/fs/cgroup")
_V2_LIMIT, _V1_LIMIT = "memory.max", "memory.limit_in_bytes"


def _own_cgroups(proc_cgroup: Path) -> Iterator[tuple[str, str]]:
    """``(controllers, path)`` of each line of ``/proc/self/cgroup`` (``"0::/a/b"`` is v2, ``"4:memory:/a"`` v1)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return
    for line in lines:
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        yield controllers, path


def cgroup_memory_limits(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> list[int]:
    """Memory limits in bytes of this process's cgroup and of every cgroup above it, v2 and v1 (any may bind)."""
    folders = [root, root / "memory"]  # the mount points themselves, where the process's own path is hidden
    for controllers, path in _own_cgroups(proc_cgroup):
        base = root if controllers == "" else root / "memory" if "memory" in controllers.split(",") else None
        if base is not None:
            folder = base / path.lstrip("/")
            folders += [folder, *folder.parents[: len(Path(path.lstrip("/")).parts)]]
    limits = []
    for folder in dict.fromkeys(folders):
        for name in (_V2_LIMIT, _V1_LIMIT):
            try:
                text = (folder / name).read_text().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < 1 << 60:  # "max", or v1's "no limit" of nearly 2**63
                limits.append(int(text))
    return limits


def memory_limit() -> int | None:
    """Bytes this process may use at most, or ``None`` where nothing says (no cgroup, no rlimit, no sysconf)."""
    limits = cgroup_memory_limits()
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft)
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    return min(limits) if limits else None


def check_fits(needed: int, what: str) -> None:
    """``ValueError`` when ``needed`` bytes for ``what`` exceed :func:`memory_limit`."""
    limit = memory_limit()
    if limit is not None and needed > limit:
        raise ValueError(f"{what} needs about {needed / 2**30:,.1f} GiB, more than the "
                         f"{limit / 2**30:,.1f} GiB this process may use")


def measured_peak(run: Callable[[int], object], batch: int) -> int | None:
    """Bytes a step of ``batch`` rows takes at its peak, from two small ones measured on the host:
    ``run(rows)`` runs one step of ``rows`` rows on NumPy (whose arrays ``tracemalloc`` sees), and the peak grows
    with the rows, so two points give what is fixed and what each row adds. ``None`` while the caller traces
    memory itself: ``tracemalloc`` cannot nest, and a caller's tracing is never stopped or reset."""
    if tracemalloc.is_tracing():
        return None
    peaks = []
    for rows in (1, 2):
        run(rows)  # caches and first-call allocations out of the way
        tracemalloc.start()
        try:
            run(rows)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    per_row = max(peaks[1] - peaks[0], 0)
    return peaks[0] - per_row + batch * per_row
