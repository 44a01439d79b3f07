"""The SSL population test's draws (``study.core.metrics``): each side ranked once, then bootstrap
resamples and target/reference swaps over any range of draw numbers.

Memory: each side is ranked once (``Ranked``); draws then need no sort. A bootstrap draw is a row
of resample counts over the ranked records, a swap draw picks, for each record, which of its two
(confidence, correct) entries ranks for the target, out of both entries ranked together. Draws
run in chunks of at most ``CHUNK_ELEMENTS`` (draws × entries) integers, so memory is O(n) plus a
fixed chunk, whatever the number of draws. Each draw has its own generator (``stats.draw_rng``,
keyed by the side's index and the draw's number), so the numbers depend neither on the chunk size
nor on how the draws are split into ranges (pieces computed in different processes stack into
the whole).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from study.core import stats

# (draws × entries) per chunk; a chunk costs about 12 bytes per element (int32 counts and sums).
CHUNK_ELEMENTS = 1 << 22


# How many records the top q of n holds: the product's max(1, ceil(q n)) (a tolerance so that
# q n = 3.0000000001 takes 3), or the published int(q n) (Python's truncation, as the reference
# code computes it), at least 1 so that a small side's top is never empty.
TOP_SIZES = {"ceil": lambda q, n: max(1, math.ceil(q * n - 1e-9)), "floor": lambda q, n: max(1, int(q * n))}


class TopFractions(tuple):
    """The top-q fractions with the rule that sizes them (``TOP_SIZES``); a plain tuple of
    fractions is sized by ``ceil``."""

    rule = "ceil"

    def __new__(cls, fractions: Sequence[float], rule: str = "ceil") -> "TopFractions":
        if rule not in TOP_SIZES:
            raise ValueError(f"unknown top-q size rule {rule!r}; expected one of {sorted(TOP_SIZES)}")
        out = super().__new__(cls, fractions)
        out.rule = rule
        return out

    def __reduce__(self):  # pickled (to Ray tasks) with its rule
        return TopFractions, (tuple(self), self.rule)


def top_m(n: int, qs: Sequence[float]) -> np.ndarray:
    """Records in the top q of n records, for each q (``TopFractions``'s rule; ``ceil`` for a plain sequence)."""
    size = TOP_SIZES[getattr(qs, "rule", "ceil")]
    return np.array([min(n, size(q, n)) for q in qs], dtype=np.int64)


def quadrants(target: np.ndarray, reference: np.ndarray, both: np.ndarray, n: int) -> np.ndarray:
    """(R, 4) quadrant fractions from counts of target-right, reference-right and both-right records."""
    return np.stack([target - both, both, reference - both, n - target - reference + both], axis=1) / n


@dataclass(frozen=True)
class Ranked:
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


def rank(side, qs: Sequence[float]) -> "Ranked":
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
    return Ranked(
        n=n,
        m=top_m(n, qs),
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


def observed(r: Ranked):
    """Target and reference accuracy (Q,) and quadrants (4,) of one side as it is."""
    totals = (np.atleast_1d(c.sum()) for c in (r.target_correct, r.reference_correct, r.both_correct))
    hits = (np.cumsum(c)[r.m - 1] for c in (r.target_correct, r.reference_correct))
    return *(h / r.m for h in hits), quadrants(*totals, r.n)[0]


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


def bootstrap(r: Ranked, side: int, draws: range, seed: int, chunk_elements: int = CHUNK_ELEMENTS):
    """(D, Q) target and reference accuracy and (D, 4) quadrants over the resamples numbered
    ``draws`` (D of them) of one side."""
    tgt, ref, quad = (np.empty((len(draws), len(r.m))), np.empty((len(draws), len(r.m))),
                      np.empty((len(draws), 4)))
    for start, stop in stats.draw_chunks(len(draws), r.n, chunk_elements):
        counts = np.empty((stop - start, r.n), dtype=r.dtype)
        for row, draw in enumerate(draws[start:stop]):
            idx = stats.resample_indices(r.n, stats.draw_rng(seed, stats.BOOTSTRAP, side, draw))
            counts[row] = np.bincount(idx, minlength=r.n)
        both = np.einsum("dn,n->d", counts, r.both_correct)  # both-right records per draw
        t_hits, t_total = _weighted_hits(counts, r.target_order, r.target_correct, r.m)
        r_hits, r_total = _weighted_hits(counts, r.reference_order, r.reference_correct, r.m)
        tgt[start:stop], ref[start:stop] = t_hits / r.m, r_hits / r.m
        quad[start:stop] = quadrants(t_total, r_total, both, r.n)
    return tgt, ref, quad


def swaps(r: Ranked, side: int, draws: range, seed: int, chunk_elements: int = CHUNK_ELEMENTS):
    """(D, Q) target and reference accuracy of one side under the random target/reference swaps
    numbered ``draws`` (D of them).

    With 0/1 weights the running count of a role's entries equals m exactly at the m-th entry, so
    its hits are the correct entries counted there; the reference's are all correct entries there
    minus the target's.
    """
    tgt, ref = np.empty((len(draws), len(r.m))), np.empty((len(draws), len(r.m)))
    positions = np.arange(1, 2 * r.n + 1, dtype=r.dtype)
    for start, stop in stats.draw_chunks(len(draws), 2 * r.n, chunk_elements):
        masks = np.empty((stop - start, r.n), dtype=bool)
        for row, draw in enumerate(draws[start:stop]):
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
