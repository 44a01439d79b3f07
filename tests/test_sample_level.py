"""The VLM sample level against its published definition, worked out by hand on a tiny study.

Published (facebookresearch/VLMDejaVu, the attack's fine-grained metrics): the target set's
records with ground truth, ranked by max_pred_gap (|GT ∩ pred_tgt| - |GT ∩ pred_ref|, largest
first), crct_pred (|GT ∩ pred_tgt|, largest first) or min_dist (the nearest neighbour's distance,
smallest first); the top max(1, int(f n)) records; precision = |GT ∩ pred| / |pred| (0 for an
empty prediction), recall = |GT ∩ pred| / |GT|; the gaps are the target's mean minus the
reference's, and F is formed from the mean precision and the mean recall.
"""
from __future__ import annotations

import numpy as np
import pytest

from study.core.objects import ObjectSide
from study.core.sample_level import SampleLevel, sample_level


def side(prefix: str, records: list[tuple]) -> ObjectSide:
    """(ground truth, target prediction, reference prediction, nearest distance) per record, scored
    by the published definitions, written out here."""
    cols = {k: [] for k in ("tp", "tr", "th", "rp", "rr", "rh")}
    for gt, tgt, ref, _ in records:
        for who, pred in (("t", tgt), ("r", ref)):
            hits = len(set(gt) & set(pred))
            cols[who + "h"].append(hits)
            cols[who + "p"].append(hits / len(set(pred)) if pred else 0.0)
            cols[who + "r"].append(hits / len(set(gt)))
    a = {k: np.array(v, dtype=float) for k, v in cols.items()}
    return ObjectSide(np.array([f"{prefix}{i}" for i in range(len(records))]), a["tp"], a["tr"], a["th"].astype(int),
                      a["rp"], a["rr"], a["rh"].astype(int), np.array([r[3] for r in records], np.float32))


# Side a: model A's training records (A the target). Records without ground truth are left out
# before ranking (the product's outcome files never hold them), so none is listed.
A = side("a", [
    (["cat", "dog"], ["cat", "dog", "car"], ["car"], 0.9),  # a0: hits 2 / 0, P 2/3 / 0, R 1 / 0
    (["cat"], ["cat"], ["cat", "dog"], 0.2),  # a1: hits 1 / 1, P 1 / 1/2, R 1 / 1
    (["dog", "car", "bus"], ["dog"], [], 0.5),  # a2: hits 1 / 0, P 1 / 0, R 1/3 / 0
    (["bus"], ["car"], ["bus"], 0.1),  # a3: hits 0 / 1, P 0 / 1, R 0 / 1
])
# Side b: model B's records with the roles swapped; it ranks first under min_dist when pooled.
B = side("b", [(["cat"], ["cat"], [], 0.05)])  # b0: hits 1 / 0, P 1 / 0, R 1 / 0


def f(p, r):
    return 2 * p * r / (p + r) if p + r else 0.0


PUBLISHED = SampleLevel((0.25, 0.5, 1.0), ("max_pred_gap", "crct_pred", "min_dist"), "floor", "target", "from_means")


def rows(plan, sides=(A, B)):
    return {(r["ranking"], r["fraction"]): r for r in sample_level(list(sides), plan)}


def test_each_ranking_takes_the_records_the_published_order_gives():
    got = rows(PUBLISHED)
    # max_pred_gap: a0 (+2), a2 (+1), a1 (0), a3 (-1); int(0.25 * 4) = 1, int(0.5 * 4) = 2
    assert got[("max_pred_gap", 0.25)]["precision_gap"] == pytest.approx(2 / 3 - 0)
    assert got[("max_pred_gap", 0.5)]["precision_gap"] == pytest.approx((2 / 3 + 1) / 2 - 0)
    assert got[("max_pred_gap", 0.5)]["recall_gap"] == pytest.approx((1 + 1 / 3) / 2 - 0)
    # crct_pred: a0 (2), then a1 and a2 (1 each: ties by id), a3 (0)
    assert got[("crct_pred", 0.5)]["precision_gap"] == pytest.approx((2 / 3 + 1) / 2 - (0 + 1 / 2) / 2)
    assert got[("crct_pred", 0.5)]["recall_gap"] == pytest.approx((1 + 1) / 2 - (0 + 1) / 2)
    # min_dist, nearest first: a3 (0.1), a1 (0.2), a2 (0.5), a0 (0.9)
    assert got[("min_dist", 0.25)]["precision_gap"] == pytest.approx(0 - 1)
    assert got[("min_dist", 0.5)]["precision_gap"] == pytest.approx((0 + 1) / 2 - (1 + 1 / 2) / 2)
    assert got[("min_dist", 0.5)]["recall_gap"] == pytest.approx((0 + 1) / 2 - (1 + 1) / 2)
    assert [got[(r, 1.0)]["n"] for r in PUBLISHED.rankings] == [4, 4, 4]  # side b left out
    for r in PUBLISHED.rankings:  # the whole side: the same records, whatever the ranking
        assert got[(r, 1.0)]["precision_gap"] == pytest.approx((2 / 3 + 1 + 1 + 0) / 4 - (0 + 1 / 2 + 0 + 1) / 4)


def test_f_from_the_mean_precision_and_recall_or_per_record():
    published = rows(PUBLISHED)[("min_dist", 0.5)]  # a3, a1: target P 1/2 R 1/2, reference P 3/4 R 1
    assert published["f_gap"] == pytest.approx(f(0.5, 0.5) - f(0.75, 1.0))
    per_record = rows(SampleLevel((0.5,), ("min_dist",), "floor", "target", "per_record"))[("min_dist", 0.5)]
    assert per_record["f_gap"] == pytest.approx((f(0, 0) + f(1, 1)) / 2 - (f(1, 1) + f(1 / 2, 1)) / 2)
    assert published["f_gap"] != pytest.approx(per_record["f_gap"])


def test_top_size_int_or_ceil_of_f_n_and_at_least_one():
    for size, want in (("floor", [1, 1, 1, 2]), ("ceil", [1, 2, 2, 3])):  # n = 4: f n = 0.004, 1.2, 1.6, 2.4
        got = sample_level([A], SampleLevel((0.001, 0.3, 0.4, 0.6), ("crct_pred",), size))
        assert [r["n"] for r in got] == want


def test_both_sides_pooled_rank_side_b_too():
    both = rows(SampleLevel((0.2,), ("min_dist",), "floor", "both", "from_means"))[("min_dist", 0.2)]
    assert both["n"] == 1 and both["precision_gap"] == pytest.approx(1 - 0)  # b0 (0.05) first of five


def test_min_dist_without_distances_is_refused():
    bare = ObjectSide(*(getattr(A, name) for name in ("ids", "target_precision", "target_recall", "target_hits",
                                                      "reference_precision", "reference_recall", "reference_hits")))
    with pytest.raises(ValueError, match="nearest"):
        sample_level([bare], SampleLevel((0.5,), ("min_dist",)))
    with pytest.raises(ValueError, match="ranking"):
        SampleLevel((0.5,), ("closest",))
