"""``python -m xbackprop.bench``: the report runs, agrees with itself and writes its files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from xbackprop.bench import main, markdown_table

REPO = Path(__file__).resolve().parents[1]  # benchmarks/ runs as a package from here


def test_report_on_the_tiny_case(tmp_path, capsys):
    assert main(["--size", "tiny", "--batch", "3", "--out", str(tmp_path), "--name", "t"]) == 0
    out = capsys.readouterr().out
    assert "| numpy | 8-8-4 | 108 | 3 |" in out
    record = json.loads((tmp_path / "bench-t.json").read_text())
    (row,) = record["rows"]
    assert row["P"] == 108 and row["backend"] == "numpy" and row["dtype"] == "float64"
    assert row["max_rel_diff"] < 1e-6  # the two gradients agree
    assert row["measured_ratio"] == row["numerical_s"] / row["backprop_s"]
    assert row["numerical_runs"] >= 1 and row["floor_s"] > 0 and row["numerical_floor_ratio"] > 0
    assert markdown_table(record["rows"]) in out


def test_report_writes_files_only_when_asked(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--size", "tiny", "--batch", "3"]) == 0
    assert "| numpy | 8-8-4 | 108 | 3 |" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    assert main(["--size", "tiny", "--out", str(tmp_path / "missing" / "deeper")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    assert main(["--size", "tiny", "--batch", "3", "--out", str(tmp_path / "new")]) == 0  # made, as --report's is
    assert sorted(p.suffix for p in (tmp_path / "new").iterdir()) == [".json", ".png"]


def test_train_step_ratios_script(tmp_path):
    """python -m benchmarks.train_step_ratios runs (two rounds) and reports every implementation it could build."""
    out = tmp_path / "ratios.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.train_step_ratios", "--rounds", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    names = {row["implementation"] for row in record["rows"]}
    assert {"xbackprop-numpy", "handwritten-numpy", "matmul-floor"} <= names
    assert record["blas"].endswith("1 threads") or "threadpoolctl" in record["blas"]
    assert all(row["median_ms"] > 0 and row["ratio"] > 0 for row in record["rows"])


def test_step_sweep_runs_and_writes_its_files(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.step_sweep", "--sizes", "1", "--out", str(tmp_path),
                           "--name", "sweep"], capture_output=True, text=True, timeout=300, check=False,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "| numpy | eager | 784-50-10 | 100 |" in done.stdout
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert {row["backend"] for row in record["rows"]} >= {"numpy"}
    assert all(row["seconds_per_step"] > 0 for row in record["rows"])


def test_convnet_accuracy_runs_xbackprop_and_the_same_net_in_pytorch_from_the_same_rows(synthetic_dir, tmp_path):
    """python -m benchmarks.convnet_accuracy on a small set: one epoch each, the table and the JSON."""
    import importlib.util

    implementations = ["xbackprop"] + (["torch"] if importlib.util.find_spec("torch") else [])
    for implementation in implementations:
        out = tmp_path / f"{implementation}.json"
        done = subprocess.run([sys.executable, "-m", "benchmarks.convnet_accuracy", "--dataset", "mnist", "--data-dir",
                               str(synthetic_dir), "--epochs", "1", "--sampling", "shuffle", "--implementation",
                               implementation, "--json", str(out)],
                              capture_output=True, text=True, timeout=300, check=False, cwd=REPO)
        assert done.returncode == 0, done.stderr
        assert "minibatches shuffled each epoch" in done.stdout and "\n| 1 | " in done.stdout
        (row,) = json.loads(out.read_text())["rows"]
        assert 0.0 <= row["test_acc"] <= 1.0 and row["seconds_training"] > 0
