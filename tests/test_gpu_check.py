"""The prepared GPU proof runs end to end on the CPU (``--smoke``): every table filled, the replayed steps
equal to eager ones, every row naming the stepper that ran; a capture that falls back is never labelled
captured; the command keeps the contract of the package's commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xbackprop.training.captured import ReplayCapturer

ROOT = Path(__file__).resolve().parents[1]


def gpu_check(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, **kwargs)


def test_the_gpu_check_smoke_run_writes_its_tables_into_a_new_folder(tmp_path):
    out = tmp_path / "not" / "there" / "yet"
    completed = gpu_check("--out", str(out), "--smoke")
    assert completed.returncode == 0, completed.stderr
    record = json.loads((out / "gpu-check.json").read_text())
    [replayed] = record["agreement"]
    assert replayed["mode"] == "replayed" and replayed["stepper"] == "replayed" and replayed["fallback"] is None
    assert replayed["loss_max_rel"] == 0.0 and replayed["param_max_rel"] == 0.0
    assert [(row["mode"], row["stepper"]) for row in record["whole_run"]] == [("eager", "eager"),
                                                                              ("replayed", "replayed")]
    assert all(len(row["ms"]) == 2 and all(cell["fallback"] is None for cell in row["ms"].values())
               for row in record["sweep"])
    assert [(row["mode"], row["stepper"], row["fallback"]) for row in record["convnet_epoch"]] == [
        ("eager", "eager", None), ("replayed", "replayed", None)]  # the SimpleConvNet epoch captures too
    steps_rows = record["preflight"]["captured_steps"]
    assert steps_rows[0]["backend"] == "numpy" and steps_rows[0]["replays_bit_equal"] is True
    assert steps_rows[0]["fallback"] is None and steps_rows[0]["stepper"] == "replayed"
    assert "skipped" in record["preflight"]["gemm"][0]  # no CuPy here: said, not faked
    assert "## ms per step" in (out / "gpu-check.md").read_text()


def test_the_preflight_alone_and_the_contract_of_a_command(tmp_path):
    completed = gpu_check("--out", str(tmp_path), "--smoke", "--preflight")
    assert completed.returncode == 0, completed.stderr
    record = json.loads((tmp_path / "gpu-check.json").read_text())
    assert "preflight" in record and "agreement" not in record
    for args, named in ((("--out", "/proc/gpu"), "--out /proc/gpu"), (("--out", str(tmp_path), "--bogus"), "--bogus"),
                        (("--out", str(tmp_path), "--smoke", "--data-dir", str(tmp_path / "none")), "--data-dir")):
        completed = gpu_check(*args)
        assert completed.returncode == 2 and completed.stderr.count("\n") == 1, completed.stderr
        assert named in completed.stderr and "Traceback" not in completed.stderr


class FailingCapturer(ReplayCapturer):
    def capture(self, fn):
        raise RuntimeError("the current stream is capturing")


def test_a_capture_that_falls_back_is_labelled_eager_in_every_table(monkeypatch):
    from benchmarks import gpu_check

    monkeypatch.setattr(gpu_check, "ReplayCapturer", FailingCapturer)
    data = gpu_check.synthetic(300, 100)
    agreement = gpu_check.agreement("numpy", None, "replayed", data, 10, 20)
    timing = gpu_check.ms_per_step("numpy", None, "replayed", data, (10,), 20, 5, 1)
    run = gpu_check.whole_run("numpy", None, "replayed", data, 20, 5)
    for row in (agreement, timing, run):
        assert row["stepper"] == "eager", row
        assert "the current stream is capturing" in row["fallback"]


def test_a_backend_without_a_capturer_is_labelled_eager():
    from benchmarks import gpu_check

    row = gpu_check.ms_per_step("numpy", None, "captured", gpu_check.synthetic(300, 100), (10,), 20, 5, 1)
    assert row["stepper"] == "eager" and row["fallback"] == "no capturer for this backend"


def test_preparing_a_gpu_run_carries_the_wheels_the_data_and_the_command(tmp_path, data_dir):
    from benchmarks.prepare_gpu_run import CARRIED, prepare

    asked = []

    def download(names, folder):
        asked.extend(names)
        for name in names:
            (folder / f"{name.split('==')[0].replace('-', '_')}-1-py3-none-any.whl").write_bytes(b"")

    prepare(tmp_path / ".gpu", data_dir / "fashion-mnist", download=download)
    assert [name.split("==")[0] for name in asked] == list(CARRIED) and all("==" in name for name in asked)
    assert len(list((tmp_path / ".gpu" / "data" / "fashion-mnist").iterdir())) == 4
    run = (tmp_path / ".gpu" / "run.sh").read_text()
    assert "benchmarks.gpu_check --out \"$OUT/gpu\"" in run and "--no-index" in run


def test_preparing_a_gpu_run_refuses_data_that_is_not_fashion_mnist(synthetic_dir, tmp_path):
    from benchmarks.prepare_gpu_run import prepare
    from xbackprop.cli import UsageError

    with pytest.raises(UsageError, match="does not hold Fashion-MNIST"):
        prepare(tmp_path / ".gpu", synthetic_dir, download=lambda names, folder: None)
    assert not (tmp_path / ".gpu").exists()
