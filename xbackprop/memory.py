"""How much memory this process may use: the tightest of its cgroup's limit, its address-space limit and the
machine's RAM, so that a size check refuses what the container would kill, before anything is allocated."""

from __future__ import annotations

import os
import resource
from pathlib import Path

__all__ = ["memory_limit", "check_fits"]

#: cgroup files that hold a memory limit: v2, then v1.
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def memory_limit() -> int | None:
    """Bytes this process may use at most, or ``None`` where nothing says (no cgroup, no rlimit, no sysconf)."""
    limits = []
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max", or v1's "no limit" of nearly 2**63
            limits.append(int(text))
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
