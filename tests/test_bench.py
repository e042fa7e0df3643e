"""``python -m xbackprop.bench``: the report runs, agrees with itself and writes its files."""

from __future__ import annotations

import json

import pytest

from xbackprop.bench import main, markdown_table


def test_report_on_the_tiny_case(tmp_path, capsys):
    assert main(["--size", "tiny", "--batch", "3", "--out", str(tmp_path), "--name", "t"]) == 0
    out = capsys.readouterr().out
    assert "| numpy | 8-8-4 | 108 | 3 |" in out
    record = json.loads((tmp_path / "bench-t.json").read_text())
    (row,) = record["rows"]
    assert row["P"] == 108 and row["backend"] == "numpy" and row["dtype"] == "float64"
    assert row["max_rel_diff"] < 1e-6  # the two gradients agree
    assert row["measured_ratio"] == row["numerical_s"] / row["backprop_s"]
    assert markdown_table(record["rows"]) in out


def test_unknown_backend_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--backend", "tensorflow"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
