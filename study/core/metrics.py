"""The SSL déjà vu population test (docs/concepts/ssl-dejavu.md) with its uncertainty.

A test has two *sides*. Side "a" holds the records model A trained on: there model A is the
target and model B the reference. Side "b" holds model B's records, with the roles swapped.
Target accuracy is the mean of the two sides' target accuracies, reference accuracy likewise;
at a fraction q each model's accuracy is taken over the top q of the side's records ranked by that
model's own confidence. The null control feeds two halves of a holdout set neither model saw.

The draws (bootstrap resamples, target/reference swaps) are in ``study.core.accuracy_draws``:
keyed per draw, so a side's draws may be computed in pieces (``side_draws`` over a range of draw
numbers, in any process) and the test assembled from the pieces (``accuracy_summary``) with the same
numbers as in one piece (``dejavu_test``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from study.core import stats
from study.core.accuracy_draws import CHUNK_ELEMENTS, bootstrap, observed, quadrants, rank, swaps, top_m

QUADRANTS = ("memorized", "correlated", "forgotten", "misclassified")


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
    m = top_m(n, qs)
    return ranked_cumsum[:, m - 1] / m[None, :]


def quadrant_fractions(sides_arrays) -> np.ndarray:
    """(R, 4) fractions memorized, correlated, forgotten, misclassified; mean over sides.

    Each side is (target_correct, _, reference_correct, _) with (R, n) rows.
    """
    per_side = []
    for tc, _, rc, _ in sides_arrays:
        tc, rc = np.atleast_2d(tc).astype(bool), np.atleast_2d(rc).astype(bool)
        per_side.append(quadrants(tc.sum(1), rc.sum(1), (tc & rc).sum(1), tc.shape[1]))
    return np.mean(per_side, axis=0)


@dataclass(frozen=True)
class AccuracyDraws:
    """What the test needs of one non-empty side: its size, observed target and reference
    accuracy (Q,) and quadrants (4,), and its bootstrap (B, Q)/(B, 4) and swap (P, Q) draws.
    Aggregates only: a side's draws may be computed in pieces anywhere and stacked (``stack``)."""

    n: int
    target: np.ndarray
    reference: np.ndarray
    quadrants: np.ndarray
    boot_target: np.ndarray
    boot_reference: np.ndarray
    boot_quadrants: np.ndarray
    null_target: np.ndarray
    null_reference: np.ndarray

    @staticmethod
    def stack(pieces: Sequence["AccuracyDraws"]) -> "AccuracyDraws":
        """One side's draws from pieces over consecutive draw ranges (in draw order)."""
        first = pieces[0]
        joined = {f: np.concatenate([getattr(p, f) for p in pieces]) for f in
                  ("boot_target", "boot_reference", "boot_quadrants", "null_target", "null_reference")}
        return AccuracyDraws(first.n, first.target, first.reference, first.quadrants, **joined)


def side_draws(side: Side, index: int, qs: Sequence[float], seed: int, boot: range, swap: range,
               chunk_elements: int = CHUNK_ELEMENTS) -> AccuracyDraws:
    """The test's aggregates of one non-empty side (its ``index`` among the test's sides keys its
    draws) over the bootstrap draws numbered ``boot`` and the swap draws numbered ``swap``."""
    r = rank(side, qs)
    tgt, ref, quad = observed(r)
    b_tgt, b_ref, b_quad = bootstrap(r, index, boot, seed, chunk_elements)
    n_tgt, n_ref = swaps(r, index, swap, seed, chunk_elements)
    return AccuracyDraws(r.n, tgt, ref, quad, b_tgt, b_ref, b_quad, n_tgt, n_ref)


def accuracy_summary(present: Sequence[AccuracyDraws], qs: Sequence[float], permutations: int, level: float) -> dict:
    """Target/reference accuracy and gap at each q and the quadrants, with intervals and p-values:
    each statistic averaged over the non-empty sides ``present`` (each with all its draws)."""
    def mean(field):
        return np.mean([getattr(s, field) for s in present], axis=0)

    tgt, ref, quad = mean("target"), mean("reference"), mean("quadrants")
    b_tgt, b_ref = mean("boot_target"), mean("boot_reference")
    gap = tgt - ref
    p_values = stats.permutation_p_value(gap, mean("null_target") - mean("null_reference"))

    def est(value, samples):
        lo, hi = stats.percentile_interval(samples, level)
        return [{"value": float(v), "ci": [float(a), float(b)]} for v, a, b in zip(value, lo, hi)]

    t_est, r_est, g_est = est(tgt, b_tgt), est(ref, b_ref), est(gap, b_tgt - b_ref)
    for g, p in zip(g_est, p_values):
        g["p_value"], g["permutations"] = float(p), int(permutations)  # the floor is 1 / (1 + permutations)
    return {
        "n": [int(s.n) for s in present],
        "by_q": [
            {"q": float(q), "target": t, "reference": r, "gap": g} for q, t, r, g in zip(qs, t_est, r_est, g_est)
        ],
        "quadrants": dict(zip(QUADRANTS, est(quad, mean("boot_quadrants")))),
    }


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
    "permutations"; "n" lists the non-empty sides' sizes.
    """
    present = [side_draws(s, k, qs, seed, range(bootstrap), range(permutations), chunk_elements)
               for k, s in enumerate(sides) if len(s) > 0]
    if not present:
        raise ValueError("dejavu_test needs at least one non-empty side")
    return accuracy_summary(present, qs, permutations, level)


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
