"""Bootstrap interval, paired permutation test, sign test, win/tie/loss, judge symmetry."""

import math

import numpy as np
import pytest

from hone.eval.judge import summarize_judgements
from hone.eval.stats import bootstrap_ci, compare_paired, paired_permutation_test, sign_test


def test_bootstrap_of_a_constant_is_that_constant():
    assert bootstrap_ci([0.25] * 50) == (0.25, 0.25)


def test_bootstrap_matches_the_normal_theory_interval():
    # 400 coin flips with exactly half ones: mean 0.5, standard error sqrt(0.25/400) = 0.025,
    # so the 95% interval is 0.5 +- 1.96 * 0.025 = [0.451, 0.549].
    values = [0.0, 1.0] * 200
    low, high = bootstrap_ci(values, samples=4000, seed=1)
    assert low == pytest.approx(0.451, abs=0.008)
    assert high == pytest.approx(0.549, abs=0.008)
    assert bootstrap_ci(values, samples=4000, seed=1) == (low, high)  # seeded: reproducible


def test_bootstrap_empty_is_nan():
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_exact_permutation_p_value():
    # Ten positive deltas: only the all-plus and all-minus sign patterns are as extreme.
    assert paired_permutation_test([1.0] * 10) == pytest.approx(2 / 2**10)
    # Deltas that cancel exactly: every pattern is at least as extreme as 0.
    assert paired_permutation_test([1.0, -1.0, 2.0, -2.0]) == 1.0
    assert paired_permutation_test([0.0, 0.0]) == 1.0


def test_monte_carlo_permutation_p_value():
    rng = np.random.default_rng(0)
    shifted = rng.normal(0.5, 1.0, size=200)
    null = rng.normal(0.0, 1.0, size=200)
    assert paired_permutation_test(shifted, samples=4000) < 0.001
    assert paired_permutation_test(null, samples=4000) > 0.05


def test_sign_test():
    assert sign_test(10, 0) == pytest.approx(2 / 2**10)
    assert sign_test(5, 5) == 1.0
    assert sign_test(0, 0) == 1.0
    assert sign_test(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)


def test_compare_paired_counts_and_direction():
    base = [0.0, 0.0, 1.0, 1.0, None, 0.5]
    tuned = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    stats = compare_paired(base, tuned, samples=500)
    assert stats.n == 5  # the pair with a missing side is left out
    assert (stats.wins, stats.ties, stats.losses) == (2, 2, 1)
    assert stats.delta == pytest.approx((1 + 0 + 0 - 1 + 0.5) / 5)
    assert stats.ci_low <= stats.delta <= stats.ci_high
    lower = compare_paired([3.0, 3.0], [1.0, 5.0], samples=100, higher_is_better=False)
    assert (lower.wins, lower.losses) == (1, 1)
    assert compare_paired([None], [1.0]) is None


def test_significance_flag():
    stats = compare_paired([0.0] * 30, [1.0] * 30, samples=200)
    assert stats.significant and stats.p_value < 0.001
    assert not compare_paired([0.0, 1.0] * 15, [1.0, 0.0] * 15, samples=200).significant


def test_judge_summary_cancels_position_bias():
    # A judge that always says "A" prefers whichever answer is shown first: no preference remains.
    always_first = summarize_judgements("j", [0.9] * 4, [0.9] * 4)
    assert always_first["tuned_preference"] == pytest.approx(0.5)
    assert always_first["ties"] == 4 and always_first["first_position_bias"] == pytest.approx(0.4)
    prefers_tuned = summarize_judgements("j", [0.2, 0.3], [0.8, 0.9])
    assert prefers_tuned["tuned_preference"] == pytest.approx(0.8)
    assert prefers_tuned["tuned_wins"] == 2 and prefers_tuned["baseline_wins"] == 0
