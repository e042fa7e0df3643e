"""What a training run prints and records: evaluation lines, the summary, a sweep's table, the JSON record."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

from ..files import replace_atomically
from .result import TrainResult

#: Lines of accuracies a run prints by default, at most (about); the history keeps every evaluation.
PRINTED_EVALUATIONS = 20


def printed_every(iters: int, eval_interval: int) -> int:
    """Iterations between printed accuracy lines: every evaluation's, thinned to about
    :data:`PRINTED_EVALUATIONS` lines a run."""
    evaluations = math.ceil(iters / eval_interval) if iters else 1
    return eval_interval * math.ceil(evaluations / PRINTED_EVALUATIONS)


class EvaluationPrinter:
    """The trainer's ``on_evaluation`` callback that prints about :data:`PRINTED_EVALUATIONS` evaluations and the last.

    ``book_style`` prints the book's ``train acc, test acc | 0.1047, 0.1028``; otherwise each
    line names its iteration and where the training accuracy comes from (``"full"`` or
    ``"batch"``). Lines go through ``progress.write`` when a tqdm bar is shown.
    """

    def __init__(self, iters: int, eval_interval: int, train_acc: str, *, book_style: bool,
                 progress: Any = None) -> None:
        self.print_every = printed_every(iters, eval_interval)
        self.iters, self.train_acc, self.book_style, self.progress = iters, train_acc, book_style, progress

    def line(self, row: dict[str, float]) -> str:
        accuracies = f"{row['train_acc']:.4f}, {row['test_acc']:.4f}"
        if self.book_style:
            return f"train acc, test acc | {accuracies}"
        source = "minibatch" if self.train_acc == "batch" else "train"
        return f"iter {row['iter']:>{len(str(self.iters))}}: {source} acc, test acc | {accuracies}"

    def __call__(self, row: dict[str, float]) -> None:
        if (row["iter"] - 1) % self.print_every and row["iter"] != self.iters:
            return
        if self.progress is not None:
            self.progress.write(self.line(row))
        else:
            print(self.line(row), flush=True)


def summary_line(result: TrainResult) -> str:
    """One line on a finished run: divergence, final accuracies, iterations, time and throughput."""
    ending = ""
    if result.diverged_at:
        ending = f"diverged at iteration {result.diverged_at} (loss {result.losses[result.diverged_at - 1]:.4g})"
        ending += "; stopped. " if result.steps_done == result.diverged_at else "; trained on. "
    accuracies = f"{ending}test acc {result.final_test_acc:.4f}, train acc {result.final_train_acc:.4f}"
    if not result.steps_done:  # the time was the evaluation's: no speed to quote
        return f"{accuracies} after 0 iterations (nothing trained)"
    return (
        f"{accuracies} after {result.steps_done} iterations in {result.seconds:.1f} s "
        f"({result.samples_per_s:,.0f} samples/s, {1e3 * result.seconds / result.steps_done:.3g} ms per iteration)"
    )


def sweep_table(runs: Sequence[tuple[float, TrainResult]], train_acc: str) -> str:
    """A markdown table, one row per learning rate: final accuracies, seconds, divergence."""
    source = "minibatch acc" if train_acc == "batch" else "train acc"
    lines = [f"| lr | {source} | test acc | seconds | diverged |", "| ---: | ---: | ---: | ---: | --- |"]
    for lr, result in runs:
        diverged = f"at iteration {result.diverged_at}" if result.diverged_at else "no"
        lines.append(f"| {lr:g} | {result.final_train_acc:.4f} | {result.final_test_acc:.4f} | "
                     f"{result.seconds:.1f} | {diverged} |")
    return "\n".join(lines)


def _figures(result: TrainResult, lr: float) -> dict[str, Any]:
    return {
        "lr": lr,
        "iters": result.steps_done,
        "final_train_acc": result.final_train_acc,
        "final_test_acc": result.final_test_acc,
        "seconds": result.seconds,
        "samples_per_s": result.samples_per_s,
        "diverged_at": result.diverged_at,
        "history": result.history,
        "losses": result.losses,
    }


def run_record(runs: Sequence[tuple[float, TrainResult]], settings: dict[str, Any], *, sweep: bool) -> dict[str, Any]:
    """``settings`` and the first run's figures; with ``sweep``, every run's figures under ``"lr_sweep"``."""
    record = {**settings, **_figures(runs[0][1], runs[0][0])}
    if sweep:
        record["lr_sweep"] = [_figures(result, lr) for lr, result in runs]
    return record


def write_json(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """``record`` as standard JSON (NaN and infinities become ``null``), replacing ``path`` atomically."""
    with replace_atomically(path) as temporary, open(temporary, "w") as f:
        json.dump(_finite(record), f, indent=1, allow_nan=False)


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None``, so the JSON is standard JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
