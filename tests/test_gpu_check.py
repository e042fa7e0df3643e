"""The prepared GPU proof runs end to end on the CPU (``--smoke``): every table filled, the replayed steps
equal to eager ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_smoke_run_writes_its_tables(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--out", str(tmp_path), "--smoke"],
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    record = json.loads((tmp_path / "gpu-check.json").read_text())
    [replayed] = record["agreement"]
    assert replayed["mode"] == "replayed" and replayed["fallback"] == []
    assert replayed["loss_max_rel"] == 0.0 and replayed["param_max_rel"] == 0.0
    assert {row["mode"] for row in record["whole_run"]} == {"eager", "replayed"}
    assert all(len(row["ms"]) == 2 for row in record["sweep"])
    assert "## ms per step" in (tmp_path / "gpu-check.md").read_text()
