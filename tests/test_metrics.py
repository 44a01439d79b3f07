"""The SSL déjà vu population test (docs/concepts/ssl-dejavu.md) and its statistics (docs/concepts/statistics.md)."""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from study.core import stats
from study.core.metrics import (
    AccuracyDraws,
    Side,
    accuracy_summary,
    accuracy_curve,
    dejavu_test,
    most_memorized,
    quadrant_fractions,
    side_draws,
    topq_accuracy,
)
from study.core.stats import (
    draw_chunks,
    percentile_interval,
    permutation_p_value,
    pooled_ids,
    top_by_score,
)


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


def test_the_published_top_q_size_is_int_q_n_at_least_one():
    from study.core.accuracy_draws import TopFractions, top_m

    # n = 7: q = 0.2 -> int(1.4) = 1 (ceil: 2); q = 0.5 -> int(3.5) = 3 (ceil: 4); q = 0.1 -> int(0.7)
    # = 0, at least 1; q = 0.57 on n = 100 -> Python's int(56.99999999999999) = 56, as published.
    assert top_m(7, TopFractions([0.2, 0.5, 0.1, 1.0], "floor")).tolist() == [1, 3, 1, 7]
    assert top_m(7, TopFractions([0.2, 0.5, 0.1, 1.0])).tolist() == [2, 4, 1, 7] == top_m(7, [0.2, 0.5, 0.1, 1.0]).tolist()
    assert top_m(100, TopFractions([0.57], "floor")).tolist() == [56]
    correct, conf = np.array([1, 0, 1, 1, 0, 0, 1]), np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    # floor at q = 0.5: top 3 (1, 0, 1) -> 2/3; ceil: top 4 -> 3/4.
    np.testing.assert_allclose(topq_accuracy(correct, conf, TopFractions([0.5], "floor")), [[2 / 3]])
    np.testing.assert_allclose(topq_accuracy(correct, conf, TopFractions([0.5], "ceil")), [[3 / 4]])


def test_the_top_q_size_rule_reaches_the_population_test():
    import pickle

    from study.core.accuracy_draws import TopFractions

    a, b = small_sides()
    qs = TopFractions([0.5], "floor")
    assert pickle.loads(pickle.dumps(qs)).rule == "floor"  # as a Ray task receives it
    (qh,) = dejavu_test([a, b], qs, bootstrap=20, permutations=20, level=0.95, seed=0)["by_q"]
    # Side a (n 4): int(2.0) = 2, as ceil; side b (n 6): int(3.0) = 3. Then q = 0.4: a int(1.6) = 1
    # -> target 1 (0.9), reference 1 (0.8); b int(2.4) = 2 -> target (0.6, 0.5) 1, 0; reference
    # records 5, 4 -> 0, 1.
    assert qh["target"]["value"] == pytest.approx((1.0 + 2 / 3) / 2)
    (q4,) = dejavu_test([a, b], TopFractions([0.4], "floor"), bootstrap=20, permutations=20, level=0.95, seed=0)["by_q"]
    assert q4["target"]["value"] == pytest.approx((1.0 + 1 / 2) / 2)
    assert q4["reference"]["value"] == pytest.approx((1.0 + 1 / 2) / 2)


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
    # 300 null datasets: the rejection rate at 0.05 must not be significantly above 0.05 (the exact
    # one-sided 99 % lower bound of the rate at most 0.05); 20 % rejections would fail this.
    rejections = 0
    trials = 300
    for seed in range(trials):
        rng = np.random.default_rng(1000 + seed)
        sides = [random_side(rng, 60, 0.5, 0.5, "a"), random_side(rng, 60, 0.5, 0.5, "b")]
        out = dejavu_test(sides, [1.0], bootstrap=10, permutations=200, level=0.95, seed=seed)
        rejections += out["by_q"][0]["gap"]["p_value"] < 0.05
    assert stats.binomial_interval(rejections, trials, 0.98)[0] <= 0.05, rejections


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


# ---- dejavu_test against a naive oracle: plain loops over draws, explicit resampling ---------------


def naive_topq(correct, confidence, qs):
    """Top-q accuracy with the ranking spelled out: sorted by (-confidence, position)."""
    n = len(correct)
    ranked = sorted(range(n), key=lambda i: (-confidence[i], i))
    tops = [max(1, math.ceil(q * n - 1e-9)) for q in qs]
    return [sum(bool(correct[i]) for i in ranked[:m]) / m for m in tops]


def naive_quadrants(tc, rc):
    pairs = [(bool(t), bool(r)) for t, r in zip(tc, rc)]
    quadrants = [(True, False), (True, True), (False, True), (False, False)]
    return [pairs.count(want) / len(pairs) for want in quadrants]


def naive_dejavu(sides, qs, bootstrap, permutations, level, seed):
    """dejavu_test draw by draw. Draw d of side k comes from stats.draw_rng(seed, purpose, k, d); a
    resample is a multiset of records, listed in record order (the documented tie rule)."""
    present = [(k, s) for k, s in enumerate(sides) if len(s)]

    def columns(s):
        return [list(getattr(s, f)) for f in ("target_correct", "target_confidence", "reference_correct",
                                              "reference_confidence")]

    def resampled(k, s, draw):
        idx = sorted(stats.resample_indices(len(s), stats.draw_rng(seed, stats.BOOTSTRAP, k, draw)))
        return [[col[i] for i in idx] for col in columns(s)]

    def swapped(k, s, draw):
        swap = stats.swap_mask(len(s), stats.draw_rng(seed, stats.SWAP, k, draw))
        tc, tconf, rc, rconf = columns(s)
        pick = lambda a, b: [b[i] if swap[i] else a[i] for i in range(len(s))]  # noqa: E731
        return [pick(tc, rc), pick(tconf, rconf), pick(rc, tc), pick(rconf, tconf)]

    def population(draw_of):
        per_side = [draw_of(k, s) for k, s in present]
        tgt = np.mean([naive_topq(tc, tconf, qs) for tc, tconf, _, _ in per_side], axis=0)
        ref = np.mean([naive_topq(rc, rconf, qs) for _, _, rc, rconf in per_side], axis=0)
        return tgt, ref, np.mean([naive_quadrants(tc, rc) for tc, _, rc, _ in per_side], axis=0)

    tgt, ref, quad = population(lambda k, s: columns(s))
    boot = [population(lambda k, s: resampled(k, s, d)) for d in range(bootstrap)]
    null = [population(lambda k, s: swapped(k, s, d)) for d in range(permutations)]
    b_tgt, b_ref, b_quad = (np.array([b[i] for b in boot]) for i in range(3))
    n_tgt, n_ref = (np.array([d[i] for d in null]) for i in range(2))
    intervals = {key: percentile_interval(samples, level) for key, samples in
                 [("target", b_tgt), ("reference", b_ref), ("gap", b_tgt - b_ref), ("quadrants", b_quad)]}
    return {
        "target": tgt, "reference": ref, "gap": tgt - ref, "quadrants": quad,
        "intervals": intervals, "p_value": permutation_p_value(tgt - ref, n_tgt - n_ref),
    }


def tied_side(rng, n, prefix):
    """Confidences from three values, shared by both models: ties within and across roles."""
    levels = np.array([-1.0, -0.5, 0.0])
    return make_side(rng.random(n) < 0.6, levels[rng.integers(0, 3, n)], rng.random(n) < 0.4,
                     levels[rng.integers(0, 3, n)], prefix)


@pytest.mark.parametrize("seed,sizes,tied", [
    (0, (7,), False), (1, (7, 12), True), (2, (37, 0, 23), True), (3, (200, 150), False), (4, (64, 90), True),
])
def test_dejavu_test_equals_naive_oracle(seed, sizes, tied):
    rng = np.random.default_rng(seed)
    make = tied_side if tied else lambda g, n, p: random_side(g, n, 0.6, 0.45, p)
    sides = [make(rng, n, f"s{k}_") for k, n in enumerate(sizes)]
    qs, level = [0.05, 0.2, 1 / 3, 1.0], 0.9
    out = dejavu_test(sides, qs, bootstrap=31, permutations=43, level=level, seed=seed)
    want = naive_dejavu(sides, qs, 31, 43, level, seed)
    assert out["n"] == [n for n in sizes if n]
    for j, row in enumerate(out["by_q"]):
        for key in ("target", "reference", "gap"):
            assert row[key]["value"] == want[key][j]
            lo, hi = want["intervals"][key]
            assert row[key]["ci"] == [lo[j], hi[j]]
        assert row["gap"]["p_value"] == want["p_value"][j]
    for j, name in enumerate(("memorized", "correlated", "forgotten", "misclassified")):
        lo, hi = want["intervals"]["quadrants"]
        assert out["quadrants"][name] == {"value": want["quadrants"][j], "ci": [lo[j], hi[j]]}


def test_dejavu_test_does_not_depend_on_chunk_size():
    rng = np.random.default_rng(8)
    sides = [tied_side(rng, 53, "a"), random_side(rng, 41, 0.7, 0.4, "b")]
    args = dict(qs=[0.05, 0.2, 1.0], bootstrap=40, permutations=60, level=0.95, seed=4)
    one_draw = dejavu_test(sides, chunk_elements=1, **args)  # one draw per chunk
    assert dejavu_test(sides, chunk_elements=7 * 53, **args) == one_draw  # 3 to 9 draws a chunk, ragged last
    assert dejavu_test(sides, chunk_elements=10**9, **args) == one_draw  # every draw at once
    assert dejavu_test(sides, **args) == one_draw


def test_draws_in_pieces_stack_into_the_whole_test():
    """The measure stage's tasks each draw a range of draw numbers (a side's index keys its draws):
    any split of the ranges, including an empty piece, stacks into the numbers of one piece."""
    rng = np.random.default_rng(11)
    sides = [tied_side(rng, 47, "a"), Side(*(np.zeros(0),) * 5), random_side(rng, 39, 0.6, 0.5, "b")]
    qs, boot, perms = [0.1, 0.5, 1.0], 70, 90
    whole = dejavu_test(sides, qs=qs, bootstrap=boot, permutations=perms, level=0.9, seed=6)
    splits = (
        [(range(70), range(90))],
        [(range(0, 13), range(0, 60)), (range(13, 13), range(60, 90)), (range(13, 70), range(90, 90))],
        [(range(0, 1), range(0, 2)), (range(1, 30), range(2, 45)), (range(30, 70), range(45, 90))],
    )
    for pieces in splits:
        present = [AccuracyDraws.stack([side_draws(s, k, qs, 6, rb, rp) for rb, rp in pieces])
                   for k, s in enumerate(sides) if len(s)]
        assert accuracy_summary(present, qs, perms, 0.9) == whole, pieces
    shifted = side_draws(sides[0], 0, qs, 6, range(5, 9), range(0))
    assert np.array_equal(shifted.boot_target, side_draws(sides[0], 0, qs, 6, range(9), range(0)).boot_target[5:])


def test_dejavu_test_memory_does_not_grow_with_draws():
    rng = np.random.default_rng(9)
    n, chunk = 20_000, 1 << 16
    sides = [random_side(rng, n, 0.6, 0.5, "a"), random_side(rng, n, 0.6, 0.5, "b")]

    def peak(draws):
        tracemalloc.start()
        dejavu_test(sides, [0.2, 1.0], bootstrap=draws, permutations=draws, level=0.95, seed=0, chunk_elements=chunk)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    few, many = peak(10), peak(300)
    # A (draws, n) int32 matrix at 300 draws alone would be 24 MB; a chunk is 2^16 elements.
    assert many < 1.25 * few + 100_000, (few, many)
    assert many < 200 * n, many  # about 147 bytes per record here, against 24 MB


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


def old_most_memorized(sides, limit):
    """The pre-vectorised loop, kept as the oracle."""
    rows = []
    for side_index, s in enumerate(sides):
        mask = s.target_correct.astype(bool) & ~s.reference_correct.astype(bool)
        score = s.target_confidence - s.reference_confidence
        for i in np.flatnonzero(mask):
            rows.append({"id": str(s.ids[i]), "side": side_index, "score": float(score[i])})
    rows.sort(key=lambda r: (-r["score"], r["id"]))
    return rows[:limit]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_most_memorized_equals_loop_with_ties_and_shared_ids(seed):
    rng = np.random.default_rng(seed)
    sides = []
    for n in (60, 45, 0):
        s = tied_side(rng, n, "r")
        ids = np.array([f"r{int(i):02d}" for i in rng.integers(0, 30, n)], dtype=object)  # repeats, across sides too
        sides.append(Side(ids, *(getattr(s, f) for f in list(s.__dataclass_fields__)[1:])))
    for limit in (0, 1, 5, 17, 200):
        assert most_memorized(sides, limit) == old_most_memorized(sides, limit)


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


def discordant(n_pos, n_neg, concordant=15):
    """(target, reference) outcomes: n_pos target-only right, n_neg reference-only right, the rest
    concordant (both right or both wrong)."""
    t = np.array([1] * n_pos + [0] * n_neg + [1, 0] * (concordant // 2) + [1] * (concordant % 2))
    r = np.array([0] * n_pos + [1] * n_neg + [1, 0] * (concordant // 2) + [1] * (concordant % 2))
    return t, r


@pytest.mark.parametrize("n_pos,n_neg", [(14, 4), (9, 7), (12, 2), (20, 11)])
def test_reported_gap_p_value_matches_exact_sign_test(n_pos, n_neg):
    # The p-value the SSL report prints (dejavu_test's gap at q = 1) is a sign test on the
    # discordant records: checked against the exact binomial sign test.
    t, r = discordant(n_pos, n_neg)
    rng = np.random.default_rng(n_pos * 100 + n_neg)
    side = make_side(t, -rng.random(len(t)), r, -rng.random(len(t)))
    draws = 20000
    p = dejavu_test([side], [1.0], bootstrap=10, permutations=draws, level=0.95, seed=n_pos)["by_q"][0]["gap"]["p_value"]
    exact = exact_sign_test(n_pos, n_neg)
    tol = 4 * math.sqrt(exact * (1 - exact) / draws) + 2 / draws
    assert abs(p - exact) < tol, (p, exact)


@pytest.mark.parametrize("n_pos,n_neg", [(14, 4), (9, 7), (20, 11)])
def test_reported_ppg_p_value_matches_exact_sign_test(n_pos, n_neg):
    # PPG = share(P_t > P_r) - share(P_t < P_r); its swap test (the VLM report's p-value) is a sign
    # test on sign(P_t - P_r).
    from study.core.object_draws import population_test
    from study.core.objects import ObjectSide

    rng = np.random.default_rng(n_neg)
    n = n_pos + n_neg + 15
    pr = rng.uniform(0.2, 0.8, n)
    pt = pr.copy()
    pt[:n_pos] += 0.1
    pt[n_pos:n_pos + n_neg] -= 0.1
    zeros = np.zeros(n)
    side = ObjectSide(np.array([f"r{i}" for i in range(n)]), pt, pr, zeros, pr, pr, zeros)
    draws = 20000
    p = population_test([side], bootstrap=10, permutations=draws, level=0.95, seed=1)["ppg"]["p_value"]
    exact = exact_sign_test(n_pos, n_neg)
    assert abs(p - exact) < 4 * math.sqrt(exact * (1 - exact) / draws) + 2 / draws, (p, exact)


def test_draw_chunks_bound_elements_and_cover_draws():
    assert list(draw_chunks(10, 13, 39)) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert list(draw_chunks(3, 100, 1)) == [(0, 1), (1, 2), (2, 3)]  # at least one draw per chunk
    assert list(draw_chunks(0, 5, 50)) == []


def test_draws_are_keyed_not_sequential():
    a = stats.draw_rng(5, stats.BOOTSTRAP, 1, 7).integers(0, 100, 10)
    assert (a == stats.draw_rng(5, stats.BOOTSTRAP, 1, 7).integers(0, 100, 10)).all()
    B, S = stats.BOOTSTRAP, stats.SWAP
    for other in [(6, B, 1, 7), (5, S, 1, 7), (5, B, 0, 7), (5, B, 1, 8)]:
        assert not (a == stats.draw_rng(*other).integers(0, 100, 10)).all()
    masks = np.array([stats.swap_mask(13, stats.draw_rng(0, stats.SWAP, 0, d)) for d in range(2000)])
    assert masks.dtype == bool and masks.shape == (2000, 13)
    assert abs(masks.mean() - 0.5) < 0.01


@pytest.mark.parametrize("top", [0, 1, 4, 9, 30])
def test_top_by_score_equals_full_sort(top):
    rng = np.random.default_rng(top)
    id_arrays = [np.array([f"x{int(i)}" for i in rng.integers(0, 6, n)], dtype=object) for n in (12, 0, 9)]
    score = rng.integers(-2, 3, 21).astype(np.float64)
    text = [str(i) for a in id_arrays for i in a]
    want = sorted(range(21), key=lambda p: (-score[p], text[p], p))[:top]
    ids_at = pooled_ids(id_arrays)
    got = top_by_score(score, ids_at, top)
    assert got.tolist() == want
    assert ids_at(got).tolist() == [text[p] for p in want]
