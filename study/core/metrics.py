"""The SSL déjà vu population test (docs/concepts/ssl-dejavu.md) with its uncertainty.

A test has two *sides*. Side "a" holds the records model A trained on: there model A is the
target and model B the reference. Side "b" holds model B's records, with the roles swapped.
Target accuracy is the mean of the two sides' target accuracies, reference accuracy likewise;
at a fraction q each model's accuracy is taken over the top q of the side's records ranked by that
model's own confidence. The null control feeds two halves of a holdout set neither model saw.

Memory: each side is ranked once (``_Ranked``); draws then need no sort. A bootstrap draw is a row
of resample counts over the ranked records, a swap draw picks, for each record, which of its two
(confidence, correct) entries ranks for the target, out of both entries ranked together. Draws
run in chunks of at most ``CHUNK_ELEMENTS`` (draws × entries) integers, so memory is O(n) plus a
fixed chunk, whatever the number of draws. Each draw has its own generator (``stats.draw_rng``),
so the numbers do not depend on the chunk size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from study.core import stats

QUADRANTS = ("memorized", "correlated", "forgotten", "misclassified")
# (draws × entries) per chunk; a chunk costs about 12 bytes per element (int32 counts and sums).
CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Side:
    """Per-record outcomes on one side: (n,) arrays aligned by record."""

    ids: np.ndarray
    target_correct: np.ndarray
    target_confidence: np.ndarray
    reference_correct: np.ndarray
    reference_confidence: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _top_m(n: int, qs: Sequence[float]) -> np.ndarray:
    """Records in the top q: max(1, ceil(q n)), with a tolerance so q n = 3.0000000001 takes 3."""
    return np.array([min(n, max(1, math.ceil(q * n - 1e-9))) for q in qs], dtype=np.int64)


def topq_accuracy(correct: np.ndarray, confidence: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Accuracy over the top ceil(q*n) records by confidence, for each q.

    Shapes: correct, confidence (R, n) -> (R, len(qs)). Ties in confidence keep record order.
    """
    correct = np.atleast_2d(correct).astype(np.float64)
    confidence = np.atleast_2d(confidence)
    n = correct.shape[1]
    if n == 0:
        return np.full((correct.shape[0], len(qs)), np.nan)
    order = np.argsort(-confidence, axis=1, kind="stable")
    ranked_cumsum = np.cumsum(np.take_along_axis(correct, order, axis=1), axis=1)
    m = _top_m(n, qs)
    return ranked_cumsum[:, m - 1] / m[None, :]


def _quadrants(target: np.ndarray, reference: np.ndarray, both: np.ndarray, n: int) -> np.ndarray:
    """(R, 4) quadrant fractions from counts of target-right, reference-right and both-right records."""
    return np.stack([target - both, both, reference - both, n - target - reference + both], axis=1) / n


def quadrant_fractions(sides_arrays) -> np.ndarray:
    """(R, 4) fractions memorized, correlated, forgotten, misclassified; mean over sides.

    Each side is (target_correct, _, reference_correct, _) with (R, n) rows.
    """
    per_side = []
    for tc, _, rc, _ in sides_arrays:
        tc, rc = np.atleast_2d(tc).astype(bool), np.atleast_2d(rc).astype(bool)
        per_side.append(_quadrants(tc.sum(1), rc.sum(1), (tc & rc).sum(1), tc.shape[1]))
    return np.mean(per_side, axis=0)


@dataclass(frozen=True)
class _Ranked:
    """One side ranked once. Ties in confidence keep record order everywhere.

    target_order, reference_order (n,): records by that model's confidence, descending.
    merged_* (2n,): every (record, role) entry, both roles ranked together by confidence.
    """

    n: int
    m: np.ndarray  # (Q,) records in the top q
    target_order: np.ndarray
    reference_order: np.ndarray
    target_correct: np.ndarray  # (n,) bool, in target order
    reference_correct: np.ndarray  # (n,) bool, in reference order
    both_correct: np.ndarray  # (n,) int32, by record
    merged_record: np.ndarray  # (2n,) the entry's record
    merged_is_reference: np.ndarray  # (2n,) bool, the entry is the record's reference outcome
    merged_correct: np.ndarray  # (2n,) bool
    merged_cum_correct: np.ndarray  # (2n,) correct entries up to here

    @property
    def dtype(self):
        """Integer type of indices, counts and running sums: int32 unless 2n needs more."""
        return self.merged_record.dtype


def _rank(side: Side, qs: Sequence[float]) -> _Ranked:
    n = len(side)
    tc, rc = side.target_correct.astype(bool), side.reference_correct.astype(bool)
    dtype = np.int32 if 2 * n < 2**31 else np.int64
    t_order = np.argsort(-side.target_confidence, kind="stable").astype(dtype)
    r_order = np.argsort(-side.reference_confidence, kind="stable").astype(dtype)
    # Entry 2i is record i's target outcome, 2i + 1 its reference one; a stable sort on the
    # interleaved confidences keeps record order among ties, as topq_accuracy on the swapped
    # arrays would (a record's two entries never rank for the same role).
    interleaved = np.stack([side.target_confidence, side.reference_confidence], axis=1).ravel()
    merged = np.argsort(-interleaved, kind="stable")
    merged_correct = np.stack([tc, rc], axis=1).ravel()[merged]
    return _Ranked(
        n=n,
        m=_top_m(n, qs),
        target_order=t_order,
        reference_order=r_order,
        target_correct=tc[t_order],
        reference_correct=rc[r_order],
        both_correct=(tc & rc).astype(dtype),
        merged_record=(merged // 2).astype(dtype),
        merged_is_reference=(merged % 2).astype(bool),
        merged_correct=merged_correct,
        merged_cum_correct=np.cumsum(merged_correct, dtype=dtype),
    )


def _observed(r: _Ranked):
    """Target and reference accuracy (Q,) and quadrants (4,) of one side as it is."""
    totals = (np.atleast_1d(c.sum()) for c in (r.target_correct, r.reference_correct, r.both_correct))
    hits = (np.cumsum(c)[r.m - 1] for c in (r.target_correct, r.reference_correct))
    return *(h / r.m for h in hits), _quadrants(*totals, r.n)[0]


def _reach(cum: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(R, Q) index of the first entry where each nondecreasing row of cum (R, L) reaches each m."""
    m = m.astype(cum.dtype)  # an int64 m would make searchsorted cast the whole row
    return np.stack([np.searchsorted(row, m) for row in cum])


def _weighted_hits(counts: np.ndarray, order: np.ndarray, correct: np.ndarray, m: np.ndarray):
    """Correct records among the top m of resamples: counts (R, n) by record -> (R, Q), and (R,) total.

    Copies of one record are adjacent in the ranking, so the top m is a run of whole records plus
    part of the record where the running count first reaches m.
    """
    w = np.take(counts, order, axis=1)  # (R, n) counts in rank order; C order, unlike counts[:, order]
    cum = np.cumsum(w, axis=1, dtype=w.dtype)
    j = _reach(cum, m)
    beyond = np.take_along_axis(cum, j, axis=1) - m  # copies of record j past the top m
    del cum
    w *= correct
    np.cumsum(w, axis=1, dtype=w.dtype, out=w)  # without dtype, numpy would sum int32 in int64: 10x slower
    return np.take_along_axis(w, j, axis=1) - correct[j] * beyond, w[:, -1]


def _bootstrap(r: _Ranked, side: int, draws: int, seed: int, chunk_elements: int):
    """(draws, Q) target and reference accuracy and (draws, 4) quadrants over resamples of one side."""
    tgt, ref, quad = np.empty((draws, len(r.m))), np.empty((draws, len(r.m))), np.empty((draws, 4))
    for start, stop in stats.draw_chunks(draws, r.n, chunk_elements):
        counts = np.empty((stop - start, r.n), dtype=r.dtype)
        for row, draw in enumerate(range(start, stop)):
            idx = stats.resample_indices(r.n, stats.draw_rng(seed, stats.BOOTSTRAP, side, draw))
            counts[row] = np.bincount(idx, minlength=r.n)
        both = np.einsum("dn,n->d", counts, r.both_correct)  # both-right records per draw
        t_hits, t_total = _weighted_hits(counts, r.target_order, r.target_correct, r.m)
        r_hits, r_total = _weighted_hits(counts, r.reference_order, r.reference_correct, r.m)
        tgt[start:stop], ref[start:stop] = t_hits / r.m, r_hits / r.m
        quad[start:stop] = _quadrants(t_total, r_total, both, r.n)
    return tgt, ref, quad


def _swaps(r: _Ranked, side: int, draws: int, seed: int, chunk_elements: int):
    """(draws, Q) target and reference accuracy of one side under random target/reference swaps.

    With 0/1 weights the running count of a role's entries equals m exactly at the m-th entry, so
    its hits are the correct entries counted there; the reference's are all correct entries there
    minus the target's.
    """
    tgt, ref = np.empty((draws, len(r.m))), np.empty((draws, len(r.m)))
    positions = np.arange(1, 2 * r.n + 1, dtype=r.dtype)
    for start, stop in stats.draw_chunks(draws, 2 * r.n, chunk_elements):
        masks = np.empty((stop - start, r.n), dtype=bool)
        for row, draw in enumerate(range(start, stop)):
            masks[row] = stats.swap_mask(r.n, stats.draw_rng(seed, stats.SWAP, side, draw))
        for_target = np.take(masks, r.merged_record, axis=1)  # (R, 2n) the entry ranks for the target
        for_target ^= r.merged_is_reference
        del masks
        cum = for_target.astype(r.dtype)  # accumulating int32 in place is ~10x faster than from bool
        np.cumsum(cum, axis=1, dtype=r.dtype, out=cum)
        j_t = _reach(cum, r.m)
        np.subtract(positions, cum, out=cum)  # the reference's entries so far
        j_r = _reach(cum, r.m)
        np.logical_and(for_target, r.merged_correct, out=cum)
        np.cumsum(cum, axis=1, dtype=r.dtype, out=cum)  # correct target entries so far
        t_hits = np.take_along_axis(cum, j_t, axis=1)
        r_hits = r.merged_cum_correct[j_r] - np.take_along_axis(cum, j_r, axis=1)
        tgt[start:stop], ref[start:stop] = t_hits / r.m, r_hits / r.m
    return tgt, ref


def _over_sides(per_side: list[tuple]) -> list[np.ndarray]:
    """Each result averaged over sides: [(a, b, ...) per side] -> [mean a, mean b, ...]."""
    return [np.mean(results, axis=0) for results in zip(*per_side)]


def dejavu_test(
    sides: Sequence[Side],
    qs: Sequence[float],
    bootstrap: int,
    permutations: int,
    level: float,
    seed: int,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> dict:
    """Target/reference accuracy and gap at each q, quadrants, with intervals and p-values.

    A bootstrap resample ranks its copies by confidence, ties by original record order (copies of
    a record adjacent). Draws are keyed by the side's index in ``sides``, so results never depend
    on ``chunk_elements``, which bounds the (draws × entries) integers held at once.
    Returns plain data: every estimate as {"value", "ci": [lo, hi]}, gaps also with "p_value" and
    "permutations".
    """
    present = [(k, _rank(s, qs)) for k, s in enumerate(sides) if len(s) > 0]
    if not present:
        raise ValueError("dejavu_test needs at least one non-empty side")
    tgt, ref, quad = _over_sides([_observed(r) for _, r in present])
    b_tgt, b_ref, b_quad = _over_sides([_bootstrap(r, k, bootstrap, seed, chunk_elements) for k, r in present])
    n_tgt, n_ref = _over_sides([_swaps(r, k, permutations, seed, chunk_elements) for k, r in present])
    gap = tgt - ref
    p_values = stats.permutation_p_value(gap, n_tgt - n_ref)

    def est(value, samples):
        lo, hi = stats.percentile_interval(samples, level)
        return [{"value": float(v), "ci": [float(a), float(b)]} for v, a, b in zip(value, lo, hi)]

    t_est, r_est, g_est = est(tgt, b_tgt), est(ref, b_ref), est(gap, b_tgt - b_ref)
    for g, p in zip(g_est, p_values):
        g["p_value"], g["permutations"] = float(p), int(permutations)  # the floor is 1 / (1 + permutations)
    return {
        "n": [r.n for _, r in present],
        "by_q": [
            {"q": float(q), "target": t, "reference": r, "gap": g} for q, t, r, g in zip(qs, t_est, r_est, g_est)
        ],
        "quadrants": dict(zip(QUADRANTS, est(quad, b_quad))),
    }


def accuracy_curve(sides: Sequence[Side], points: int) -> dict:
    """Target and reference accuracy over q in (0, 1] (no intervals: the plot's line)."""
    qs = np.linspace(1.0 / points, 1.0, points)
    present = [s for s in sides if len(s)]
    tgt = np.mean([topq_accuracy(s.target_correct, s.target_confidence, qs)[0] for s in present], axis=0)
    ref = np.mean([topq_accuracy(s.reference_correct, s.reference_confidence, qs)[0] for s in present], axis=0)
    return {"q": qs.tolist(), "target": tgt.tolist(), "reference": ref.tolist()}


def most_memorized(sides: Sequence[Side], limit: int) -> list[dict]:
    """Memorized records (target right, reference wrong), by confidence(target) - confidence(reference).

    Ties by id, then side, then record order.
    """
    index = [np.flatnonzero(s.target_correct.astype(bool) & ~s.reference_correct.astype(bool)) for s in sides]
    if not sum(len(i) for i in index):
        return []
    side = np.concatenate([np.full(len(i), k) for k, i in enumerate(index)])
    score = np.concatenate([(s.target_confidence - s.reference_confidence)[i] for s, i in zip(sides, index)])
    ids_at = stats.pooled_ids([np.asarray(s.ids)[i] for s, i in zip(sides, index)])
    top = stats.top_by_score(score, ids_at, limit)
    return [{"id": str(i), "side": int(side[p]), "score": float(score[p])} for p, i in zip(top, ids_at(top))]
