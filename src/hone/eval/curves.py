"""Training curves from a run's metrics.jsonl, and the overfitting flag."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hone.train.metrics import read_metrics


@dataclass
class Curves:
    train: list[tuple[int, float]] = field(default_factory=list)
    """(step, training loss) per optimizer step."""
    eval: list[tuple[int, float]] = field(default_factory=list)
    """(step, eval loss) at each evaluation."""


@dataclass
class Overfitting:
    flagged: bool
    reason: str
    best_step: int | None = None
    best_eval_loss: float | None = None
    final_eval_loss: float | None = None


def read_curves(run_dir: Path | None) -> Curves:
    if run_dir is None:
        return Curves()
    records = read_metrics(Path(run_dir) / "metrics.jsonl")
    return Curves(
        train=[(r["step"], r["loss"]) for r in records if "loss" in r],
        eval=[(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r],
    )


def check_overfitting(curves: Curves, tolerance: float = 0.02) -> Overfitting:
    """Flag when eval loss ended more than `tolerance` (relative) above its best while the
    training loss kept falling after that best step: the model memorises, it no longer generalises."""
    if len(curves.eval) < 3:
        return Overfitting(False, "too few evaluations to judge (need 3+; lower train.eval_every)")
    best_step, best = min(curves.eval, key=lambda point: point[1])
    final_step, final = curves.eval[-1]
    train_at_best = _mean_near(curves.train, best_step)
    train_final = _mean_near(curves.train, final_step)
    rising = final > best * (1 + tolerance)
    train_falling = train_at_best is not None and train_final is not None and train_final < train_at_best
    if rising and train_falling:
        reason = (f"eval loss rose from {best:.4f} (step {best_step}) to {final:.4f} (step {final_step}) "
                  f"while train loss fell from {train_at_best:.4f} to {train_final:.4f}: consider fewer epochs or more data")
        return Overfitting(True, reason, best_step, best, final)
    return Overfitting(False, f"eval loss ended at {final:.4f}, best {best:.4f} at step {best_step}", best_step, best, final)


def _mean_near(points: list[tuple[int, float]], step: int, window: int = 5) -> float | None:
    """Mean training loss of the `window` steps up to `step` (single steps are noisy)."""
    values = [loss for s, loss in points if step - window < s <= step]
    return sum(values) / len(values) if values else None
