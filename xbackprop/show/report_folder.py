"""The ``--report`` folder: a summary, the confusion matrix, the most confident mistakes and the curves,
written into a new folder that replaces the old one whole."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from array_api_compat import device

from ..backend import to_numpy
from ..files import plan_outputs, replace_folder_atomically
from ..functions import namespace_of
from .evaluation import Evaluation, evaluate
from .filters import filters_figure, first_filters

#: The files of a report folder (``curves.png`` only when there were runs to draw, ``filters.png`` for a net whose
#: first layer is a convolution).
REPORT_FILES = ("summary.md", "confusion.png", "mistakes.png", "curves.png", "filters.png")


def report_paths(folder: str | os.PathLike[str], *, curves: bool, inputs: Sequence[tuple[str, Any]] = (),
                 filters: bool = False) -> dict[str, Path]:
    """The report's files in ``folder`` (made if missing; its parent must exist), planned together and against
    ``inputs`` before any work (see :func:`xbackprop.files.plan_outputs`)."""
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
    names = [name for name in REPORT_FILES if (curves or name != "curves.png") and (filters or name != "filters.png")]
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
                 paths: dict[str, Path] | None = None, filters_before: Any = None) -> Evaluation:
    """Write the report of ``net`` on labelled images ``x``, ``t`` into ``folder`` and return the evaluation.

    ``names`` are the class names (digits by default), ``runs`` ``(label, TrainResult)``
    pairs whose curves are drawn, ``title`` the run's settings (every figure carries it). A conv net's
    first-layer filters are drawn too, below ``filters_before`` (a host copy taken before training) if given.
    """
    from .curves import results_figure
    from .evaluation import confusion_figure, mistakes_figure
    from .figures import save_figure

    filters = first_filters(net)
    paths = paths or report_paths(folder, curves=bool(runs), filters=filters is not None)
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
        if filters is not None and "filters.png" in paths:
            save_figure(filters_figure(filters, filters_before, f"The first layer's filters{setting}"),
                        staging / "filters.png")
        (staging / "summary.md").write_text(_summary(evaluation, names, source, title, bool(runs),
                                                     "filters.png" in paths))
    return evaluation


def _summary(evaluation: Evaluation, names: Sequence[str], source: str, title: str, curves: bool,
             filters: bool = False) -> str:
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
    if filters:
        lines += ["## The first layer's filters", "", "![the first layer's filters](filters.png)", ""]
    return "\n".join(lines)
