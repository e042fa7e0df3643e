"""What a training run gives back: its losses, evaluations, divergence and time."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainResult:
    """What a run did: ``history`` rows ``{iter, loss, train_acc, test_acc}`` at each evaluation,
    ``losses`` (every step's minibatch loss), ``diverged_at`` (the first step whose loss
    was not finite or blew up, or ``None``) and ``train_acc_source`` (``"full"`` or ``"batch"``)."""

    batch_size: int
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    diverged_at: int | None = None
    train_acc_source: str = "full"

    @property
    def final_train_acc(self) -> float:
        return self.history[-1]["train_acc"] if self.history else float("nan")

    @property
    def final_test_acc(self) -> float:
        return self.history[-1]["test_acc"] if self.history else float("nan")

    @property
    def steps_done(self) -> int:
        return len(self.losses)

    @property
    def samples_per_s(self) -> float:
        return self.steps_done * self.batch_size / self.seconds if self.seconds > 0 else float("nan")

    def _repr_png_(self) -> bytes | None:
        """The run's accuracy and loss curves, for Jupyter (needs matplotlib; ``None`` without it)."""
        try:
            from ..show.curves import results_figure
            from ..show.figures import png_bytes

            return png_bytes(results_figure([(f"{self.steps_done} iterations, batch {self.batch_size}", self)]))
        except ImportError:
            return None
