"""What the training command prints and writes about finished runs (xbackprop.training.log)."""

from __future__ import annotations

import json
import math

from xbackprop.training import TrainResult
from xbackprop.training.log import EvaluationPrinter, run_record, summary_line, sweep_table, write_json


def finished(losses, history, diverged_at=None, seconds=2.0):
    return TrainResult(batch_size=100, seconds=seconds, history=history, losses=losses, diverged_at=diverged_at)


ROW = {"iter": 1, "loss": 2.3, "train_acc": 0.1047, "test_acc": 0.1028}


def test_the_books_line_and_the_numbered_line(capsys):
    EvaluationPrinter(600, 600, "full", book_style=True)(ROW)
    EvaluationPrinter(1000, 10, "batch", book_style=False)({**ROW, "iter": 51})  # every 50th of 100
    assert capsys.readouterr().out == ("train acc, test acc | 0.1047, 0.1028\n"
                                       "iter   51: minibatch acc, test acc | 0.1047, 0.1028\n")


def test_about_twenty_evaluations_are_printed_and_always_the_last(capsys):
    printer = EvaluationPrinter(1000, 10, "full", book_style=False)
    for step in [*range(1, 1000, 10), 1000]:
        printer({**ROW, "iter": step})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 21 and lines[0].startswith("iter    1:") and lines[-1].startswith("iter 1000:")


def test_summary_says_where_a_run_diverged():
    result = finished([2.3, 2.2, math.inf], [{**ROW, "iter": 3}], diverged_at=3)
    line = summary_line(result)
    assert line.startswith("diverged at iteration 3 (loss inf); stopped. test acc 0.1028, train acc 0.1047 after 3 ")


def test_sweep_table_and_record_hold_every_run(tmp_path):
    runs = [(0.1, finished([2.3, 1.0], [{**ROW, "iter": 2}])), (10.0, finished([2.3, math.nan], [], diverged_at=2))]
    table = sweep_table(runs, "batch").splitlines()
    assert table[0] == "| lr | minibatch acc | test acc | seconds | diverged |"
    assert table[2] == "| 0.1 | 0.1047 | 0.1028 | 2.0 | no |"
    assert table[3] == "| 10 | nan | nan | 2.0 | at iteration 2 |"
    record = run_record(runs, {"seed": 0}, sweep=True)
    assert record["seed"] == 0 and record["lr"] == 0.1 and [r["lr"] for r in record["lr_sweep"]] == [0.1, 10.0]
    write_json(tmp_path / "run.json", record)
    written = json.loads((tmp_path / "run.json").read_text())  # standard JSON: NaN written as null
    assert written["lr_sweep"][1]["losses"] == [2.3, None] and written["lr_sweep"][1]["final_test_acc"] is None
