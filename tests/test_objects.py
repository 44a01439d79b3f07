"""The VLM déjà vu maths (docs/concepts/vlm-dejavu.md) and its statistics, against hand values and naive loops.

Object sets are sparse (``core.object_sets``); the hand-checked cases are written as small
boolean matrices and turned into sets, and the fast paths are checked against Python sets and
counters on seeded data."""
from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest

from collections import Counter

from study.core import object_draws, objects, stats
from study.core.object_sets import (
    PREDICTION_RULES,
    ObjectSets,
    Votes,
    neighbour_votes,
    overlap,
    predict_top_n,
    predict_union,
)
from study.core.object_draws import population_test
from study.core.objects import (
    ObjectSide,
    most_memorized,
    named_objects,
    recall_area,
    recall_curve,
)
from study.core import sample_level as sl
from study.core.sample_level import SampleLevel, sample_level

def sets(matrix) -> ObjectSets:
    """The object sets of a boolean (records, C) matrix's rows."""
    matrix = np.asarray(matrix, dtype=bool)
    return ObjectSets.from_lists([np.flatnonzero(row) for row in matrix], matrix.shape[1])


def dense_votes(votes) -> np.ndarray:
    out = np.zeros((votes.n_queries, votes.vocab_size), dtype=np.int64)
    out[votes.query, votes.object] = votes.count
    return out


def votes_of(matrix):
    """Votes given as a (queries, C) count matrix, as the vote triples the rules take."""
    matrix = np.asarray(matrix, dtype=np.int64)
    q, o = np.nonzero(matrix)
    return Votes(q.astype(np.int64), o.astype(np.int64), matrix[q, o], *matrix.shape)


# Four public images over four objects.
PUBLIC_MATRIX = np.array(
    [
        [1, 1, 0, 0],
        [0, 1, 1, 0],
        [0, 1, 0, 1],
        [1, 0, 0, 0],
    ],
    dtype=bool,
)
PUBLIC = sets(PUBLIC_MATRIX)
I = np.array([[0, 1, 2], [3, -1, -1], [2, 3, 0]], dtype=np.int64)


def side_from_sets(rng, n, C=6, prefix="r", boost=0.0):
    """A side scored from random object sets; boost > 0 plants memorization (target hits more GT)."""
    gt = rng.random((n, C)) < 0.4
    gt[np.arange(n), rng.integers(0, C, n)] = True  # no empty GT rows
    ref = rng.random((n, C)) < 0.3
    tgt = (rng.random((n, C)) < 0.3) | (gt & (rng.random((n, C)) < boost))
    t, r = overlap(sets(gt), sets(tgt)), overlap(sets(gt), sets(ref))
    return ObjectSide(
        ids=np.array([f"{prefix}{i:03d}" for i in range(n)], dtype=object),
        target_precision=t["precision"],
        target_recall=t["recall"],
        target_hits=t["hits"],
        reference_precision=r["precision"],
        reference_recall=r["recall"],
        reference_hits=r["hits"],
    )


def naive_side_stats(s, bins):
    """PPG, PRG, AUCG of one side by per-record Python loops and np.trapezoid over the curve."""
    n = len(s)
    ppg = sum(a > b for a, b in zip(s.target_precision, s.reference_precision)) / n - sum(
        a < b for a, b in zip(s.target_precision, s.reference_precision)
    ) / n
    prg = sum(a > b for a, b in zip(s.target_recall, s.reference_recall)) / n - sum(
        a < b for a, b in zip(s.target_recall, s.reference_recall)
    ) / n
    x = np.linspace(0, 1, bins + 1)
    curve = lambda rec: [sum(r >= xi for r in rec) / n for xi in x]  # noqa: E731
    aucg = np.trapezoid(curve(s.target_recall), x) - np.trapezoid(curve(s.reference_recall), x)
    return np.array([ppg, prg, aucg])


# ---- votes and prediction rules -------------------------------------------------------------------


def test_neighbour_votes_hand_checked():
    np.testing.assert_array_equal(
        dense_votes(neighbour_votes(PUBLIC, I, 2)), [[1, 2, 1, 0], [1, 0, 0, 0], [1, 1, 0, 1]]
    )
    np.testing.assert_array_equal(
        dense_votes(neighbour_votes(PUBLIC, I, 3)), [[1, 3, 1, 1], [1, 0, 0, 0], [2, 2, 0, 1]]
    )
    votes = neighbour_votes(PUBLIC, I, 1)
    assert votes.count.dtype == np.int64 and (votes.count > 0).all()  # only objects with a vote are held


def test_neighbour_votes_rejects_bad_k_and_indices():
    with pytest.raises(ValueError):
        neighbour_votes(PUBLIC, I, 4)
    with pytest.raises(ValueError):
        neighbour_votes(PUBLIC, I, 0)
    with pytest.raises(ValueError):
        neighbour_votes(PUBLIC, np.array([[4]]), 1)


def test_union_and_top_n_with_ties():
    votes = votes_of([[1, 3, 1, 1], [1, 0, 0, 0], [2, 2, 0, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(predict_union(votes).to_dense(), dense_votes(votes) > 0)
    # Row 0: object 1 first, then objects 0, 2, 3 tie at 1 -> lower index wins.
    np.testing.assert_array_equal(
        predict_top_n(votes, 2).to_dense(),
        [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]],
    )
    np.testing.assert_array_equal(
        predict_top_n(votes, 3).to_dense(),
        [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 1], [0, 0, 0, 0]],
    )
    np.testing.assert_array_equal(predict_top_n(votes, 10).to_dense(), dense_votes(votes) > 0)
    with pytest.raises(ValueError):
        predict_top_n(votes, 0)


def test_prediction_rules_registry():
    votes = votes_of([[1, 3, 1, 1]])
    np.testing.assert_array_equal(PREDICTION_RULES["union"](votes, 1).to_dense(), [[1, 1, 1, 1]])
    np.testing.assert_array_equal(PREDICTION_RULES["top_n"](votes, 1).to_dense(), [[0, 1, 0, 0]])


@pytest.mark.parametrize("seed", range(4))
def test_votes_rules_and_scores_equal_python_sets(seed):
    """Against per-record Python: a Counter of the first k neighbours' objects, the n most common
    (ties to the lower id), set intersections; over a vocabulary far larger than any set."""
    rng = np.random.default_rng(seed)
    C, nb, nq, K = 20_000, 300, 120, 12
    public = [sorted(set(rng.zipf(1.3, size=rng.integers(0, 7)) % C)) for _ in range(nb)]
    gt = [sorted(set(rng.integers(0, C, size=rng.integers(1, 6))) | set(public[rng.integers(nb)][:2])) for _ in range(nq)]
    gt = [g or [int(rng.integers(C))] for g in gt]
    I = rng.integers(-1, nb, size=(nq, K))
    P, G = ObjectSets.from_lists(public, C), ObjectSets.from_lists(gt, C)
    for k in (1, 5, K):
        votes = neighbour_votes(P, I, k)
        counts = [Counter(o for j in row[:k] if j >= 0 for o in public[j]) for row in I]
        got = {(int(q), int(o)): int(c) for q, o, c in zip(votes.query, votes.object, votes.count)}
        assert got == {(q, o): c for q, cnt in enumerate(counts) for o, c in cnt.items()}
        for rule, n in (("union", 3), ("top_n", 1), ("top_n", 3)):
            pred = PREDICTION_RULES[rule](votes, n)
            naive = [set(cnt) if rule == "union" else {o for o, _ in sorted(cnt.items(), key=lambda t: (-t[1], t[0]))[:n]}
                     for cnt in counts]
            assert [set(pred.row(q).tolist()) for q in range(nq)] == naive
            out = overlap(G, pred)
            for q in range(nq):
                hits = len(naive[q] & set(gt[q]))
                assert out["hits"][q] == hits and out["pred_size"][q] == len(naive[q]) and out["gt_size"][q] == len(gt[q])
                assert out["precision"][q] == (hits / len(naive[q]) if naive[q] else 0.0)
                assert out["recall"][q] == hits / len(gt[q])


def test_object_sets_from_lists_take_and_reject_ids_outside_the_vocabulary():
    s = ObjectSets.from_lists([[3, 1, 3], [], [0]], 4)
    assert [s.row(i).tolist() for i in range(3)] == [[1, 3], [], [0]]
    t = s.take(np.array([2, 0, 0]))
    assert [t.row(i).tolist() for i in range(3)] == [[0], [1, 3], [1, 3]]
    with pytest.raises(ValueError, match="object ids"):
        ObjectSets.from_lists([[4]], 4)


# ---- per-record scores ----------------------------------------------------------------------------


def test_overlap_hand_checked_with_empty_prediction():
    gt = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1]], dtype=bool)
    pred = np.array([[1, 0, 1, 1], [0, 0, 0, 0], [0, 0, 1, 1]], dtype=bool)
    out = overlap(sets(gt), sets(pred))
    np.testing.assert_array_equal(out["hits"], [1, 0, 2])
    np.testing.assert_array_equal(out["pred_size"], [3, 0, 2])
    np.testing.assert_array_equal(out["gt_size"], [2, 1, 2])
    np.testing.assert_allclose(out["precision"], [1 / 3, 0.0, 1.0])
    np.testing.assert_allclose(out["recall"], [1 / 2, 0.0, 1.0])
    np.testing.assert_allclose(out["f"], [2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2), 0.0, 1.0])


def test_overlap_rejects_empty_ground_truth_and_shape_mismatch():
    with pytest.raises(ValueError, match="no ground-truth"):
        overlap(sets([[1, 0], [0, 0]]), sets([[1, 0], [1, 0]]))
    with pytest.raises(ValueError):
        overlap(sets(np.ones((2, 3))), sets(np.ones((2, 4))))


def test_named_objects_whole_words_case_and_hyphens():
    vocab = ["three", "three-1", "one", "Dog", "traffic light", "cat"]
    caption = "The digit THREE-1 and a dog, near a Traffic  Light; someone's cat_toy"
    # "three" is not named by "three-1", nor "one" by "someone"; '_' is punctuation, so "cat" is.
    assert named_objects(caption, vocab) == ["three-1", "Dog", "traffic light", "cat"]
    assert named_objects("three; one.", vocab) == ["three", "one"]
    assert named_objects("a -three- here", vocab) == ["three"]  # dashes at word edges are punctuation
    assert named_objects("", vocab) == []


# ---- population test ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_population_values_match_naive_loops(seed):
    rng = np.random.default_rng(seed)
    sides = [side_from_sets(rng, 37, prefix="a"), side_from_sets(rng, 23, prefix="b")]
    for bins in (100, 7):
        out = population_test(sides, bootstrap=20, permutations=20, level=0.95, seed=seed, bins=bins)
        expect = np.mean([naive_side_stats(s, bins) for s in sides], axis=0)
        got = [out["ppg"]["value"], out["prg"]["value"], out["aucg"]["value"]]
        np.testing.assert_allclose(got, expect, atol=1e-12)
        assert out["n"] == [37, 23]
        assert out["precision"]["target"]["value"] == pytest.approx(
            np.mean([s.target_precision.mean() for s in sides])
        )
        assert out["recall"]["reference"]["value"] == pytest.approx(
            np.mean([s.reference_recall.mean() for s in sides])
        )
        # The plotted curve integrates to the reported AUCs.
        c = out["curve"]
        assert np.trapezoid(c["target"], c["x"]) - np.trapezoid(c["reference"], c["x"]) == pytest.approx(
            out["aucg"]["value"]
        )


def test_intervals_and_p_values_match_naive_resampling():
    rng = np.random.default_rng(5)
    sides = [side_from_sets(rng, 19, prefix="a", boost=0.3), side_from_sets(rng, 11, prefix="b", boost=0.3)]
    B, P, seed = 40, 30, 9
    out = population_test(sides, bootstrap=B, permutations=P, level=0.9, seed=seed, bins=10)

    # Each draw has its own generator, keyed by (seed, purpose: 0 bootstrap / 1 swap, side, draw).
    def gen(purpose, k, d):
        return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(purpose, k, d)))

    def resample(s, rows):
        return ObjectSide(*(getattr(s, f)[rows] for f in s.__dataclass_fields__ if getattr(s, f) is not None))

    def swap(s, m):
        w = lambda a, b: np.where(m, b, a)  # noqa: E731
        tp, tr, th = s.target_precision, s.target_recall, s.target_hits
        rp, rr, rh = s.reference_precision, s.reference_recall, s.reference_hits
        return ObjectSide(s.ids, w(tp, rp), w(tr, rr), w(th, rh), w(rp, tp), w(rr, tr), w(rh, th))

    def population(draw):
        return np.mean([naive_side_stats(draw(k, s), 10) for k, s in enumerate(sides)], axis=0)

    def swapped(k, s, d):  # one random bit per record, the generator's bytes in order
        bits = np.unpackbits(np.frombuffer(gen(1, k, d).bytes((len(s) + 7) // 8), np.uint8))[: len(s)]
        return swap(s, bits.astype(bool))

    boot = np.array([population(lambda k, s: resample(s, gen(0, k, b).integers(0, len(s), len(s)))) for b in range(B)])
    null = np.array([population(lambda k, s: swapped(k, s, d)) for d in range(P)])
    lo, hi = stats.percentile_interval(boot, 0.9)
    observed = np.mean([naive_side_stats(s, 10) for s in sides], axis=0)
    p = stats.permutation_p_value(observed, null)
    for j, key in enumerate(["ppg", "prg", "aucg"]):
        np.testing.assert_allclose(out[key]["ci"], [lo[j], hi[j]], atol=1e-12)
        assert out[key]["p_value"] == pytest.approx(p[j])


def test_draws_split_anywhere_give_the_same_rows(monkeypatch):
    rng = np.random.default_rng(3)
    values = rng.random((13, 4))
    whole = object_draws.bootstrap_means(values, 1, 7, range(10))
    swaps = object_draws.swap_means(values, 1, 7, range(9))
    monkeypatch.setattr(object_draws, "_CHUNK_ELEMENTS", 13 * 3)  # three draws per chunk
    np.testing.assert_array_equal(object_draws.bootstrap_means(values, 1, 7, range(10)), whole)
    np.testing.assert_array_equal(np.concatenate([object_draws.bootstrap_means(values, 1, 7, range(0, 4)),
                                                  object_draws.bootstrap_means(values, 1, 7, range(4, 10))]), whole)
    np.testing.assert_array_equal(np.concatenate([object_draws.swap_means(values, 1, 7, r)
                                                  for r in (range(0, 1), range(1, 5), range(5, 9))]), swaps)
    # Another side or seed draws other rows.
    assert not np.array_equal(object_draws.bootstrap_means(values, 0, 7, range(10)), whole)
    assert not np.array_equal(object_draws.swap_means(values, 1, 8, range(9)), swaps)


def test_population_test_does_not_depend_on_chunk_size_or_pieces(monkeypatch):
    rng = np.random.default_rng(6)
    sides = [side_from_sets(rng, 61, prefix="a", boost=0.3), side_from_sets(rng, 37, prefix="b")]
    outs = []
    for elements in (1, 61 * 7, 10**9):  # one draw per chunk, ragged chunks, every draw at once
        monkeypatch.setattr(object_draws, "_CHUNK_ELEMENTS", elements)
        outs.append(population_test(sides, bootstrap=50, permutations=70, level=0.9, seed=2))
    assert outs[0] == outs[1] == outs[2]
    # Each side's draws in pieces (as tasks compute them), stacked: the same test.
    pieces = [object_draws.SideDraws.stack([object_draws.side_draws(s, k, 2, b, p) for b, p in
                                       ((range(0, 20), range(0, 7)), (range(20, 50), range(7, 70)))])
              for k, s in enumerate(sides)]
    assert object_draws.population_summary([61, 37], pieces, 70, 0.9) == outs[0]


def test_identical_models_give_zero_gaps_and_p_value_one():
    rng = np.random.default_rng(0)
    s = side_from_sets(rng, 50)
    target = (s.target_precision, s.target_recall, s.target_hits)
    same = ObjectSide(s.ids, *target, *target)
    out = population_test([same], bootstrap=50, permutations=50, level=0.95, seed=0)
    for key in ("ppg", "prg", "aucg"):
        assert out[key]["value"] == 0.0
        assert out[key]["ci"] == [0.0, 0.0]
        assert out[key]["p_value"] == pytest.approx(1.0)
    assert out["curve"]["target"] == out["curve"]["reference"]


def test_planted_memorization_is_detected():
    rng = np.random.default_rng(1)
    sides = [side_from_sets(rng, 300, prefix="a", boost=0.8), side_from_sets(rng, 200, prefix="b", boost=0.8)]
    out = population_test(sides, bootstrap=300, permutations=300, level=0.95, seed=0)
    for key in ("ppg", "prg", "aucg"):
        lo, hi = out[key]["ci"]
        assert out[key]["value"] > 0 and lo > 0
        assert lo <= out[key]["value"] <= hi
        assert out[key]["p_value"] < 0.01
    for key in ("precision", "recall"):
        for role in ("target", "reference"):
            e = out[key][role]
            assert e["ci"][0] <= e["value"] <= e["ci"][1]
    assert out["recall"]["target"]["value"] > out["recall"]["reference"]["value"]


def test_empty_sides_are_skipped_but_counted():
    rng = np.random.default_rng(0)
    s = side_from_sets(rng, 20)
    empty = side_from_sets(rng, 0)
    out = population_test([s, empty], bootstrap=10, permutations=10, level=0.95, seed=0)
    alone = population_test([s], bootstrap=10, permutations=10, level=0.95, seed=0)
    assert out["n"] == [20, 0]
    assert out["ppg"] == alone["ppg"]
    with pytest.raises(ValueError):
        population_test([empty], bootstrap=10, permutations=10, level=0.95, seed=0)


def test_recall_area_and_curve_hand_checked():
    # bins = 2: grid 0, 0.5, 1. Recall 0.5 -> indicator [1, 1, 0] -> area 0.5 * 1 + 0.5 * 0.5 = 0.75.
    np.testing.assert_allclose(recall_area(np.array([0.0, 0.4, 0.5, 1.0]), bins=2), [0.25, 0.25, 0.75, 1.0])
    x, c = recall_curve(np.array([0.0, 0.4, 0.5, 1.0]), bins=2)
    np.testing.assert_allclose(x, [0, 0.5, 1])
    np.testing.assert_allclose(c, [1.0, 0.5, 0.25])


# ---- sample level and galleries ------------------------------------------------------------------


def _blocks_of(sides, bounds):
    """The sides' records in id ranges [bounds[j], bounds[j + 1]) (None: unbounded), per range."""
    edges = [None, *bounds, None]
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        block = []
        for s in sides:
            keep = np.array([(lo is None or i >= lo) and (hi is None or i < hi) for i in s.ids], dtype=bool)
            block.append(ObjectSide(*(getattr(s, f.name)[keep] for f in dataclasses.fields(ObjectSide)
                                      if getattr(s, f.name) is not None)))
        out.append(block)
    return out


def test_sample_level_and_gallery_from_id_ranges_match_naive_sort():
    """The distributed top-k: per-range histograms give each cut's threshold, the ranges' shares
    of the ties at it go by id; the same rows as a naive sort of every record (ties by id)."""
    rng = np.random.default_rng(14)
    sides = [side_from_sets(rng, 90, prefix="a", boost=0.3), side_from_sets(rng, 70, prefix="b")]
    fractions = [0.001, 0.1, 0.25, 0.5, 1.0]
    rows = []
    for k, s in enumerate(sides):
        for i in range(len(s)):
            f = lambda p, r: 2 * p * r / (p + r) if p + r else 0.0  # noqa: E731
            tp, tr, rp, rr = s.target_precision[i], s.target_recall[i], s.reference_precision[i], s.reference_recall[i]
            rows.append((-(int(s.target_hits[i]) - int(s.reference_hits[i])), s.ids[i], k, tp - rp, tr - rr,
                         f(tp, tr) - f(rp, rr)))
    rows.sort(key=lambda r: r[:3])
    blocks = _blocks_of(sides, ["a030", "a061", "b020", "b045"])
    assert [sum(len(s) for s in b) for b in blocks] == [30, 31, 49, 25, 25]
    plan = SampleLevel(tuple(fractions))
    counts = [sl.score_counts(b, "max_pred_gap") for b in blocks]
    added = {g: sum(c.get(g, 0) for c in counts) for g in set().union(*counts)}
    cuts = sl.sample_cuts(added, len(rows), plan)
    takes = sl.block_takes(counts, cuts)
    assert any(sum(0 < t[j][1] for t in takes) > 1 for j in range(len(fractions)))  # ties across ranges
    got = sl.sample_rows(plan, "max_pred_gap", cuts, [sl.sample_sums(b, "max_pred_gap", t) for b, t in zip(blocks, takes)])
    for out, q in zip(got, fractions):
        m = max(1, math.ceil(q * len(rows)))
        assert out["n"] == m
        for j, name in enumerate(("precision_gap", "recall_gap", "f_gap")):
            assert out[name] == pytest.approx(np.mean([r[3 + j] for r in rows[:m]]), abs=1e-12)
    gallery = objects.merge_most_memorized([most_memorized(b, 12) for b in blocks], 12)
    assert [(r["id"], r["side"]) for r in gallery] == [(r[1], r[2]) for r in rows[:12] if r[0] < 0]


def test_a_side_drawn_in_id_ranges_adds_up_to_the_whole_side():
    """A range's bootstrap counts and swap bits are its part of the whole side's (the stream of
    each draw is generated in pieces and only the range's records counted): the ranges' sums
    add up to the side's, whatever the ranges."""
    total = 1000
    for seed in range(3):
        whole = np.bincount(stats.resample_indices(total, stats.draw_rng(seed, stats.BOOTSTRAP, 0, 5)), minlength=total)
        mask = stats.swap_mask(total, stats.draw_rng(seed, stats.SWAP, 0, 5))
        for cuts in ([0, 1, 999, 1000], [0, 333, 334, 700, 1000], [0, 7, 13, 1000]):
            parts = list(zip(cuts[:-1], cuts[1:]))
            assert np.array_equal(np.concatenate([
                stats.block_counts(total, a, b - a, stats.draw_rng(seed, stats.BOOTSTRAP, 0, 5)) for a, b in parts]), whole)
            assert np.array_equal(np.concatenate([
                stats.block_swap_mask(total, a, b - a, stats.draw_rng(seed, stats.SWAP, 0, 5)) for a, b in parts]), mask)
    rng = np.random.default_rng(15)
    side = side_from_sets(rng, 150, boost=0.3)
    one = object_draws.side_draws(side, 1, 4, range(40), range(30))
    blocks = _blocks_of([side], ["r040", "r041", "r100"])
    offsets = np.cumsum([0] + [len(b[0]) for b in blocks])
    added = object_draws.SideDraws.add([object_draws.side_draws(b[0], 1, 4, range(40), range(30), 100, 150, int(o))
                                        for b, o in zip(blocks, offsets)])
    assert added.n == one.n and np.array_equal(added.target_at_least, one.target_at_least)
    for name in ("sums", "boot", "null"):
        np.testing.assert_allclose(getattr(added, name), getattr(one, name), rtol=1e-12, atol=1e-12)
    assert not np.allclose(object_draws.side_draws(blocks[3][0], 1, 4, range(40), range(30)).boot,
                           object_draws.side_draws(blocks[3][0], 1, 4, range(40), range(30), 100, 150, 100).boot)


def test_sample_level_matches_naive_sort_and_slice():
    rng = np.random.default_rng(4)
    sides = [side_from_sets(rng, 40, prefix="a", boost=0.4), side_from_sets(rng, 27, prefix="b")]
    fractions = [0.001, 0.1, 0.25, 1.0]
    rows = []
    for s in sides:
        for i in range(len(s)):
            tp, tr = s.target_precision[i], s.target_recall[i]
            rp, rr = s.reference_precision[i], s.reference_recall[i]
            f = lambda p, r: 2 * p * r / (p + r) if p + r else 0.0  # noqa: E731
            gap = int(s.target_hits[i]) - int(s.reference_hits[i])
            rows.append((-gap, s.ids[i], tp - rp, tr - rr, f(tp, tr) - f(rp, rr)))
    rows.sort(key=lambda r: (r[0], r[1]))
    got = sample_level(sides, SampleLevel(tuple(fractions)))
    for out, q in zip(got, fractions):
        m = max(1, math.ceil(q * len(rows)))
        top = rows[:m]
        assert out["fraction"] == q and out["n"] == m
        assert out["precision_gap"] == pytest.approx(np.mean([r[2] for r in top]))
        assert out["recall_gap"] == pytest.approx(np.mean([r[3] for r in top]))
        assert out["f_gap"] == pytest.approx(np.mean([r[4] for r in top]))
    with pytest.raises(ValueError):
        sample_level(sides, SampleLevel((0.0,)))


def test_most_memorized_orders_by_hits_gap_then_id():
    def side(ids, th, rh):
        z = np.zeros(len(ids))
        return ObjectSide(np.array(ids, dtype=object), z, z, np.array(th), z, z, np.array(rh))

    sides = [side(["b", "a", "c"], [3, 3, 1], [1, 1, 1]), side(["d", "e"], [5, 0], [2, 2])]
    assert most_memorized(sides, 10) == [
        {"id": "d", "side": 1, "score": 3.0},
        {"id": "a", "side": 0, "score": 2.0},
        {"id": "b", "side": 0, "score": 2.0},
    ]
    assert [r["id"] for r in most_memorized(sides, 2)] == ["d", "a"]


def full_ranking(sides):
    """The pre-vectorised ranking, kept as the oracle: every id as text, one lexsort over all records."""
    side_index = np.concatenate([np.full(len(s), i) for i, s in enumerate(sides)])
    ids = np.array([str(i) for s in sides for i in s.ids], dtype=str)
    score = np.concatenate([s.target_hits.astype(np.int64) - s.reference_hits for s in sides])
    return np.lexsort((side_index, ids, -score)), side_index, ids, score


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_galleries_equal_full_ranking_with_ties_and_shared_ids(seed):
    rng = np.random.default_rng(seed)
    sides = []
    for n in (70, 0, 55):
        s = side_from_sets(rng, n, C=4, boost=0.3)  # hits gaps in -4..4: large tie groups
        ids = np.array([f"r{int(i):02d}" for i in rng.integers(0, 40, n)], dtype=object)  # repeats, across sides too
        sides.append(ObjectSide(ids, *(getattr(s, f) for f in list(s.__dataclass_fields__)[1:])))
    order, side_index, ids, score = full_ranking(sides)
    for limit in (0, 1, 3, 20, 500):
        top = order[score[order] > 0][:limit]
        want = [{"id": str(ids[i]), "side": int(side_index[i]), "score": float(score[i])} for i in top]
        assert most_memorized(sides, limit) == want
    fractions = [0.001, 0.05, 0.3, 1.0]
    n = len(order)
    for row, f in zip(sample_level(sides, SampleLevel(tuple(fractions))), fractions):
        ranked = order[: max(1, math.ceil(f * n - 1e-9))]
        pt, pr, rt, rr = (np.concatenate([getattr(s, k) for s in sides])[ranked] for k in
                          ("target_precision", "reference_precision", "target_recall", "reference_recall"))
        assert row["precision_gap"] == pytest.approx(np.mean(pt - pr), abs=1e-12)
        assert row["recall_gap"] == pytest.approx(np.mean(rt - rr), abs=1e-12)


def test_module_imports_neither_ray_nor_faiss():
    code = (
        "import sys, study.core.objects\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'ray', 'faiss'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_scores_in_batches_of_queries_equal_one_pass(monkeypatch, tmp_path):
    """The scoring reads a part of search results a batch of queries at a time (bounded memory)
    and counts each k's votes once for all rules and variants; the outcome file equals scoring
    each (k, rule, variant) over every query in one pass, whatever the batch size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from study.kinds.vlm_dejavu import outcomes
    from study.kinds.vlm_dejavu.objects import ObjectTables, Texts
    from study.search.results import ResultWriter

    rng = np.random.default_rng(5)
    C, nb, nq, K = 500, 60, 53, 10
    names = [f"o{j}" for j in range(C)]
    public = ObjectSets.from_lists([rng.integers(0, C, size=rng.integers(0, 5)) for _ in range(nb)], C)
    attacked = ObjectSets.from_lists([rng.integers(0, C, size=rng.integers(0, 5)) for _ in range(nq)], C)
    captions = [" ".join(names[o] for o in attacked.row(i)[: i % 3]) for i in range(nq)]  # names some objects
    pub_ids, q_ids = [f"p{i}" for i in range(nb)], [f"q{i}" for i in range(nq)]
    tables = ObjectTables.in_memory(names, pub_ids, public, q_ids, attacked, Texts.from_arrow(pa.array(captions)))
    I = rng.integers(-1, nb, size=(nq, K))
    writer = ResultWriter(str(tmp_path / "results"), "key", rows_per_part=1000)
    writer.write(q_ids, np.array([[pub_ids[j] if j >= 0 else None for j in row] for row in I], dtype=object),
                 np.zeros((nq, K), np.float32))
    writer.close()
    ks = (1, 5, K)
    want = {}
    _, att = tables.attacked.gather(q_ids)
    for variant, gt in outcomes.ground_truth(names, att, np.arange(nq)).items():
        keep = np.flatnonzero(gt.sizes() > 0)
        for k in ks:
            for rule in PREDICTION_RULES:
                whole = overlap(gt.take(keep), PREDICTION_RULES[rule](neighbour_votes(public, I[keep], k), 3))
                hits = np.zeros(nq, np.int64)
                hits[keep] = whole["hits"]
                want[outcomes.column(k, rule, variant, "hits")] = hits.tolist()
    for rows in (1, 7, 53, 1000):
        monkeypatch.setattr(outcomes, "SCORE_ROWS", rows)
        out = tmp_path / f"out-{rows}"
        outcomes.score_part(tables, str(tmp_path / "results"), 0, str(out), ks, 3)
        got = pq.read_table(out / "part-00000.parquet")
        assert got.column("id").to_pylist() == q_ids
        assert {name: got.column(name).to_pylist() for name in want} == want
