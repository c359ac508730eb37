"""Paired statistics: base and tuned answer the same examples, so each example gives one
delta; its mean gets a bootstrap confidence interval and a sign-flip permutation test.

Hand-written with numpy (no scipy dependency): both are a few lines and exact enough.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

EXACT_PERMUTATION_MAX_N = 16  # up to 2**16 sign patterns are enumerated exactly


@dataclass
class PairedStats:
    """Tuned minus base on one metric, over the examples where both have a value."""

    n: int
    baseline: float
    tuned: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    wins: int
    """Examples where tuned is better (higher, or lower for lower-is-better metrics)."""
    ties: int
    losses: int

    @property
    def significant(self) -> bool:
        """The 95% interval excludes zero."""
        return self.ci_low > 0 or self.ci_high < 0

    def to_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def bootstrap_ci(values, samples: int = 2000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    # Resample in blocks so memory stays at ~1M numbers whatever the sample count.
    block = max(1, 1_000_000 // data.size)
    for start in range(0, samples, block):
        count = min(block, samples - start)
        means[start : start + count] = data[rng.integers(0, data.size, size=(count, data.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_permutation_test(deltas, samples: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value that the mean delta is 0: under the null each delta's sign is a coin flip.

    Exact (every sign pattern) for up to 16 non-zero deltas, Monte Carlo beyond.
    """
    data = np.asarray(deltas, dtype=np.float64)
    data = data[data != 0]  # zero deltas are unchanged by a sign flip
    if data.size == 0:
        return 1.0
    observed = abs(data.sum())
    tolerance = 1e-12 * max(1.0, observed)
    if data.size <= EXACT_PERMUTATION_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=data.size)))
        return float(np.mean(np.abs(signs @ data) >= observed - tolerance))
    rng = np.random.default_rng(seed)
    hits = 0
    block = max(1, 1_000_000 // data.size)
    for start in range(0, samples, block):
        count = min(block, samples - start)
        signs = rng.choice((1.0, -1.0), size=(count, data.size))
        hits += int(np.sum(np.abs(signs @ data) >= observed - tolerance))
    return (hits + 1) / (samples + 1)  # never exactly 0 from a finite sample


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial sign test on wins vs losses (ties dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare_paired(baseline: list[float | None], tuned: list[float | None], samples: int = 2000, seed: int = 0,
                   higher_is_better: bool = True) -> PairedStats | None:
    """Paired comparison over examples where both values exist; None when there are none."""
    pairs = [(b, t) for b, t in zip(baseline, tuned) if b is not None and t is not None]
    if not pairs:
        return None
    base = np.array([b for b, _ in pairs])
    tune = np.array([t for _, t in pairs])
    deltas = tune - base
    better = deltas if higher_is_better else -deltas
    low, high = bootstrap_ci(deltas, samples, seed=seed)
    return PairedStats(
        n=len(pairs),
        baseline=float(base.mean()),
        tuned=float(tune.mean()),
        delta=float(deltas.mean()),
        ci_low=low,
        ci_high=high,
        p_value=paired_permutation_test(deltas, samples=max(samples, 2000), seed=seed),
        wins=int(np.sum(better > 0)),
        ties=int(np.sum(deltas == 0)),
        losses=int(np.sum(better < 0)),
    )
