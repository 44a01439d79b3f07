"""The SSL déjà vu population test (DESIGN §2.1) and its statistics (§2.5)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from study.core.metrics import (
    Side,
    accuracy_curve,
    dejavu_test,
    most_memorized,
    quadrant_fractions,
    topq_accuracy,
)
from study.core.stats import percentile_interval, permutation_p_value, sign_flip_p_value


def make_side(tc, tconf, rc, rconf, prefix="r"):
    n = len(tc)
    return Side(
        ids=np.array([f"{prefix}{i}" for i in range(n)], dtype=object),
        target_correct=np.asarray(tc, dtype=bool),
        target_confidence=np.asarray(tconf, dtype=np.float64),
        reference_correct=np.asarray(rc, dtype=bool),
        reference_confidence=np.asarray(rconf, dtype=np.float64),
    )


def random_side(rng, n, p_target, p_reference, prefix="r"):
    return make_side(
        rng.random(n) < p_target, -rng.random(n), rng.random(n) < p_reference, -rng.random(n), prefix
    )


# ---- topq_accuracy --------------------------------------------------------------------------------


def test_topq_accuracy_hand_checked():
    acc = topq_accuracy(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1]), [0.5, 0.25, 1.0])
    np.testing.assert_allclose(acc, [[0.5, 1.0, 0.5]])


def test_topq_accuracy_ranks_by_confidence_not_position():
    # Highest confidence is the last record (wrong), then the first (right).
    acc = topq_accuracy(np.array([1, 0, 0, 0]), np.array([0.5, 0.1, 0.2, 0.9]), [0.25, 0.5])
    np.testing.assert_allclose(acc, [[0.0, 0.5]])


def test_topq_accuracy_ceil_rule():
    correct, conf = np.array([1, 0, 1]), np.array([0.9, 0.8, 0.7])
    # q*n = 1.5 -> top 2 records: 1/2; q*n = 0.3 -> at least 1 record; q*n = 0.6 -> 1 record.
    np.testing.assert_allclose(topq_accuracy(correct, conf, [0.5, 0.1, 0.2]), [[0.5, 1.0, 1.0]])
    # q*n exactly 1 (q = 1/3) takes 1 record, not 2, despite floating point.
    np.testing.assert_allclose(topq_accuracy(correct, conf, [1 / 3, 2 / 3]), [[1.0, 0.5]])


def test_topq_accuracy_rows_are_independent_draws():
    correct = np.array([[1, 0, 0, 1], [0, 1, 1, 1]])
    conf = np.array([[4, 3, 2, 1], [1, 2, 3, 4]])
    np.testing.assert_allclose(topq_accuracy(correct, conf, [0.5, 1.0]), [[0.5, 0.5], [1.0, 0.75]])


def test_topq_accuracy_matches_naive_sort_on_random_data():
    rng = np.random.default_rng(0)
    for n in (1, 5, 37, 200):
        correct = rng.random(n) < 0.6
        conf = rng.normal(size=n)
        qs = [0.05, 0.2, 0.5, 1.0]
        got = topq_accuracy(correct, conf, qs)[0]
        ranked = correct[np.argsort(-conf)]
        want = [ranked[: max(1, math.ceil(q * n - 1e-9))].mean() for q in qs]
        np.testing.assert_allclose(got, want)


# ---- dejavu_test ----------------------------------------------------------------------------------


def small_sides():
    a = make_side([1, 1, 0, 1], [0.9, 0.5, 0.3, 0.1], [0, 1, 0, 0], [0.2, 0.8, 0.6, 0.4], "a")
    b = make_side([1, 0, 1, 1, 0, 1], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1], [1, 0, 0, 1, 1, 0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "b")
    return a, b


def test_population_accuracies_hand_checked():
    a, b = small_sides()
    out = dejavu_test([a, b], [1.0, 0.5], bootstrap=50, permutations=50, level=0.95, seed=0)
    q1, qh = out["by_q"]
    # q = 1: target = mean(3/4, 4/6), reference = mean(1/4, 3/6).
    assert q1["target"]["value"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert q1["reference"]["value"] == pytest.approx((1 / 4 + 3 / 6) / 2)
    # q = 0.5: side a top-2 target by conf (0.9, 0.5) -> 1, 1; reference top-2 by its conf
    # (0.8, 0.6) -> 1, 0. Side b top-3 target (0.6, 0.5, 0.4) -> 1, 0, 1; reference top-3
    # (0.6, 0.5, 0.4) -> records 5, 4, 3 -> 0, 1, 1.
    assert qh["target"]["value"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert qh["reference"]["value"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert qh["gap"]["value"] == pytest.approx(qh["target"]["value"] - qh["reference"]["value"])
    assert out["n"] == [4, 6]
    # Quadrants: side a: memorized {0, 3}, correlated {1}, misclassified {2}; side b: memorized
    # {2, 5}, correlated {0, 3}, forgotten {4}, misclassified {1}.
    quad = out["quadrants"]
    assert quad["memorized"]["value"] == pytest.approx((2 / 4 + 2 / 6) / 2)
    assert quad["correlated"]["value"] == pytest.approx((1 / 4 + 2 / 6) / 2)
    assert quad["forgotten"]["value"] == pytest.approx((0 + 1 / 6) / 2)
    assert quad["misclassified"]["value"] == pytest.approx((1 / 4 + 1 / 6) / 2)


def test_gap_at_q1_is_memorized_minus_forgotten():
    rng = np.random.default_rng(3)
    sides = [random_side(rng, 57, 0.7, 0.5, "a"), random_side(rng, 43, 0.6, 0.4, "b")]
    out = dejavu_test(sides, [1.0], bootstrap=20, permutations=20, level=0.9, seed=0)
    quad = out["quadrants"]
    assert out["by_q"][0]["gap"]["value"] == pytest.approx(quad["memorized"]["value"] - quad["forgotten"]["value"])
    assert sum(v["value"] for v in quad.values()) == pytest.approx(1.0)


def test_quadrant_fractions_rows_sum_to_one():
    rng = np.random.default_rng(4)
    tc, rc = rng.random((3, 20)) < 0.5, rng.random((3, 20)) < 0.5
    q = quadrant_fractions([(tc, None, rc, None)])
    np.testing.assert_allclose(q.sum(1), 1.0)
    np.testing.assert_allclose(q[:, 0], (tc & ~rc).mean(1))


def test_perfect_memorization():
    n, permutations = 30, 400
    sides = [
        make_side(np.ones(n), np.linspace(1, 0, n), np.zeros(n), np.linspace(0, 1, n), "a"),
        make_side(np.ones(n), np.linspace(1, 0, n), np.zeros(n), np.linspace(0, 1, n), "b"),
    ]
    out = dejavu_test(sides, [0.2, 1.0], bootstrap=200, permutations=permutations, level=0.95, seed=1)
    for row in out["by_q"]:
        assert row["gap"]["value"] == 1.0
        assert row["gap"]["ci"] == [1.0, 1.0]
        assert row["target"]["ci"] == [1.0, 1.0] and row["reference"]["ci"] == [0.0, 0.0]
        # Only an all-same swap pattern (prob 2^-29 per side) reaches |gap| = 1 under the null.
        assert row["gap"]["p_value"] == pytest.approx(1 / (1 + permutations))
    assert out["quadrants"]["memorized"]["value"] == 1.0


def test_null_simulation_is_not_significant():
    rng = np.random.default_rng(11)
    sides = [random_side(rng, 300, 0.4, 0.4, "a"), random_side(rng, 300, 0.4, 0.4, "b")]
    out = dejavu_test(sides, [0.2, 1.0], bootstrap=300, permutations=300, level=0.95, seed=2)
    for row in out["by_q"]:
        lo, hi = row["gap"]["ci"]
        assert lo <= 0 <= hi
        assert row["gap"]["p_value"] > 0.05
        assert lo <= row["gap"]["value"] <= hi


def test_null_false_positive_rate_is_controlled():
    rejections = 0
    trials = 40
    for seed in range(trials):
        rng = np.random.default_rng(1000 + seed)
        sides = [random_side(rng, 60, 0.5, 0.5, "a"), random_side(rng, 60, 0.5, 0.5, "b")]
        out = dejavu_test(sides, [1.0], bootstrap=10, permutations=200, level=0.95, seed=seed)
        rejections += out["by_q"][0]["gap"]["p_value"] < 0.05
    assert rejections / trials < 0.2


def test_planted_gap_is_detected():
    rng = np.random.default_rng(12)
    sides = [random_side(rng, 200, 0.7, 0.4, "a"), random_side(rng, 200, 0.7, 0.4, "b")]
    out = dejavu_test(sides, [1.0], bootstrap=200, permutations=500, level=0.95, seed=0)
    gap = out["by_q"][0]["gap"]
    assert gap["p_value"] < 0.01 and gap["ci"][0] > 0


def test_dejavu_test_is_seeded_and_rejects_empty():
    rng = np.random.default_rng(5)
    sides = [random_side(rng, 40, 0.6, 0.5)]
    a = dejavu_test(sides, [0.5], bootstrap=30, permutations=30, level=0.95, seed=9)
    b = dejavu_test(sides, [0.5], bootstrap=30, permutations=30, level=0.95, seed=9)
    assert a == b
    with pytest.raises(ValueError):
        dejavu_test([make_side([], [], [], [])], [1.0], bootstrap=10, permutations=10, level=0.95, seed=0)


def test_accuracy_curve_ends_at_population_accuracy():
    a, b = small_sides()
    curve = accuracy_curve([a, b], points=4)
    np.testing.assert_allclose(curve["q"], [0.25, 0.5, 0.75, 1.0])
    assert curve["target"][-1] == pytest.approx((3 / 4 + 4 / 6) / 2)
    assert curve["reference"][-1] == pytest.approx((1 / 4 + 3 / 6) / 2)
    assert curve["target"][1] == pytest.approx((1.0 + 2 / 3) / 2)


def test_most_memorized_order_and_filter():
    a = make_side([1, 1, 1, 0, 1], [0.9, 0.5, 0.8, 0.99, 0.7], [0, 0, 1, 0, 0], [0.1, 0.4, 0.0, 0.0, 0.6], "a")
    b = make_side([1, 0], [0.3, 0.9], [0, 1], [0.2, 0.1], "b")
    rows = most_memorized([a, b], limit=10)
    # Eligible: a0 (0.8), a1 (0.1), a4 (0.1), b0 (0.1); a2 reference right, a3 target wrong.
    assert [r["id"] for r in rows] == ["a0", "a1", "a4", "b0"]
    assert [r["side"] for r in rows] == [0, 0, 0, 1]
    np.testing.assert_allclose([r["score"] for r in rows], [0.8, 0.1, 0.1, 0.1])
    assert [r["id"] for r in most_memorized([a, b], limit=2)] == ["a0", "a1"]


# ---- statistics -----------------------------------------------------------------------------------


def test_percentile_interval_on_known_samples():
    samples = np.arange(101, dtype=np.float64)  # quantile p is exactly 100 p
    lo, hi = percentile_interval(samples, 0.9)
    assert (lo, hi) == (pytest.approx(5.0), pytest.approx(95.0))
    cols = np.stack([samples, -2 * samples], axis=1)
    lo, hi = percentile_interval(cols, 0.5)
    np.testing.assert_allclose(lo, [25.0, -150.0])
    np.testing.assert_allclose(hi, [75.0, -50.0])


def test_permutation_p_value_hand_checked():
    null = np.array([[-3.0], [1.0], [2.0], [0.5]])
    assert permutation_p_value(np.array([2.0]), null)[0] == pytest.approx((1 + 2) / 5)
    assert permutation_p_value(np.array([-2.0]), null)[0] == pytest.approx((1 + 2) / 5)
    assert permutation_p_value(np.array([10.0]), null)[0] == pytest.approx(1 / 5)
    assert permutation_p_value(np.array([0.0]), np.zeros((9, 1)))[0] == 1.0


def exact_sign_test(n_pos, n_neg):
    n = n_pos + n_neg
    k = min(n_pos, n_neg)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("n_pos,n_neg", [(14, 4), (9, 7), (12, 2), (20, 11)])
def test_sign_flip_matches_exact_sign_test(n_pos, n_neg):
    # Discordant pairs (+1 target-only right, -1 reference-only right) and concordant zeros.
    diffs = [1.0] * n_pos + [-1.0] * n_neg + [0.0] * 15
    draws = 20000
    p = sign_flip_p_value(diffs, draws=draws, rng=np.random.default_rng(n_pos * 100 + n_neg))
    exact = exact_sign_test(n_pos, n_neg)
    tol = 4 * math.sqrt(exact * (1 - exact) / draws) + 2 / draws
    assert abs(p - exact) < tol, (p, exact)


def test_sign_flip_all_zero_diffs_is_one():
    assert sign_flip_p_value([0.0, 0.0, 0.0], draws=100, rng=np.random.default_rng(0)) == 1.0
