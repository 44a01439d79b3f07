"""Top-k merging and label votes (docs/concepts/ssl-dejavu.md) against brute force and faiss.ResultHeap."""
from __future__ import annotations

import math

import numpy as np
import pytest

from study.core.topk import brute_force_knn, l2_normalize, label_votes, merge_topk, predict_from_votes


def naive_knn(xq, xb, k):
    """Per-query sort of explicit differences: an oracle independent of the ||a||²+||b||²-2ab trick."""
    D = np.full((len(xq), k), np.inf, dtype=np.float64)
    I = np.full((len(xq), k), -1, dtype=np.int64)
    for q in range(len(xq)):
        d = ((xb - xq[q]) ** 2).sum(1)
        order = sorted(range(len(xb)), key=lambda j: (d[j], j))[:k]
        D[q, : len(order)] = d[order]
        I[q, : len(order)] = order
    return D, I


def sharded_parts(xq, xb, k, rng, n_shards):
    cuts = np.sort(rng.choice(np.arange(1, len(xb)), size=n_shards - 1, replace=False)) if n_shards > 1 else []
    bounds = [0, *cuts, len(xb)]
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        D, I = brute_force_knn(xq, xb[lo:hi], min(k, hi - lo))
        parts.append((D, I + lo))
    return parts


def test_brute_force_matches_naive_oracle():
    rng = np.random.default_rng(0)
    xq, xb = rng.normal(size=(7, 5)), rng.normal(size=(40, 5))
    D, I = brute_force_knn(xq, xb, 6)
    D0, I0 = naive_knn(xq, xb, 6)
    assert np.array_equal(I, I0)
    np.testing.assert_allclose(D, D0, rtol=1e-5, atol=1e-5)
    assert D.dtype == np.float32 and I.dtype == np.int64


@pytest.mark.parametrize("seed", range(8))
def test_sharded_merge_equals_brute_force_on_whole_database(seed):
    rng = np.random.default_rng(seed)
    nq, nb, d, k = 13, int(rng.integers(30, 80)), 8, int(rng.integers(1, 12))
    xq, xb = rng.normal(size=(nq, d)), rng.normal(size=(nb, d))
    parts = sharded_parts(xq, xb, k, rng, int(rng.integers(1, 5)))
    D, I = merge_topk(parts, k)
    D0, I0 = brute_force_knn(xq, xb, k)
    assert np.array_equal(I, I0)
    np.testing.assert_allclose(D, D0, rtol=1e-6, atol=1e-6)
    # Shard order must not matter.
    D2, I2 = merge_topk(parts[::-1], k)
    assert np.array_equal(I2, I)


@pytest.mark.parametrize("seed", range(4))
def test_merge_equals_faiss_result_heap(seed):
    import faiss  # a dependency: a broken install fails here instead of dropping the oracle

    rng = np.random.default_rng(100 + seed)
    nq, nb, d, k = 9, 60, 6, 7
    xq, xb = rng.normal(size=(nq, d)), rng.normal(size=(nb, d))
    parts = sharded_parts(xq, xb, k, rng, 1 + seed)
    heap = faiss.ResultHeap(nq, k)
    for Dp, Ip in parts:
        heap.add_result(Dp, Ip)
    heap.finalize()
    D, I = merge_topk(parts, k)
    assert np.array_equal(I, heap.I)
    np.testing.assert_allclose(D, heap.D, rtol=1e-6)


def test_merge_pads_with_minus_one_and_inf():
    parts = [
        (np.array([[0.5, 2.0]]), np.array([[4, 9]])),
        (np.array([[1.0, 7.0]]), np.array([[2, -1]])),  # a shard that had only one candidate
    ]
    D, I = merge_topk(parts, 5)
    assert I.tolist() == [[4, 2, 9, -1, -1]]
    assert D[0, :3].tolist() == [0.5, 1.0, 2.0]
    assert np.all(np.isinf(D[0, 3:]))


def test_merge_breaks_distance_ties_by_id():
    parts = [(np.array([[1.0, 1.0]]), np.array([[8, 3]])), (np.array([[1.0]]), np.array([[5]]))]
    assert merge_topk(parts, 2)[1].tolist() == [[3, 5]]
    assert merge_topk(parts[::-1], 2)[1].tolist() == [[3, 5]]


def test_merge_needs_a_part():
    with pytest.raises(ValueError):
        merge_topk([], 3)


def test_normalised_l2_ranks_like_cosine():
    rng = np.random.default_rng(5)
    xq, xb = rng.normal(size=(10, 16)) * 3, rng.normal(size=(50, 16)) * rng.uniform(0.1, 5, size=(50, 1))
    _, I = brute_force_knn(l2_normalize(xq), l2_normalize(xb), 50)
    cos = (xq @ xb.T) / np.linalg.norm(xq, axis=1)[:, None] / np.linalg.norm(xb, axis=1)[None, :]
    assert np.array_equal(I, np.argsort(-cos, axis=1, kind="stable"))
    assert np.allclose(np.linalg.norm(l2_normalize(xb), axis=1), 1.0, atol=1e-6)
    # Raw L2 ranks differently here (norms vary), so the check above is not vacuous.
    _, I_raw = brute_force_knn(xq, xb, 50)
    assert not np.array_equal(I_raw, I)


def test_l2_normalize_zero_row_stays_finite():
    out = l2_normalize(np.array([[0.0, 0.0], [3.0, 4.0]]))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[1], [0.6, 0.8])


# ---- votes and predictions -----------------------------------------------------------------------


def test_label_votes_ignore_missing_neighbours():
    counts = label_votes(np.array([[2, 2, 0, -1], [-1, -1, -1, -1], [1, 3, 3, 3]]), num_classes=4)
    assert counts.tolist() == [[1, 0, 2, 0], [0, 0, 0, 0], [0, 1, 0, 3]]


def test_prediction_and_confidence_hand_checked():
    counts = np.array(
        [
            [2, 2, 0],  # tie -> lowest label; confidence -ln 2
            [0, 0, 5],  # one label -> confidence 0
            [1, 1, 2],  # p = (1/4, 1/4, 1/2): entropy 1.5 ln 2
            [0, 3, 3],  # tie between 1 and 2 -> 1
        ]
    )
    pred, top, conf = predict_from_votes(counts, top=3)
    assert pred.tolist() == [0, 2, 2, 1]
    assert top.tolist() == [[0, 1, 2], [2, 0, 1], [2, 0, 1], [1, 2, 0]]
    np.testing.assert_allclose(conf, [-math.log(2), 0.0, -1.5 * math.log(2), -math.log(2)], atol=1e-12)


def test_confidence_uniform_over_c_labels_is_minus_ln_c():
    counts = np.ones((1, 7), dtype=np.int64) * 3
    _, _, conf = predict_from_votes(counts)
    np.testing.assert_allclose(conf, [-math.log(7)])


def test_top5_ordering_by_count_then_label():
    counts = np.array([[0, 4, 1, 4, 2, 0, 7, 1]])
    _, top, _ = predict_from_votes(counts, top=5)
    assert top.tolist() == [[6, 1, 3, 4, 2]]


def test_votes_end_to_end_from_neighbour_ids():
    # Public labels, neighbour ids (with a missing one) -> votes -> prediction.
    public_labels = np.array([0, 1, 1, 2, 2, 2])
    I = np.array([[3, 4, 1, -1], [1, 2, 0, 5]])
    nl = np.where(I >= 0, public_labels[np.maximum(I, 0)], -1)
    pred, _, conf = predict_from_votes(label_votes(nl, 3))
    assert pred.tolist() == [2, 1]
    p = np.array([1, 2]) / 3  # first query: labels {2, 2, 1}
    np.testing.assert_allclose(conf[0], (p * np.log(p)).sum())


def test_query_without_labelled_neighbours_predicts_nothing_and_ranks_last():
    counts = label_votes(np.array([[-1, -1, -1], [0, 0, 1], [2, 2, 2]]), 3)
    pred, top, conf = predict_from_votes(counts, top=2)
    assert pred[0] == -1 and (top[0] == -1).all()
    assert conf[0] < conf[1] < conf[2] and conf[0] < -np.log(3)
