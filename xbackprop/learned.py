"""What a trained net learned, in a folder a learner can open: its curves, its confusion matrix, its most
confident mistakes, its accuracy per class, and a Markdown summary linking them (needs matplotlib).

    from xbackprop.learned import write_report
    write_report("report", net, x_test, t_test, names=CLASS_NAMES["fashion-mnist"], runs=[("lr 0.1", result)])

``python -m xbackprop.train ... --report DIR`` and ``python -m xbackprop.predict IMAGES LABELS --report DIR``
write the same folder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from array_api_compat import device

from ._namespace import namespace_of
from .backend import to_numpy
from .functions import softmax
from .io import plan_outputs, replace_folder_atomically
from .report import confusion_matrix

__all__ = ["Evaluation", "evaluate", "report_paths", "write_report", "MISTAKES_SHOWN"]

#: Mistakes in the grid, the most confident first.
MISTAKES_SHOWN = 24
#: The files of a report folder (``curves.png`` only when there were runs to draw).
REPORT_FILES = ("summary.md", "confusion.png", "mistakes.png", "curves.png")


@dataclass
class Evaluation:
    """A net's answers on labelled images: ``truth``, ``predicted`` and their ``confidence`` (the predicted
    class's probability), per image, and the confusion ``matrix`` (rows: true class)."""

    truth: list[int]
    predicted: list[int]
    confidence: list[float]
    matrix: list[list[int]]

    @property
    def accuracy(self) -> float:
        return sum(self.matrix[k][k] for k in range(len(self.matrix))) / max(len(self.truth), 1)

    @property
    def per_class(self) -> list[float]:
        """Accuracy on each true class (NaN for a class with no image)."""
        return [row[k] / sum(row) if sum(row) else math.nan for k, row in enumerate(self.matrix)]

    def mistakes(self, most: int = MISTAKES_SHOWN) -> list[int]:
        """Indices of the wrongly classified images, the most confident first."""
        wrong = [i for i, (t, p) in enumerate(zip(self.truth, self.predicted)) if t != p]
        return sorted(wrong, key=lambda i: -self.confidence[i])[:most]


def evaluate(net: Any, x: Any, t: Any, *, batch_size: int = 10_000) -> Evaluation:
    """``net``'s predictions on ``x`` ``(N, D)`` with labels ``t``: integer classes ``(N,)`` or one-hot rows
    ``(N, C)`` (in batches; one read-back each). ``ValueError`` names the argument that does not fit, and says so
    when the net's outputs are not finite (a diverged net has no accuracy)."""
    xp = namespace_of(x)
    if x.ndim != 2:
        raise ValueError(f"x: images must be rows (N, D), got shape {tuple(x.shape)}")
    truth = _labels(to_numpy(t), x.shape[0], net.sizes[-1])
    predicted: list[int] = []
    confidence: list[float] = []
    for start in range(0, x.shape[0], batch_size):
        stop = min(start + batch_size, x.shape[0])  # the standard leaves a slice past the end undefined
        probabilities = softmax(net.predict(x[start:stop, ...]))
        finite = xp.astype(xp.all(xp.isfinite(probabilities), axis=1), probabilities.dtype)
        best = to_numpy(xp.stack([xp.astype(xp.argmax(probabilities, axis=1), probabilities.dtype),
                                  xp.max(probabilities, axis=1), finite]))
        if not best[2].all():
            raise ValueError(f"the net's outputs are not finite (NaN or infinite) for some of images {start} to "
                             f"{stop - 1}: it has no accuracy to report (did its training diverge?)")
        predicted += [int(k) for k in best[0].tolist()]
        confidence += best[1].tolist()
    return Evaluation(truth, predicted, confidence, confusion_matrix(truth, predicted, net.sizes[-1]))


def _labels(t: Any, n: int, classes: int) -> list[int]:
    """``t`` (host NumPy) as a list of class indices, or ``ValueError`` naming ``x`` or ``t``."""
    if n == 0:
        raise ValueError("x: no images to evaluate")
    if t.ndim == 2 and t.shape[1] == classes:
        t = t.argmax(axis=1)
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"t: labels of shape {t.shape} for {n} images; give ({n},) classes or ({n}, {classes}) "
                         "one-hot rows")
    if t.dtype.kind not in "iu" or t.min() < 0 or t.max() >= classes:
        raise ValueError(f"t: labels must be integer classes in [0, {classes}) for this net")
    return [int(k) for k in t.tolist()]


def report_paths(folder: str | os.PathLike[str], *, curves: bool,
                 inputs: Sequence[tuple[str, Any]] = ()) -> dict[str, Path]:
    """The report's files in ``folder`` (made if missing; its parent must exist), planned together and against
    ``inputs`` before any work (see :func:`xbackprop.io.plan_outputs`)."""
    if not os.fspath(folder).strip():
        raise ValueError("--report: give a folder name, not an empty one")
    folder = Path(folder)
    if not folder.parent.is_dir():
        raise ValueError(f"--report {folder}: folder {folder.parent} does not exist")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--report {folder}: exists and is not a folder")
    target = Path(os.path.realpath(folder))
    for flag, path in inputs:
        place = Path(os.path.realpath(path))
        if place == target or target in place.parents:
            raise ValueError(f"--report {folder}: {flag} {path} is in it, and the report replaces the folder "
                             "whole: give a folder of its own")
    names = [name for name in REPORT_FILES if curves or name != "curves.png"]
    others = sorted(entry.name for entry in folder.iterdir() if entry.name not in REPORT_FILES) \
        if folder.is_dir() else []
    if others:
        raise ValueError(f"--report {folder}: holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}, "
                         "which is no report's, and the report replaces the folder whole: give a new folder")
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--report {folder}: cannot make the folder ({exc.strerror or exc})") from None
    planned = plan_outputs({f"--report {name}": folder / name for name in names}, inputs)
    return {flag.split(" ", 1)[1]: path for flag, path in planned.items()}


def write_report(folder: str | os.PathLike[str], net: Any, x: Any, t: Any, *, names: Sequence[str] | None = None,
                 runs: Sequence[tuple[str, Any]] = (), title: str = "", source: str = "the test set",
                 paths: dict[str, Path] | None = None) -> Evaluation:
    """Write the report of ``net`` on labelled images ``x``, ``t`` into ``folder`` and return the evaluation.

    ``names`` are the class names (digits by default), ``runs`` ``(label, TrainResult)``
    pairs whose curves are drawn, ``title`` the run's settings (every figure carries it).
    """
    from .plotting import confusion_figure, mistakes_figure, results_figure, save_figure

    paths = paths or report_paths(folder, curves=bool(runs))
    evaluation = evaluate(net, x, t)
    classes = len(evaluation.matrix)
    names = list(names) if names else [str(k) for k in range(classes)]
    if len(names) != classes:
        raise ValueError(f"names: {len(names)} class names for a net of {classes} classes")
    setting = f" — {title}" if title else ""
    wrong = evaluation.mistakes()
    side = math.isqrt(x.shape[1]) if x.ndim == 2 else 0
    if wrong and side * side == x.shape[1]:
        rows = to_numpy(namespace_of(x).take(x, namespace_of(x).asarray(wrong, device=device(x)), axis=0))
        images = [row.reshape(side, side) for row in rows]
    else:
        images = []
    captions = [f"#{i}: {names[evaluation.truth[i]]}\nseen as {names[evaluation.predicted[i]]} "
                f"{evaluation.confidence[i]:.0%}" for i in wrong[: len(images)]]
    # written as a unit: an interrupted report leaves the previous one whole
    with replace_folder_atomically(paths["summary.md"].parent) as staging:
        save_figure(confusion_figure(evaluation.matrix, names, f"Confusion matrix on {source}{setting}"),
                    staging / "confusion.png")
        save_figure(mistakes_figure(images, captions, f"The {len(images)} most confident mistakes on "
                                    f"{source}{setting}"), staging / "mistakes.png")
        if runs:
            save_figure(results_figure(runs, f"Accuracy and loss while training{setting}"), staging / "curves.png",
                        dpi=100)
        (staging / "summary.md").write_text(_summary(evaluation, names, source, title, bool(runs)))
    return evaluation


def _summary(evaluation: Evaluation, names: Sequence[str], source: str, title: str, curves: bool) -> str:
    lines = [f"# What the net learned{': ' + title if title else ''}", "",
             f"Accuracy on {source}: **{evaluation.accuracy:.4f}** ({len(evaluation.truth)} images).", ""]
    if curves:
        lines += ["![accuracy and loss while training](curves.png)", ""]
    lines += ["## Accuracy per class", "", "| class | images | accuracy | most often mistaken for |",
              "| --- | ---: | ---: | --- |"]
    for k, (row, accuracy) in enumerate(zip(evaluation.matrix, evaluation.per_class)):
        others = sorted(((count, j) for j, count in enumerate(row) if j != k and count), reverse=True)
        confused = f"{names[others[0][1]]} ({others[0][0]})" if others else "—"
        lines.append(f"| {names[k]} | {sum(row)} | {accuracy:.3f} | {confused} |")
    lines += ["", "## Confusion matrix", "", "Rows: the true class; columns: the class the net chose.", "",
              "![confusion matrix](confusion.png)", "", "## The most confident mistakes", "",
              "![the most confident mistakes](mistakes.png)", ""]
    return "\n".join(lines)
