"""The memory budget is the process's real limit: its cgroups (v2 and v1, nested), RLIMIT_AS, then RAM."""

from __future__ import annotations

import subprocess
import sys

from xbackprop.memory import cgroup_memory_limits


def tree(tmp_path, files, own):
    for relative, text in files.items():
        path = tmp_path / "cgroup" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "self").write_text(own)
    return tmp_path / "cgroup", tmp_path / "self"


def test_a_v2_limit_of_the_process_or_an_ancestor_counts(tmp_path):
    root, own = tree(tmp_path, {"memory.max": "max\n", "jobs/memory.max": "4294967296\n",
                                "jobs/job7/memory.max": "max\n"}, "0::/jobs/job7\n")
    assert cgroup_memory_limits(root, own) == [4 << 30]


def test_a_v1_limit_is_read_in_the_memory_hierarchy_and_no_limit_is_ignored(tmp_path):
    root, own = tree(tmp_path, {"memory/memory.limit_in_bytes": "9223372036854771712\n",
                                "memory/api/abc/memory.limit_in_bytes": "2147483648\n"},
                     "4:memory:/api/abc\n3:cpuset:/\n0::/\n")
    assert cgroup_memory_limits(root, own) == [2 << 30]


def test_no_cgroup_files_mean_no_cgroup_limit(tmp_path):
    assert cgroup_memory_limits(tmp_path / "absent", tmp_path / "absent-self") == []


def test_an_address_space_limit_refuses_a_net_in_one_line_before_allocating():
    """Under ``ulimit -v`` (RLIMIT_AS of 3 GiB) a 12.5 GiB net is refused by the estimate, not killed."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
            "from xbackprop.train import main; sys.exit(main(sys.argv[1:]))")
    completed = subprocess.run([sys.executable, "-c", code, "--dataset", "digits", "--hidden", "20000,20000",
                                "--dtype", "float64", "--iters", "1"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.count("\n") == 1
    assert "--hidden, --batch-size: a 64-20000-20000-10 net" in completed.stderr
    assert "more than the 3.0 GiB this process may use" in completed.stderr


def test_a_step_is_measured_without_touching_a_callers_own_tracing():
    import tracemalloc

    import numpy as np

    from xbackprop.memory import measured_peak

    def step(rows):
        np.ones((rows, 1000))  # 8 kB a row

    assert 8 * 1000 * 100 <= measured_peak(step, 100) < 8 * 1000 * 100 + 100_000
    tracemalloc.start()
    try:
        assert measured_peak(step, 100) is None and tracemalloc.is_tracing()  # never stopped behind its back
    finally:
        tracemalloc.stop()
