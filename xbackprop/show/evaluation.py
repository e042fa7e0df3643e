"""What a trained net gets right and wrong: accuracy per class, the confusion matrix and the most confident
mistakes, as numbers, text and figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..backend import to_numpy
from ..functions import checked_labels, namespace_of, softmax

#: Mistakes in the grid, the most confident first.
MISTAKES_SHOWN = 24


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
    batch_size = min(batch_size, getattr(net, "evaluation_batch_size", None) or batch_size)  # a conv net's 100
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
    """``t`` (host NumPy) as a list of class indices (read by :func:`~xbackprop.functions.checked_labels`), or
    ``ValueError`` naming ``x`` or ``t``."""
    if n == 0:
        raise ValueError("x: no images to evaluate")
    return [int(k) for k in checked_labels(t, n, classes, who="t").tolist()]


def confusion_matrix(truth: Sequence[int], predicted: Sequence[int], classes: int) -> list[list[int]]:
    """``classes`` x ``classes`` counts: row = true class, column = predicted class."""
    matrix = [[0] * classes for _ in range(classes)]
    for true, guess in zip(truth, predicted):
        matrix[true][guess] += 1
    return matrix


def scores_text(truth: Sequence[int], predicted: Sequence[int], classes: int, names: Sequence[str] | None,
                source: str) -> str:
    """Accuracy, accuracy per class and the confusion matrix (rows: true class, columns: predicted), as text."""
    matrix = confusion_matrix(truth, predicted, classes)
    names = list(names) if names else [str(k) for k in range(classes)]
    correct = sum(matrix[k][k] for k in range(classes))
    per_class = [matrix[k][k] / sum(matrix[k]) if sum(matrix[k]) else math.nan for k in range(classes)]
    width = max(5, len(str(max(max(row) for row in matrix))) + 1)
    lines = [f"accuracy {correct / max(len(truth), 1):.4f} ({correct} of {len(truth)} images of {source})",
             "accuracy per class: " + ", ".join(f"{name} {acc:.3f}" for name, acc in zip(names, per_class)),
             "confusion matrix (rows: true class, columns: predicted class):",
             " " * 14 + "".join(f"{k:>{width}}" for k in range(classes))]
    for k in range(classes):
        lines.append(f"{k:>2} {names[k][:11]:<11}" + "".join(f"{n:>{width}}" for n in matrix[k]))
    return "\n".join(lines)


def confusion_figure(matrix: Sequence[Sequence[int]], names: Sequence[str], title: str) -> Any:
    """The confusion matrix as a picture: rows the true class, columns the predicted one, each cell's count
    written in it, shaded by the share of its row (so a weak class shows at any class size)."""
    from matplotlib.figure import Figure

    classes = len(matrix)
    shares = [[count / max(sum(row), 1) for count in row] for row in matrix]
    fig = Figure(figsize=(1.0 + 0.62 * classes, 1.6 + 0.55 * classes), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    color="white" if shares[i][j] > 0.5 else "black")
    ax.set_xticks(range(classes), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(classes), names, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    fig.suptitle(title, wrap=True, fontsize=10)
    return fig


def mistakes_figure(images: Sequence[Any], captions: Sequence[str], title: str, columns: int = 6) -> Any:
    """A grid of grey images ``(H, W)`` in ``[0, 1]`` with a caption under each (true, predicted, probability)."""
    from matplotlib.figure import Figure

    rows = max(math.ceil(len(images) / columns), 1)
    fig = Figure(figsize=(1.9 * columns, 2.2 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(ax for row in axes for ax in row):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k], cmap="gray", vmin=0, vmax=1)
            ax.set_title(captions[k], fontsize=7.5)
    fig.suptitle(title, wrap=True, fontsize=10)
    return fig
